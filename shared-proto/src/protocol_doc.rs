//! The message reference of `docs/protocol.md`, generated from the types so it cannot
//! drift: a test compares the document with [`render`] (set `UPDATE_PROTOCOL_DOC=1`
//! to rewrite the generated part).

use std::collections::BTreeMap;

use crate::southbound::*;

pub const BEGIN: &str = "<!-- BEGIN GENERATED: message reference -->";
pub const END: &str = "<!-- END GENERATED: message reference -->";

/// `(type, direction, purpose, example)` for every message type, in `KINDS` order.
pub fn catalogue() -> Vec<(&'static str, &'static str, &'static str, Envelope)> {
    let status = Status {
        cpu_percent: Some(12.5),
        memory_used_bytes: Some(734_003_200),
        memory_total_bytes: Some(4_294_967_296),
        disk_used_bytes: Some(6_442_450_944),
        disk_total_bytes: Some(31_138_512_896),
        uptime_s: Some(86_400),
        network: Some(vec![NetworkInterface {
            name: "eth0".into(),
            rx_bytes: 1_048_576,
            tx_bytes: 524_288,
            ipv4: vec!["192.168.1.2".into()],
        }]),
        agent_version: Some("0.1.0".into()),
        software_version: Some("2.0.1".into()),
    };
    let e = Envelope::new;
    vec![
        ("login", "device → edge", "First frame of a session, at most 4,096 bytes, within the login deadline. Identify by `device_id`, or by `sn` and `model`. A refused login gets no answer: the edge closes the connection.",
            e(1, Pdu::Login(Login { device_id: Some("383500744738738176".into()), sn: None, model: None, secret: "the-secret-issued-at-registration".into(), agent_version: "0.1.0".into() }))),
        ("login_ok", "edge → device", "The session is open. Heartbeat settings, and the status version the edge holds.",
            e(1, Pdu::LoginOk(LoginOk { device_id: "383500744738738176".into(), heartbeat_interval_s: 15, missed_limit: 3, status_version: 41 }))),
        ("ping", "either way", "Application heartbeat, sent every `heartbeat_interval_s`.",
            e(2, Pdu::Ping(Ping { sent_ms: 1_795_500_902_645 }))),
        ("pong", "either way", "Answer to `ping`, echoing `sent_ms` so the sender measures the round trip.",
            e(2, Pdu::Pong(Ping { sent_ms: 1_795_500_902_645 }))),
        ("status_report", "device → edge", "Full report (`full: true`, every field), or a diff with only the fields changed since `base_version`.",
            e(3, Pdu::StatusReport(StatusReport { version: 42, full: false, base_version: Some(41), status: Status { cpu_percent: Some(31.0), uptime_s: Some(86_415), ..Default::default() } }))),
        ("status_ack", "edge → device", "The edge now holds this status version.",
            e(3, Pdu::StatusAck(StatusAck { version: 42 }))),
        ("status_resync", "edge → device", "The diff did not apply on what the edge holds: send a full report.",
            e(4, Pdu::StatusResync(StatusResync { have_version: 17 }))),
        ("desired_config", "edge → device", "Desired configuration (device twin, desired side), versioned.",
            e(5, Pdu::DesiredConfig(DesiredConfig { version: 7, report_interval_s: 30, settings: BTreeMap::from([("log_level".to_string(), "info".to_string())]) }))),
        ("config_applied", "device → edge", "The configuration version the device runs now (twin, reported side), or why it could not apply it.",
            e(6, Pdu::ConfigApplied(ConfigApplied { version: 7, error: None }))),
        ("command", "edge → device", "Run a command. A `command_id` runs at most once, however often it arrives; one not started by `deadline_ms` ends `expired`.",
            e(7, Pdu::Command(Command { command_id: "383500744805847040".into(), name: CommandName::Exec, args: serde_json::json!({"script": "disk-usage", "args": ["/var"], "timeout_s": 30}), deadline_ms: 1_795_500_962_645 }))),
        ("command_progress", "device → edge", "The command was taken (`progress: 0`) or advanced (up to 100).",
            e(8, Pdu::CommandProgress(CommandProgress { command_id: "383500744805847040".into(), progress: 0, message: "started".into() }))),
        ("command_result", "device → edge", "How the command ended: outcome, exit code, output (capped, and cut further so the frame fits 65,536 bytes; `truncated` says so), error, and structured `data` for `get_status`.",
            e(9, Pdu::CommandResult(CommandResult { command_id: "383500744805847040".into(), outcome: Outcome::Succeeded, exit_code: Some(0), output: "1.2G\t/var\n".into(), truncated: false, error: None, data: serde_json::Value::Null }))),
        ("error", "either way", "A frame the receiver could not use. The session stays open, but a flood of bad frames closes it.",
            e(10, Pdu::Error(ErrorPdu { code: ErrorCode::UnknownType, message: "unknown message type \"teleport\"".into(), in_reply_to: Some(12) }))),
    ]
    .into_iter()
    .chain([
        (
            "status_report",
            "device → edge",
            "",
            e(11, Pdu::StatusReport(StatusReport { version: 1, full: true, base_version: None, status })),
        ),
        (
            "command",
            "edge → device",
            "",
            e(12, Pdu::Command(Command { command_id: "383500744805847041".into(), name: CommandName::PullLogs, args: serde_json::json!({"upload": LogUpload { scheme: "https".into(), port: 9443, path: "/api/v1/uploads/logs/383500744805847041".into(), max_bytes: 1_048_576 }}), deadline_ms: 1_795_500_962_645 })),
        ),
    ])
    .collect()
}

/// The generated part of the protocol document.
pub fn render() -> String {
    let mut out = format!("{BEGIN}\n\n");
    let catalogue = catalogue();
    for kind in KINDS {
        let entries: Vec<_> = catalogue.iter().filter(|(k, ..)| *k == kind).collect();
        let Some((_, direction, purpose, _)) = entries.first() else {
            continue;
        };
        out.push_str(&format!("### `{kind}` ({direction})\n\n{purpose}\n\n"));
        for (.., example) in entries {
            let value: serde_json::Value =
                serde_json::from_str(&example.encode()).unwrap_or_default();
            let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
            out.push_str(&format!("```json\n{pretty}\n```\n\n"));
        }
    }
    out.push_str(END);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_documented() {
        let catalogue = catalogue();
        for kind in KINDS {
            assert!(catalogue.iter().any(|(k, ..)| *k == kind), "{kind}");
        }
    }

    #[test]
    fn docs_protocol_md_matches_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
        let doc = std::fs::read_to_string(path).expect("docs/protocol.md exists");
        let (Some(start), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
            panic!("docs/protocol.md lacks the generated markers");
        };
        let current = &doc[start..end + END.len()];
        let wanted = render();
        if current != wanted {
            if std::env::var_os("UPDATE_PROTOCOL_DOC").is_some() {
                let updated = format!("{}{wanted}{}", &doc[..start], &doc[end + END.len()..]);
                std::fs::write(path, updated).expect("rewrite docs/protocol.md");
            } else {
                panic!(
                    "docs/protocol.md is stale; run with UPDATE_PROTOCOL_DOC=1 to regenerate it"
                );
            }
        }
    }
}
