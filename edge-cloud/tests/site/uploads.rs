//! `pull_logs` at the edge: the device's upload (its own credentials, size cap, only
//! for its own open pull_logs command) and the operator's download.

use serde_json::{json, Value};
use shared_proto::southbound::Pdu;

use crate::helpers::*;

struct Pull {
    device: String,
    secret: String,
    command: String,
    upload: Value,
}

/// A device online with a `pull_logs` command delivered to it.
async fn pulled(edge: &TestEdge, sn: &str) -> (Pull, DeviceClient) {
    let d = edge.api.device("gw", sn).await;
    let (device, secret) = (
        d["id"].as_str().expect("id").to_string(),
        d["secret"].as_str().expect("secret").to_string(),
    );
    let (mut client, _) = DeviceClient::login(edge, &device, &secret).await;
    let (status, body) = edge
        .api
        .post(
            &format!("/api/v1/devices/{device}/commands"),
            json!({"name": "pull_logs", "timeout_s": 30}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let command = body["data"]["id"].as_str().expect("id").to_string();
    let upload = loop {
        match client.recv().await.expect("command delivered").pdu {
            Pdu::Command(c) => break c.args["upload"].clone(),
            _ => continue,
        }
    };
    (
        Pull {
            device,
            secret,
            command,
            upload,
        },
        client,
    )
}

async fn upload(
    edge: &TestEdge,
    path: &str,
    user: &str,
    secret: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let res = edge
        .api
        .client
        .post(format!("{}{path}", edge.api.address))
        .basic_auth(user, Some(secret))
        .body(body)
        .send()
        .await
        .expect("sent");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_device_uploads_its_log_and_an_operator_downloads_it() {
    let edge = spawn_edge_with(|s| s.log_upload_max_bytes = 4096).await;
    let (pull, _client) = pulled(&edge, "SN-LOG-1").await;
    let path = pull.upload["path"].as_str().expect("path").to_string();
    assert_eq!(path, format!("/api/v1/uploads/logs/{}", pull.command));
    assert_eq!(pull.upload["scheme"], "https");
    assert_eq!(
        pull.upload["port"],
        json!(edge
            .api
            .address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok()))
    );
    assert_eq!(pull.upload["max_bytes"], 4096);

    let (status, body) = edge
        .api
        .get(&format!("/api/v1/commands/{}/logs", pull.command))
        .await;
    assert_error(status, &body, 404, "NOT_FOUND", None);

    let log = b"line one\nline two\n".to_vec();
    let (status, body) = upload(&edge, &path, &pull.device, &pull.secret, log.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["bytes"], 18);

    let res = edge
        .api
        .client
        .get(format!(
            "{}/api/v1/commands/{}/logs",
            edge.api.address, pull.command
        ))
        .bearer_auth(&edge.api.admin)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 200);
    assert!(res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain")));
    assert_eq!(res.bytes().await.expect("body").to_vec(), log);

    let (status, body) = edge
        .api
        .get(&format!("/api/v1/devices/{}/logs", pull.device))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["items"][0]["command_id"], json!(pull.command));
    assert_eq!(body["data"]["items"][0]["bytes"], 18);
}

#[tokio::test]
async fn uploads_are_refused_without_the_devices_own_credentials_or_past_the_cap() {
    let edge = spawn_edge_with(|s| s.log_upload_max_bytes = 1024).await;
    let (pull, _client) = pulled(&edge, "SN-LOG-2").await;
    let (other, _other_client) = pulled(&edge, "SN-LOG-3").await;
    let path = format!("/api/v1/uploads/logs/{}", pull.command);

    let (status, body) = upload(&edge, &path, &pull.device, "wrong-secret", b"x".to_vec()).await;
    assert_error(status, &body, 401, "UNAUTHENTICATED", None);
    let res = edge
        .api
        .client
        .post(format!("{}{path}", edge.api.address))
        .body("x")
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 401, "no credentials at all");

    // Another device's credentials do not reach this device's command.
    let (status, body) = upload(&edge, &path, &other.device, &other.secret, b"x".to_vec()).await;
    assert_error(status, &body, 404, "NOT_FOUND", None);

    let (status, body) = upload(&edge, &path, &pull.device, &pull.secret, vec![b'a'; 1025]).await;
    assert_error(status, &body, 413, "PAYLOAD_TOO_LARGE", Some("body"));

    let bad = "/api/v1/uploads/logs/not-a-number";
    let (status, body) = upload(&edge, bad, &pull.device, &pull.secret, b"x".to_vec()).await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT", Some("command_id"));

    // None of that stored anything.
    let (status, body) = edge
        .api
        .get(&format!("/api/v1/commands/{}/logs", pull.command))
        .await;
    assert_error(status, &body, 404, "NOT_FOUND", None);

    // A command that is not a pull_logs takes no upload.
    let (_, body) = edge
        .api
        .post(
            &format!("/api/v1/devices/{}/commands", pull.device),
            json!({"name": "get_status", "timeout_s": 30}),
        )
        .await;
    let get_status = body["data"]["id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/uploads/logs/{get_status}");
    let (status, body) = upload(&edge, &path, &pull.device, &pull.secret, b"x".to_vec()).await;
    assert_error(status, &body, 404, "NOT_FOUND", None);

    // Once cancelled, the command takes no upload either.
    let (status, _) = edge
        .api
        .post(
            &format!("/api/v1/commands/{}/cancel", pull.command),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let path = format!("/api/v1/uploads/logs/{}", pull.command);
    let (status, body) = upload(&edge, &path, &pull.device, &pull.secret, b"x".to_vec()).await;
    assert_error(status, &body, 409, "FAILED_PRECONDITION", None);
}
