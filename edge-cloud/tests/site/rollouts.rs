//! Rollouts across a real center and edge: waves open one after another, failures
//! past the threshold pause the rollout until an operator resumes it, the site
//! finishes its wave while its link to the center is cut, and who may do what.
//! The devices here are test clients that answer `install` as an agent would.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use shared_proto::southbound::CommandName;
use shared_proto::southbound::{
    CommandProgress, CommandResult, Install, InstallStage, Outcome, Pdu,
};

use crate::artifacts::{center_api, device_at, download, edge_fetching_from, file, stored};
use crate::federation::{spawn_center, spawn_edge_configured, until, Center, Edge};
use crate::helpers::*;

/// A device online at `edge`, answering installs.
struct Agent {
    id: String,
    secret: String,
    client: DeviceClient,
}

impl Agent {
    async fn online(center: &Center, edge: &Edge, edge_id: &str, sn: &str) -> Self {
        let (id, secret) = device_at(center, edge, edge_id, sn).await;
        let (client, _) = DeviceClient::login(&edge.site, &id, &secret).await;
        Self { id, secret, client }
    }

    /// The next install delivered within `secs` (under the client's own 10 s), if any.
    async fn install_within(&mut self, secs: u64) -> Option<(String, Install)> {
        self.install_within_ms(secs.min(9) * 1000).await
    }

    async fn install_within_ms(&mut self, ms: u64) -> Option<(String, Install)> {
        let wait = async {
            loop {
                match self.client.recv().await?.pdu {
                    Pdu::Command(c) if c.name == CommandName::Install => {
                        let args = serde_json::from_value(c.args).ok()?;
                        return Some((c.command_id, args));
                    }
                    _ => continue,
                }
            }
        };
        tokio::time::timeout(Duration::from_millis(ms), wait)
            .await
            .ok()
            .flatten()
    }

    /// Reports the stages an agent goes through, downloading the file when
    /// `fetch` is given, and ends with `outcome`.
    async fn install(
        &mut self,
        command: &str,
        fetch: Option<&Edge>,
        outcome: Outcome,
        install: &Install,
    ) {
        self.client
            .send(Pdu::CommandProgress(CommandProgress {
                command_id: command.into(),
                progress: InstallStage::Downloading.progress(0),
                message: "downloading".into(),
            }))
            .await;
        if let Some(edge) = fetch {
            let path = &install.download.as_ref().expect("where to download").path;
            let bytes = download(edge, path, &self.id, &self.secret).await;
            assert_eq!(bytes.len() as u64, install.size);
        }
        self.client
            .send(Pdu::CommandProgress(CommandProgress {
                command_id: command.into(),
                progress: InstallStage::Installing.progress(50),
                message: "installing".into(),
            }))
            .await;
        let failed = outcome != Outcome::Succeeded;
        self.client
            .send(Pdu::CommandResult(CommandResult {
                command_id: command.into(),
                outcome,
                exit_code: Some(i32::from(failed)),
                output: format!("installing {}\nstep two\n", install.version),
                truncated: false,
                error: failed.then(|| "the install hook failed".to_string()),
                data: Value::Null,
            }))
            .await;
    }
}

/// The first of `agents` that an install reaches within `secs`: its index, the
/// command and the install.
async fn next_install(agents: &mut [Agent], secs: u64) -> Option<(usize, String, Install)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        for (i, agent) in agents.iter_mut().enumerate() {
            if let Some((command, install)) = agent.install_within_ms(200).await {
                return Some((i, command, install));
            }
        }
    }
    None
}

async fn rollout(center: &Center, body: Value) -> (u16, Value) {
    center.api.post("/api/v1/rollouts", body).await
}

async fn state_of(center: &Center, id: &str) -> Value {
    let (status, shown) = center.api.get(&format!("/api/v1/rollouts/{id}")).await;
    assert_eq!(status, 200, "{shown}");
    shown["data"].clone()
}

async fn until_state(center: &Center, id: &str, state: &str) -> Value {
    let mut last = Value::Null;
    until(20, &format!("rollout {state}"), async || {
        last = state_of(center, id).await;
        last["state"] == state
    })
    .await;
    last
}

#[tokio::test]
async fn a_rollout_in_waves_installs_on_every_device_one_wave_after_another() {
    let center = spawn_center().await;
    let (edge, edge_id) = edge_fetching_from(&center, center_api(&center), 64 << 20).await;
    let artifact = stored(&center, "4.0.0", file(200_000)).await;
    let artifact_id = artifact["id"].as_str().expect("id").to_string();
    let mut agents = Vec::new();
    for i in 0..4 {
        agents.push(Agent::online(&center, &edge, &edge_id, &format!("SN-RO-{i}")).await);
    }
    let ids: Vec<&str> = agents.iter().map(|a| a.id.as_str()).collect();
    let (status, made) = rollout(
        &center,
        json!({"name": "firmware 4", "artifact_id": artifact_id, "target": {"device_ids": ids},
               "waves": ["25%", "100%"], "success_threshold_pct": 100, "error_threshold_pct": 0}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let id = made["data"]["id"].as_str().expect("id").to_string();
    assert_eq!(made["data"]["counts"]["queued"], 4, "{made}");
    assert_eq!(made["data"]["counts"]["total"], 4);
    assert_eq!(made["data"]["version"], "4.0.0");
    let (status, refused) = center
        .api
        .delete(&format!("/api/v1/artifacts/{artifact_id}"), None)
        .await;
    assert_error(status, &refused, 409, "FAILED_PRECONDITION", None);

    // Wave 1 is one device; the others hear nothing until it succeeded.
    let (i, command, install) = next_install(&mut agents, 10).await.expect("wave 1 started");
    assert!(
        next_install(&mut agents, 2).await.is_none(),
        "a second device in wave 1"
    );
    assert_eq!(install.artifact_id, artifact_id);
    agents[i]
        .install(&command, Some(&edge), Outcome::Succeeded, &install)
        .await;
    for (j, agent) in agents.iter_mut().enumerate() {
        if j == i {
            continue;
        }
        let (command, install) = agent.install_within(10).await.expect("wave 2 reached it");
        agent
            .install(&command, None, Outcome::Succeeded, &install)
            .await;
    }
    let done = until_state(&center, &id, "completed").await;
    assert_eq!(done["counts"]["succeeded"], 4, "{done}");
    assert_eq!(done["per_wave"][0]["counts"]["succeeded"], 1, "{done}");
    assert_eq!(done["per_wave"][1]["counts"]["succeeded"], 3, "{done}");
    assert_eq!(done["per_edge"][0]["edge_id"], edge_id.as_str(), "{done}");
    assert_eq!(done["per_edge"][0]["counts"]["succeeded"], 4, "{done}");
    let (status, listed) = center
        .api
        .get(&format!("/api/v1/rollouts/{id}/devices?state=succeeded"))
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["data"]["total"], 4, "{listed}");
    let one = &listed["data"]["items"][0];
    assert_eq!(one["progress"], 100);
    assert!(
        one["log"].as_str().is_some_and(|l| l.ends_with("step two")),
        "{one}"
    );
    let (status, _) = center
        .api
        .delete(&format!("/api/v1/artifacts/{artifact_id}"), None)
        .await;
    assert_eq!(status, 200, "a finished rollout holds the artifact no more");
}

#[tokio::test]
async fn failures_past_the_error_threshold_pause_it_until_an_operator_resumes() {
    let center = spawn_center().await;
    let (edge, edge_id) = edge_fetching_from(&center, center_api(&center), 64 << 20).await;
    let artifact = stored(&center, "5.0.0", file(1000)).await;
    let mut agents = Vec::new();
    for i in 0..4 {
        agents.push(Agent::online(&center, &edge, &edge_id, &format!("SN-RP-{i}")).await);
    }
    let ids: Vec<&str> = agents.iter().map(|a| a.id.as_str()).collect();
    let (status, made) = rollout(
        &center,
        json!({"name": "risky", "artifact_id": artifact["id"], "target": {"device_ids": ids},
               "waves": ["50%", "100%"], "error_threshold_pct": 25, "max_in_flight_per_edge": 4}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let id = made["data"]["id"].as_str().expect("id").to_string();
    let mut started = Vec::new();
    while let Some((i, command, install)) = next_install(&mut agents, 3).await {
        let outcome = if started.is_empty() {
            Outcome::Failed
        } else {
            Outcome::Succeeded
        };
        agents[i].install(&command, None, outcome, &install).await;
        started.push(i);
    }
    assert_eq!(started.len(), 2, "wave 1 is half the devices");
    let mut waiting: Vec<&mut Agent> = agents
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| !started.contains(i))
        .map(|(_, a)| a)
        .collect();
    let paused = until_state(&center, &id, "paused").await;
    let reason = paused["reason"].as_str().expect("reason");
    assert!(reason.contains("1 of 2 devices failed"), "{reason}");
    let (status, failed) = center
        .api
        .get(&format!("/api/v1/rollouts/{id}/devices?state=failed"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        failed["data"]["items"][0]["reason"], "the install hook failed",
        "{failed}"
    );
    let (_, events) = center.api.get("/api/v1/events?action=rollout.paused").await;
    assert!(
        events.to_string().contains("1 of 2 devices failed"),
        "{events}"
    );
    for agent in waiting.iter_mut() {
        assert!(
            agent.install_within(2).await.is_none(),
            "paused: no new install"
        );
    }

    let (status, resumed) = center
        .api
        .post(&format!("/api/v1/rollouts/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 200, "{resumed}");
    for agent in waiting.iter_mut() {
        let (command, install) = agent.install_within(10).await.expect("wave 2 opened");
        agent
            .install(&command, None, Outcome::Succeeded, &install)
            .await;
    }
    let done = until_state(&center, &id, "completed").await;
    assert_eq!(
        (
            done["counts"]["succeeded"].clone(),
            done["counts"]["failed"].clone()
        ),
        (json!(3), json!(1))
    );
    let (status, again) = center
        .api
        .post(&format!("/api/v1/rollouts/{id}/abort"), json!({}))
        .await;
    assert_error(status, &again, 409, "FAILED_PRECONDITION", None);
}

#[tokio::test]
async fn the_site_finishes_its_wave_while_the_center_is_away() {
    let center = spawn_center().await;
    let proxy = crate::federation::proxy_to(&center).await;
    let link = format!("wss://localhost:{}/link", proxy.addr().port());
    let api = reqwest::Url::parse(&center_api(&center)).expect("url");
    let (edge, edge_id) = spawn_edge_configured(&center, "site-away", vec![link], move |s| {
        if let Some(c) = s.center.as_mut() {
            c.api_urls = vec![api];
        }
    })
    .await;
    let artifact = stored(&center, "6.0.0", file(1000)).await;
    let mut agents = Vec::new();
    for i in 0..3 {
        agents.push(Agent::online(&center, &edge, &edge_id, &format!("SN-RA-{i}")).await);
    }
    let ids: Vec<&str> = agents.iter().map(|a| a.id.as_str()).collect();
    let (status, made) = rollout(
        &center,
        json!({"name": "offline-safe", "artifact_id": artifact["id"], "target": {"device_ids": ids},
               "max_in_flight_per_edge": 1}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let id = made["data"]["id"].as_str().expect("id").to_string();
    // One at a time: the first starts while the link is up, then the link goes.
    let (first, command, install) = next_install(&mut agents, 10)
        .await
        .expect("the wave started");
    proxy.cut();
    until(10, "the center sees the cut", async || {
        !center.links.state(edge_id.parse().expect("id")).online
    })
    .await;
    agents[first]
        .install(&command, None, Outcome::Succeeded, &install)
        .await;
    let mut left: Vec<Agent> = agents
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != first)
        .map(|(_, a)| a)
        .collect();
    while !left.is_empty() {
        let (i, command, install) = next_install(&mut left, 10).await.expect("the site went on");
        left[i]
            .install(&command, None, Outcome::Succeeded, &install)
            .await;
        left.remove(i);
    }
    let site_db = edge.site.api.db().await;
    until(10, "the site finished its wave", async || {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        fleet_store::rollout_devices::Entity::find()
            .filter(fleet_store::rollout_devices::Column::State.eq("succeeded"))
            .all(&site_db)
            .await
            .is_ok_and(|rows| rows.len() == 3)
    })
    .await;
    assert_eq!(
        state_of(&center, &id).await["counts"]["succeeded"],
        0,
        "the center has not heard"
    );
    proxy.restore();
    let done = until_state(&center, &id, "completed").await;
    assert_eq!(done["counts"]["succeeded"], 3, "{done}");
}

#[tokio::test]
async fn bad_rollouts_are_refused_by_field_and_scoped_operators_stay_in_their_groups() {
    let center = spawn_center().await;
    let (edge, edge_id) = edge_fetching_from(&center, center_api(&center), 1 << 20).await;
    let artifact = stored(&center, "7.0.0", file(10)).await;
    let (mine, _) = device_at(&center, &edge, &edge_id, "SN-RS-1").await;
    let (theirs, _) = device_at(&center, &edge, &edge_id, "SN-RS-2").await;
    let group = center.api.group("line-a").await;
    let (status, _) = center
        .api
        .post(
            &format!("/api/v1/groups/{group}/devices"),
            json!({"device_ids": [mine]}),
        )
        .await;
    assert!(status == 200 || status == 201, "{status}");
    let base =
        json!({"name": "x", "artifact_id": artifact["id"], "target": {"device_ids": [mine]}});
    let with = |key: &str, value: Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    for (body, field) in [
        (with("name", json!("  ")), "name"),
        (with("waves", json!(["0%"])), "waves"),
        (
            with("success_threshold_pct", json!(101)),
            "success_threshold_pct",
        ),
        (
            with("error_threshold_pct", json!(-1)),
            "error_threshold_pct",
        ),
        (with("device_timeout_s", json!(0)), "device_timeout_s"),
        (
            with("max_in_flight_per_edge", json!(0)),
            "max_in_flight_per_edge",
        ),
        (with("start_at", json!(-5)), "start_at"),
        (
            with("target", json!({"group_id": group, "edge_id": edge_id})),
            "target",
        ),
        (
            with("target", json!({"device_ids": []})),
            "target.device_ids",
        ),
        (
            with("target", json!({"device_ids": ["x1"]})),
            "target.device_ids[0]",
        ),
        (with("artifact_id", json!("nope")), "artifact_id"),
    ] {
        let (status, answer) = rollout(&center, body).await;
        assert_error(status, &answer, 400, "INVALID_ARGUMENT", Some(field));
    }
    let (status, answer) = rollout(&center, with("artifact_id", json!("123456789"))).await;
    assert_error(status, &answer, 404, "NOT_FOUND", Some("artifact_id"));
    let (status, answer) =
        rollout(&center, with("target", json!({"device_ids": ["99999999"]}))).await;
    assert_error(status, &answer, 404, "NOT_FOUND", Some("target.device_ids"));
    let (_, rollouts_before) = center.api.get("/api/v1/rollouts").await;
    assert_eq!(rollouts_before["data"]["total"], 0, "nothing was made");

    let (_, operator) = center.api.user("op-a", "operator", &[&group]).await;
    let as_op = |body: Value| {
        let token = operator.clone();
        let api = &center.api;
        async move {
            api.call(Method::POST, "/api/v1/rollouts", Some(&token), Some(body))
                .await
        }
    };
    let (status, answer) = as_op(with("target", json!({"device_ids": [theirs]}))).await;
    assert_error(status, &answer, 404, "NOT_FOUND", Some("target.device_ids"));
    let (status, answer) = as_op(with("target", json!({"edge_id": edge_id}))).await;
    assert_error(status, &answer, 403, "PERMISSION_DENIED", None);
    let (status, own) = as_op(with("target", json!({"group_id": group}))).await;
    assert_eq!(status, 201, "{own}");
    let (status, admins) = rollout(&center, with("target", json!({"device_ids": [theirs]}))).await;
    assert_eq!(status, 201, "{admins}");
    let (_, seen) = center
        .api
        .call(Method::GET, "/api/v1/rollouts", Some(&operator), None)
        .await;
    assert_eq!(
        seen["data"]["total"], 1,
        "only the one over their group: {seen}"
    );
    let hidden = admins["data"]["id"].as_str().expect("id");
    let (status, _) = center
        .api
        .call(
            Method::POST,
            &format!("/api/v1/rollouts/{hidden}/pause"),
            Some(&operator),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 404);
    let (_, viewer) = center.api.user("viewer-a", "viewer", &[&group]).await;
    let (status, answer) = center
        .api
        .call(
            Method::POST,
            "/api/v1/rollouts",
            Some(&viewer),
            Some(with("target", json!({"group_id": group}))),
        )
        .await;
    assert_error(status, &answer, 403, "PERMISSION_DENIED", None);
}
