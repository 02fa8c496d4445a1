use reqwest::Method;
use serde_json::json;

use crate::helpers::spawn_app;

const HEADER: &str = "id,name,type,hardware_model,hardware_sn,software_version,software_last_update,nic_type,nic_mac,nic_ipv4,status";

#[tokio::test]
async fn export_uses_the_seed_columns() {
    let app = spawn_app().await;
    let d = app.device("gw", "SN-1").await;
    let mut two_nics = crate::helpers::device_json("cam", "SN-2");
    two_nics["nic"] = json!([{"type": "eth", "mac": "aa:bb:cc:dd:ee:01", "ipv4": "10.0.0.1"},
                             {"type": "wifi", "mac": "aa:bb:cc:dd:ee:02", "ipv4": "10.0.0.2"}]);
    app.post("/api/v1/devices", two_nics).await;
    let (status, text) = app
        .raw(
            Method::GET,
            "/api/v1/devices/export",
            Some(&app.admin),
            "text/plain",
            Vec::new(),
        )
        .await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], HEADER);
    assert_eq!(
        lines[1],
        format!("{},gw,gateway,Raspberry Pi 4,SN-1,1.2.0,2026-01-01 10:00:00,eth,12:34:56:78:9a:bc,192.168.1.2,active", d["id"].as_str().expect("id"))
    );
    assert!(
        lines[2]
            .ends_with(",eth;wifi,aa:bb:cc:dd:ee:01;aa:bb:cc:dd:ee:02,10.0.0.1;10.0.0.2,active"),
        "{}",
        lines[2]
    );
    let (_, text) = app
        .raw(
            Method::GET,
            "/api/v1/devices/export?name=cam",
            Some(&app.admin),
            "text/plain",
            Vec::new(),
        )
        .await;
    assert_eq!(text.lines().count(), 2, "filters apply");
}

#[tokio::test]
async fn import_reports_each_line_and_round_trips() {
    let app = spawn_app().await;
    let g = app.group("imported").await;
    let csv = format!(
        "{HEADER}\n\
         4322159209,pi-1,gateway,Raspberry Pi 4,itOYJ,0.1,2023-08-06 20:00:00,wifi,12:34:56:78:9a:bc,192.168.1.2,online\n\
         ,pi-2,gateway,Raspberry Pi 4,abc,0.1,,wifi,12:34:56:78:9a:bd,192.168.1.3,online\n\
         ,bad-mac,gateway,Raspberry Pi 4,x1,0.1,,wifi,nope,192.168.1.4,online\n\
         ,dup,gateway,Raspberry Pi 4,itOYJ,0.1,,,,,online\n\
         ,short,row\n\
         ,,gateway,Raspberry Pi 4,x2,0.1,,,,,online\n"
    );
    let (status, text) = app
        .raw(
            Method::POST,
            &format!("/api/v1/devices/import?group={g}"),
            Some(&app.admin),
            "text/csv",
            csv.into_bytes(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).expect("json");
    let r = &body["data"];
    assert_eq!(r["created"], 2, "{r}");
    assert_eq!(r["rejected"], 4, "{r}");
    assert_eq!(
        r["lines"][0],
        json!({"line": 2, "outcome": "created", "id": "4322159209"})
    );
    assert_eq!(r["lines"][1]["outcome"], "created");
    assert_eq!(r["lines"][2]["field"], "nic[0].mac");
    assert_eq!(r["lines"][3]["field"], "hardware.sn");
    assert_eq!(r["lines"][4]["field"], "line");
    assert_eq!(r["lines"][5]["field"], "name");
    assert_eq!(r["lines"][5]["line"], 7);
    assert_eq!(
        app.count_devices().await,
        2,
        "rejected lines left nothing behind"
    );
    let (_, body) = app.get(&format!("/api/v1/groups/{g}")).await;
    assert_eq!(body["data"]["devices"], 2);
    let (_, body) = app.get("/api/v1/devices/4322159209").await;
    assert_eq!(body["data"]["hardware"]["sn"], "itOYJ");

    // Export then import into a fresh center gives the same rows.
    let (_, exported) = app
        .raw(
            Method::GET,
            "/api/v1/devices/export",
            Some(&app.admin),
            "text/plain",
            Vec::new(),
        )
        .await;
    let other = spawn_app().await;
    let (status, text) = other
        .raw(
            Method::POST,
            "/api/v1/devices/import",
            Some(&other.admin),
            "text/csv",
            exported.clone().into_bytes(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let (_, again) = other
        .raw(
            Method::GET,
            "/api/v1/devices/export",
            Some(&other.admin),
            "text/plain",
            Vec::new(),
        )
        .await;
    assert_eq!(again, exported);
}
