//! The federation's trust boundary (docs/design.md §5 "Trust", `docs/security.md`): a site's
//! real credentials in hostile hands change nothing outside that site.

use std::sync::Arc;
use std::time::Duration;

use federation::protocol::{Changes, Hello, LinkPdu, Live, LiveStatus, Roam, Welcome, VERSION};
use federation::session::{recv, send, ws_config};
use fleet_store::clock::{physical_ms, stamp_at, Hlc};
use fleet_store::ids::Snowflake;
use fleet_store::sync::Change;
use fleet_store::{commands, memberships};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{json, Map, Value};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::WebSocketStream;

use crate::federation::{
    device_row, homed_device, proxy_to, spawn_center, spawn_edge, until, Center,
};
use crate::helpers::*;

pub(crate) type Ws = WebSocketStream<TlsStream<tokio::net::TcpStream>>;

/// A client that logs in on the center's link endpoint with an edge's real
/// credentials and then sends whatever it likes.
struct Hostile {
    ws: Ws,
    clock: Hlc,
    ids: Snowflake,
    sent: i64,
}

pub(crate) async fn dial(center: &Center) -> Ws {
    let ca = center.api.data_dir.join("tls/ca.crt");
    let config = fleet_node::tls::client_config(&ca).expect("client TLS");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", center.link_port))
        .await
        .expect("tcp");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("tls");
    let url = format!("wss://localhost:{}/link", center.link_port);
    tokio_tungstenite::client_async_with_config(url, tls, Some(ws_config()))
        .await
        .expect("websocket")
        .0
}

impl Hostile {
    async fn login(
        center: &Center,
        edge_id: &str,
        secret: &str,
        worker: i64,
        clock_ahead_ms: i64,
    ) -> (Self, Welcome) {
        let mut ws = dial(center).await;
        let hello = LinkPdu::Hello(Hello {
            version: VERSION,
            edge_id: edge_id.into(),
            secret: secret.into(),
            node_id: worker,
            applied: 0,
            wall_ms: fleet_store::now_ms() + clock_ahead_ms,
        });
        send(&mut ws, &hello).await.expect("hello");
        let welcome = match recv(&mut ws).await {
            Some(Ok(LinkPdu::Welcome(w))) => w,
            other => panic!("no welcome: {other:?}"),
        };
        let me = Self {
            ws,
            clock: Hlc::new(worker),
            ids: Snowflake::new(worker).expect("worker"),
            sent: 0,
        };
        (me, welcome)
    }

    /// Sends frames until the center acknowledges `upto`, answering its pings.
    async fn until_acked(&mut self, upto: i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let frame = tokio::time::timeout_at(deadline, recv(&mut self.ws))
                .await
                .expect("an ack within 10 s");
            match frame {
                Some(Ok(LinkPdu::Ack(ack))) if ack.upto >= upto => return,
                Some(Ok(LinkPdu::Ping(beat))) => send(&mut self.ws, &LinkPdu::Pong(beat))
                    .await
                    .expect("pong"),
                Some(Ok(_)) => {}
                other => panic!("the link ended: {other:?}"),
            }
        }
    }

    async fn send_changes(&mut self, changes: Vec<Change>) {
        self.sent += 1;
        let upto = self.sent;
        let pdu = LinkPdu::Changes(Changes { changes, upto });
        send(&mut self.ws, &pdu).await.expect("send");
        self.until_acked(upto).await;
    }

    fn change(&self, table: &str, id: i64, fields: Value) -> Change {
        self.stamped(table, id, self.clock.tick(), fields)
    }

    fn stamped(&self, table: &str, id: i64, hlc: i64, fields: Value) -> Change {
        Change {
            seq: 0,
            table: table.into(),
            id,
            hlc,
            fields: fields.as_object().cloned().unwrap_or_else(Map::new),
        }
    }
}

pub(crate) fn num(id: &str) -> i64 {
    id.parse().expect("numeric id")
}

/// A whole device row as a site would create it.
fn device_fields(name: &str, sn: &str, edge: i64) -> Value {
    json!({
        "name": name, "device_type": "gateway", "hw_model": "HX", "hw_sn": sn,
        "sw_version": "1.0.0", "sw_last_update": "", "nics": "[]", "status": "active",
        "description": "", "edge_id": edge, "secret_hash": "x", "live_key": null,
        "created_at": 1, "updated_at": 1, "deleted": false
    })
}

fn command_fields(device: i64, name: &str) -> Value {
    json!({
        "device_id": device, "batch_id": null, "name": name, "args": "{}",
        "state": "queued", "progress": 0, "timeout_s": 60,
        "deadline_at": fleet_store::now_ms() + 60_000, "result": null,
        "created_by": "site", "created_at": 1, "updated_at": 1, "deleted": false
    })
}

/// The newest `link.change_refused` event at the center.
async fn last_refusal(center: &Center) -> Value {
    let (status, page) = center
        .api
        .get("/api/v1/events?action=link.change_refused&per_page=1")
        .await;
    assert_eq!(status, 200, "{page}");
    page["data"]["items"][0].clone()
}

async fn refused_count(center: &Center, edge: &str) -> i64 {
    let (_, shown) = center.api.get(&format!("/api/v1/edges/{edge}")).await;
    shown["data"]["refused_changes"]
        .as_i64()
        .expect("refused_changes")
}

async fn commands_of(api: &TestApp, device: i64) -> u64 {
    commands::Entity::find()
        .filter(commands::Column::DeviceId.eq(device))
        .count(&api.db().await)
        .await
        .expect("count")
}

#[tokio::test]
async fn a_hostile_edge_with_real_credentials_changes_nothing_outside_its_site() {
    let center = spawn_center().await;
    let proxy_b = proxy_to(&center).await;
    let (b, b_id) = spawn_edge(&center, &proxy_b, "honest-b").await;
    let (status, reg) = center
        .api
        .post("/api/v1/edges", json!({"name": "hostile-a", "site": "a"}))
        .await;
    assert_eq!(status, 201, "{reg}");
    let a_id = reg["data"]["id"].as_str().expect("id").to_string();
    let a_worker = reg["data"]["worker_id"].as_i64().expect("worker");
    let a_secret = reg["data"]["secret"].as_str().expect("secret").to_string();
    let b_worker = center.api.get(&format!("/api/v1/edges/{b_id}")).await.1["data"]["worker_id"]
        .as_i64()
        .expect("worker");

    let (b_dev, _) = homed_device(&center, &b, &b_id, "SN-TB1").await;
    let b_dev = num(&b_dev);
    let mut body = device_json("gw-a", "SN-TA1");
    body["edge_id"] = json!(a_id);
    let (_, made) = center.api.post("/api/v1/devices", body).await;
    let a_dev = num(made["data"]["id"].as_str().expect("id"));
    let group = num(&center.api.group("fleet-wide").await);
    let (status, pull) = center
        .api
        .post(
            &format!("/api/v1/devices/{b_dev}/commands"),
            json!({"name": "pull_logs", "timeout_s": 600}),
        )
        .await;
    assert!(status == 201 || status == 202, "{pull}");
    let pull = num(pull["data"]["id"].as_str().expect("id"));
    until(10, "the command reaches edge B", async || {
        commands_of(&b.site.api, b_dev).await == 1
    })
    .await;
    // A rollout over a device of each site, not started: its rows to forge against.
    let artifact = crate::artifacts::stored(&center, "1.0.0", vec![1, 2, 3]).await;
    let (status, made) = center
        .api
        .post(
            "/api/v1/rollouts",
            json!({"name": "later", "artifact_id": artifact["id"], "start_at": i64::MAX / 2,
                   "target": {"device_ids": [a_dev.to_string(), b_dev.to_string()]}}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let rollout = num(made["data"]["id"].as_str().expect("id"));
    let update_of = |device: i64| {
        let api = &center.api;
        async move {
            fleet_store::rollout_devices::Entity::find()
                .filter(fleet_store::rollout_devices::Column::DeviceId.eq(device))
                .one(&api.db().await)
                .await
                .expect("query")
                .expect("an update row")
                .id
        }
    };
    let (a_update, b_update) = (update_of(a_dev).await, update_of(b_dev).await);
    let b_before_center = device_row(&center.api, b_dev).await;
    let b_before_edge = device_row(&b.site.api, b_dev).await;
    let group_before = center.api.get(&format!("/api/v1/groups/{group}")).await.1;

    // Its clock claims to run 45 s ahead: above half the bound, so the edge list shows it.
    let (mut hostile, _) = Hostile::login(&center, &a_id, &a_secret, a_worker, 45_000).await;
    let (_, shown) = center.api.get(&format!("/api/v1/edges/{a_id}")).await;
    let skew = shown["data"]["clock_skew_ms"]
        .as_i64()
        .expect("clock_skew_ms");
    assert!((40_000..=50_000).contains(&skew), "{shown}");
    let a = num(&a_id);
    let far = stamp_at(fleet_store::now_ms() + 10 * 365 * 86_400_000, a_worker);
    let forged: Vec<(&str, Change)> = vec![
        (
            "not_home",
            hostile.change("devices", b_dev, json!({"name": "pwned"})),
        ),
        (
            "not_home",
            hostile.change("devices", b_dev, json!({"edge_id": a})),
        ),
        (
            "not_home",
            hostile.change("devices", b_dev, json!({"secret_hash": "taken"})),
        ),
        ("not_home", {
            let id = hostile.ids.next_id();
            hostile.change("commands", id, command_fields(b_dev, "exec"))
        }),
        ("foreign_id", {
            let id = Snowflake::new(b_worker).expect("worker").next_id();
            hostile.change("commands", id, command_fields(a_dev, "reboot"))
        }),
        ("foreign_stamp", {
            let stamp = Hlc::new(b_worker).tick();
            hostile.stamped("devices", a_dev, stamp, json!({"name": "as-b"}))
        }),
        ("not_home", {
            let id = hostile.ids.next_id();
            let b_num = num(&b_id);
            hostile.change("devices", id, device_fields("planted", "SN-PLANT", b_num))
        }),
        (
            "moves_device",
            hostile.change("devices", a_dev, json!({"edge_id": num(&b_id)})),
        ),
        (
            "clock_ahead",
            hostile.stamped("devices", a_dev, far, json!({"name": "future"})),
        ),
        (
            "clock_ahead",
            hostile.stamped("devices", a_dev, i64::MAX, json!({"name": "max"})),
        ),
        (
            "bad_stamp",
            hostile.stamped("devices", a_dev, -5, json!({"name": "negative"})),
        ),
        (
            "center_only",
            hostile.change("device_groups", group, json!({"name": "pwned-group"})),
        ),
        ("not_home", {
            let id = memberships::id_for(group, b_dev);
            let fields = json!({"group_id": group, "device_id": b_dev, "created_at": 1, "updated_at": 1, "deleted": false});
            hostile.change("memberships", id, fields)
        }),
        (
            "not_home",
            hostile.change(
                "desired_configs",
                b_dev,
                json!({
            "device_id": b_dev, "version": 5, "report_interval_s": 30, "settings": "{}",
            "created_at": 1, "updated_at": 1, "deleted": false}),
            ),
        ),
        (
            "bad_value",
            hostile.change(
                "desired_configs",
                a_dev,
                json!({
            "device_id": a_dev, "version": i64::MAX, "report_interval_s": 30, "settings": "{}",
            "created_at": 1, "updated_at": 1, "deleted": false}),
            ),
        ),
        ("forged_actor", {
            let id = hostile.ids.next_id();
            hostile.change(
                "events",
                id,
                json!({
                "id": id, "at": fleet_store::now_ms(), "actor": "operator:admin",
                "action": "device.online", "target_type": "devices", "target_id": a_dev.to_string(),
                "outcome": "ok", "status_code": 200, "detail": ""}),
            )
        }),
        ("not_home", {
            let id = hostile.ids.next_id();
            hostile.change(
                "events",
                id,
                json!({
                "id": id, "at": fleet_store::now_ms(), "actor": format!("device:{b_dev}"),
                "action": "device.online", "target_type": "devices", "target_id": b_dev.to_string(),
                "outcome": "ok", "status_code": 200, "detail": ""}),
            )
        }),
        (
            "not_home",
            hostile.change(
                "pulled_logs",
                pull,
                json!({
            "device_id": b_dev, "bytes": 2, "uploaded_at": 1, "content": "aGk="}),
            ),
        ),
        (
            "bad_value",
            hostile.change("devices", a_dev, json!({"name": "x".repeat(500)})),
        ),
        (
            "unknown_table",
            hostile.change("users", a_dev, json!({"role": "admin"})),
        ),
        (
            "center_only",
            hostile.change("rollouts", rollout, json!({"state": "running"})),
        ),
        (
            "not_home",
            hostile.change("rollout_devices", b_update, json!({"state": "succeeded"})),
        ),
        (
            "center_only",
            hostile.change("rollout_devices", a_update, json!({"wave": 7})),
        ),
        (
            "bad_value",
            hostile.change("rollout_devices", a_update, json!({"progress": 500})),
        ),
        ("foreign_id", {
            let id = hostile.ids.next_id();
            hostile.change("rollout_devices", id, json!({"state": "succeeded"}))
        }),
    ];
    let total = forged.len() as i64;
    for (n, (rule, change)) in forged.into_iter().enumerate() {
        let (table, row) = (change.table.clone(), change.id);
        hostile.send_changes(vec![change]).await;
        let event = last_refusal(&center).await;
        assert_eq!(event["actor"], json!(format!("edge:{a_id}")), "{event}");
        assert_eq!(event["target_type"], json!(table), "{event}");
        assert_eq!(event["target_id"], json!(row.to_string()), "{event}");
        let detail = event["detail"].as_str().unwrap_or_default();
        assert!(
            detail.starts_with(&format!("rule {rule}:")),
            "{table} {row}: {detail}"
        );
        assert_eq!(refused_count(&center, &a_id).await, n as i64 + 1);
    }

    // What the site may do still works: its own device, renamed with its own stamp.
    let honest = hostile.change("devices", a_dev, json!({"name": "renamed-by-a"}));
    hostile.send_changes(vec![honest]).await;
    assert_eq!(
        refused_count(&center, &a_id).await,
        total,
        "nothing more refused"
    );
    let (_, shown) = center.api.get(&format!("/api/v1/devices/{a_dev}")).await;
    assert_eq!(shown["data"]["name"], json!("renamed-by-a"));

    // The live view and roaming reach only what the site holds or can prove.
    let live = LinkPdu::Live(Live {
        full: true,
        online: vec![b_dev, a_dev],
        offline: vec![],
        statuses: vec![LiveStatus {
            device_id: b_dev,
            version: 1,
            config_version: 0,
            status: json!({"cpu": 99}),
        }],
    });
    send(&mut hostile.ws, &live).await.expect("live");
    let roams = 100u64;
    for request in 0..roams {
        let roam = LinkPdu::Roam(Roam {
            request,
            device_id: Some(b_dev),
            model: None,
            sn: None,
            secret: "guessed".into(),
        });
        send(&mut hostile.ws, &roam).await.expect("roam");
    }
    let mut answered = 0;
    while answered < roams {
        match tokio::time::timeout(Duration::from_secs(10), recv(&mut hostile.ws)).await {
            Ok(Some(Ok(LinkPdu::Roamed(r)))) => {
                assert_eq!(r.device_id, None, "a guessed secret moves nothing");
                answered += 1;
            }
            Ok(Some(Ok(LinkPdu::Ping(beat)))) => send(&mut hostile.ws, &LinkPdu::Pong(beat))
                .await
                .expect("pong"),
            Ok(Some(Ok(_))) => {}
            other => panic!("roams unanswered: {other:?}"),
        }
    }
    until(10, "A's own device shows online", async || {
        center.api.get(&format!("/api/v1/devices/{a_dev}")).await.1["data"]["online"] == json!(true)
    })
    .await;
    let (_, shown_b) = center.api.get(&format!("/api/v1/devices/{b_dev}")).await;
    assert_eq!(shown_b["data"]["online"], json!(false), "{shown_b}");

    // Nothing changed at the center or at edge B.
    assert_eq!(device_row(&center.api, b_dev).await, b_before_center);
    assert_eq!(device_row(&b.site.api, b_dev).await, b_before_edge);
    assert_eq!(commands_of(&center.api, b_dev).await, 1);
    assert_eq!(commands_of(&b.site.api, b_dev).await, 1);
    assert_eq!(commands_of(&center.api, a_dev).await, 0);
    assert_eq!(
        center.api.get(&format!("/api/v1/groups/{group}")).await.1,
        group_before
    );
    let center_db = center.api.db().await;
    let membership = memberships::Entity::find_by_id(memberships::id_for(group, b_dev))
        .one(&center_db)
        .await
        .expect("query");
    assert!(membership.is_none());
    for device in [a_dev, b_dev] {
        let config = fleet_store::desired_configs::Entity::find_by_id(device)
            .one(&center_db)
            .await
            .expect("query");
        assert!(config.is_none(), "no desired config for {device}");
    }
    let planted = fleet_store::devices::Entity::find()
        .filter(fleet_store::devices::Column::HwSn.eq("SN-PLANT"))
        .count(&center_db)
        .await
        .expect("count");
    assert_eq!(planted, 0);
    let forged_events = fleet_store::events::Entity::find()
        .filter(fleet_store::events::Column::Action.eq("device.online"))
        .count(&center_db)
        .await
        .expect("count");
    assert_eq!(forged_events, 0);
    let pulled = fleet_store::pulled_logs::Entity::find_by_id(pull)
        .one(&center_db)
        .await
        .expect("query");
    assert!(pulled.is_none());

    // The center's clock did not move for the forged stamps: its next write is now.
    let (status, _) = center
        .api
        .patch(
            &format!("/api/v1/devices/{a_dev}"),
            json!({"description": "after"}),
        )
        .await;
    assert_eq!(status, 200);
    let row = device_row(&center.api, a_dev).await.expect("row");
    let hlc = row["hlc"].as_i64().expect("hlc");
    assert!(
        physical_ms(hlc) < fleet_store::now_ms() + 60_000,
        "stamp {hlc}"
    );

    // Refusals are counted by rule, and honest traffic from B carries on both ways.
    let metrics = center.api.metrics().await;
    for rule in [
        "not_home",
        "clock_ahead",
        "foreign_stamp",
        "center_only",
        "live_not_home",
    ] {
        let line = format!("federation_refused_changes_total{{edge=\"{a_id}\",rule=\"{rule}\"}}");
        assert!(metrics.contains(&line), "{line} missing");
    }
    let (status, _) = b
        .site
        .api
        .patch(
            &format!("/api/v1/devices/{b_dev}"),
            json!({"description": "from-b"}),
        )
        .await;
    assert_eq!(status, 200);
    until(10, "B's edit reaches the center", async || {
        device_row(&center.api, b_dev).await.expect("row")["description"] == json!("from-b")
    })
    .await;
    let (status, _) = center
        .api
        .patch(
            &format!("/api/v1/devices/{b_dev}"),
            json!({"name": "renamed-at-center"}),
        )
        .await;
    assert_eq!(status, 200);
    until(10, "the center's edit reaches B", async || {
        device_row(&b.site.api, b_dev).await.expect("row")["name"] == json!("renamed-at-center")
    })
    .await;
    b.stop();
    center.links.shutdown();
}

/// An edge that writes to a device the center moved away while their snapshots
/// crossed holds a copy nothing else would ever name again: the center answers the
/// refused write with the device's home, stamped so the edge takes it.
#[tokio::test]
async fn an_edge_writing_to_a_device_that_moved_away_is_told_its_home() {
    let center = spawn_center().await;
    let mut edges = Vec::new();
    for name in ["left-a", "new-home-b"] {
        let (status, reg) = center
            .api
            .post("/api/v1/edges", json!({"name": name, "site": name}))
            .await;
        assert_eq!(status, 201, "{reg}");
        edges.push(reg["data"].clone());
    }
    let (a_id, b_id) = (
        edges[0]["id"].as_str().expect("id").to_string(),
        edges[1]["id"].as_str().expect("id").to_string(),
    );
    let mut body = device_json("gw-moving", "SN-MOVE1");
    body["edge_id"] = json!(a_id);
    let (_, made) = center.api.post("/api/v1/devices", body).await;
    let dev = num(made["data"]["id"].as_str().expect("id"));
    let (status, moved) = center
        .api
        .patch(&format!("/api/v1/devices/{dev}"), json!({"edge_id": b_id}))
        .await;
    assert_eq!(status, 200, "{moved}");
    let center_row = device_row(&center.api, dev).await.expect("row");

    let secret = edges[0]["secret"].as_str().expect("secret");
    let worker = edges[0]["worker_id"].as_i64().expect("worker");
    let (mut a, _) = Hostile::login(&center, &a_id, secret, worker, 0).await;
    let rename = a.change("devices", dev, json!({"name": "renamed-at-a"}));
    a.sent += 1;
    let upto = a.sent;
    let pdu = LinkPdu::Changes(Changes {
        changes: vec![rename],
        upto,
    });
    send(&mut a.ws, &pdu).await.expect("send");
    let told = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match recv(&mut a.ws).await {
                Some(Ok(LinkPdu::Changes(batch))) if batch.changes.iter().any(|c| c.id == dev) => {
                    return batch;
                }
                Some(Ok(LinkPdu::Ack(ack))) if ack.upto >= upto => {
                    panic!("acknowledged without naming the device's home")
                }
                Some(Ok(LinkPdu::Ping(beat))) => {
                    send(&mut a.ws, &LinkPdu::Pong(beat)).await.expect("pong");
                }
                Some(Ok(_)) => {}
                other => panic!("the link ended: {other:?}"),
            }
        }
    })
    .await
    .expect("the home within 10 s");
    let home = told
        .changes
        .iter()
        .find(|c| c.id == dev)
        .expect("the device");
    assert_eq!(home.table, "devices");
    assert_eq!(home.fields.get("edge_id"), Some(&json!(num(&b_id))));
    assert_eq!(home.fields.len(), 1, "only the home: {:?}", home.fields);
    let stamps: Map<String, Value> =
        serde_json::from_str(center_row["field_stamps"].as_str().expect("stamps"))
            .expect("stamps json");
    assert_eq!(Some(home.hlc), stamps["edge_id"].as_i64());
    assert_eq!(told.upto, 0, "a home told moves no cursor");
    a.until_acked(upto).await;

    // The write itself changed nothing.
    let after = device_row(&center.api, dev).await.expect("row");
    assert_eq!(after["name"], json!("gw-moving"));
    assert_eq!(after["edge_id"], json!(num(&b_id)));
    center.links.shutdown();
}
