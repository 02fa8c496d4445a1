//! The link's messages: JSON in WebSocket text frames, `{"type": …, "body": …}`.

use fleet_store::sync::Change;
use serde::{Deserialize, Serialize};

/// Version of the link protocol; a center refuses an edge speaking another.
pub const VERSION: u32 = 1;

/// Largest link frame. A batch of changes is at most [`BATCH`] rows, and a row is at
/// most a few tens of KiB (command arguments are capped at 16 KiB).
pub const MAX_FRAME_BYTES: usize = 32 * 1024 * 1024;

/// Change-log entries sent in one frame.
pub const BATCH: u64 = 200;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "body", rename_all = "snake_case")]
pub enum LinkPdu {
    Hello(Hello),
    Welcome(Welcome),
    Changes(Changes),
    Ack(Ack),
    Ping(Beat),
    Pong(Beat),
    Live(Live),
    Roam(Roam),
    Roamed(Roamed),
    SnapshotEnd(SnapshotEnd),
}

/// edge -> center, first frame: who the edge is, and how far it has merged the
/// center's change log (the center resumes from there).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub edge_id: String,
    pub secret: String,
    /// The edge's worker id, which stamps its rows and its changes.
    pub node_id: i64,
    pub applied: i64,
    /// The edge's wall clock when it sent this (ms since the epoch), so the center
    /// sees how far the two clocks are apart.
    #[serde(default)]
    pub wall_ms: i64,
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("version", &self.version)
            .field("edge_id", &self.edge_id)
            .field("node_id", &self.node_id)
            .field("applied", &self.applied)
            .field("wall_ms", &self.wall_ms)
            .finish_non_exhaustive()
    }
}

/// The center as an edge's one peer, whichever replica holds the link: the key of
/// the edge's cursor of the center's (shared) change log. Replicas lease worker ids
/// of their own for the rows and stamps they make; the log they serve is one.
pub const CENTER_NODE: i64 = 1;

/// center -> edge: the link is up; how far the center has merged the edge's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Always [`CENTER_NODE`].
    pub center_node: i64,
    pub applied: i64,
    /// The center's wall clock when it sent this (ms since the epoch).
    #[serde(default)]
    pub wall_ms: i64,
}

/// How far a peer's wall clock (as its handshake says) runs ahead of this node's
/// (negative: behind). Warns when it is above half the bound stamps are held to:
/// past the bound, that peer's changes are refused.
pub fn warn_on_skew(peer: &str, their_wall_ms: i64, max_skew_ms: i64) -> i64 {
    let skew = their_wall_ms.saturating_sub(fleet_store::now_ms());
    if skew.saturating_abs() > max_skew_ms / 2 {
        tracing::warn!(
            peer,
            skew_ms = skew,
            bound_ms = max_skew_ms,
            "a federation peer's clock is far from this node's; its changes are refused once stamps run past the bound: check NTP on both"
        );
    }
    skew
}

/// Either way: changes from the sender's log, up to entry `upto` (entries the
/// receiver does not need are left out, but `upto` still moves past them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Changes {
    pub changes: Vec<Change>,
    pub upto: i64,
}

/// Either way, after the pages of a snapshot (sent as [`Changes`] that do not move
/// the cursor): the receiver now holds everything up to `upto`. To an edge, also
/// every device homed there, so it can let go of devices that moved while it was
/// away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEnd {
    pub upto: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<i64>>,
    /// How far the sender had merged the receiver's log when it listed `devices`: a
    /// device the receiver changed after that may be missing from the list only
    /// because the sender had not merged it yet.
    #[serde(default)]
    pub merged: i64,
}

/// Either way: the receiver has merged and stored everything up to `upto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub upto: i64,
}

/// edge -> center: the live view of the edge's devices, so the center shows who is
/// online and their latest status within a second or so. `full` (sent when the link
/// comes up) replaces what the center holds for this edge; otherwise it is a delta.
/// Never stored per heartbeat: statuses are coalesced per device between sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Live {
    pub full: bool,
    pub online: Vec<i64>,
    pub offline: Vec<i64>,
    pub statuses: Vec<LiveStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveStatus {
    pub device_id: i64,
    pub version: i64,
    pub config_version: i64,
    pub status: serde_json::Value,
}

/// edge -> center: a device this edge does not hold tried to log in here. The center
/// checks its credentials and, if they are good, makes this edge its home; the
/// device's rows then reach the edge by sync. The secret crosses the link's TLS only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roam {
    pub request: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sn: Option<String>,
    pub secret: String,
}

impl std::fmt::Debug for Roam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Roam")
            .field("request", &self.request)
            .field("device_id", &self.device_id)
            .field("model", &self.model)
            .field("sn", &self.sn)
            .finish_non_exhaustive()
    }
}

/// center -> edge: the answer to a [`Roam`]: the device, now homed at this edge, or
/// `None` when the center refused (unknown device, wrong secret, deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roamed {
    pub request: u64,
    pub device_id: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    pub sent_ms: i64,
}

impl LinkPdu {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let change = Change {
            seq: 7,
            table: "devices".into(),
            id: 42,
            hlc: 99,
            fields: serde_json::json!({"name": "gw"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        };
        for pdu in [
            LinkPdu::Hello(Hello {
                version: VERSION,
                edge_id: "1".into(),
                secret: "s".into(),
                node_id: 2,
                applied: 3,
                wall_ms: 4,
            }),
            LinkPdu::Changes(Changes {
                changes: vec![change],
                upto: 7,
            }),
            LinkPdu::Ack(Ack { upto: 7 }),
        ] {
            assert_eq!(LinkPdu::decode(&pdu.encode()).expect("decodes"), pdu);
        }
        assert!(LinkPdu::decode(r#"{"type":"teleport","body":{}}"#).is_err());
    }
}
