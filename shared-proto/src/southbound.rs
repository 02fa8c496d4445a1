//! The device <-> edge protocol: JSON PDUs in WebSocket text frames, all in one
//! envelope `{"v": 1, "id": <message id>, "type": "<kind>", "body": {...}}`.
//!
//! Decoding tells apart what the peer must hear about: a frame that is too large, not
//! JSON, of another protocol version, of an unknown type, or with a malformed body.
//! Each maps to an [`ErrorCode`] that the receiver answers with an `error` PDU while
//! keeping the session (a flood of them closes it; that policy is the receiver's).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::error::Category;
use serde_json::value::RawValue;

/// The protocol version this build speaks.
pub const VERSION: u16 = 1;
/// Largest text frame either side accepts, in bytes. Larger frames are refused unread.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Largest first frame (the login) the edge reads before the device is authenticated:
/// an unauthenticated peer gets no more than this, not the session's frame size.
pub const MAX_LOGIN_FRAME_BYTES: usize = 4 * 1024;

/// One message: protocol version, the sender's message id (unique per session and
/// direction, so replies can name what they answer) and the PDU.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub id: u64,
    pub pdu: Pdu,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "body", rename_all = "snake_case")]
pub enum Pdu {
    Login(Login),
    LoginOk(LoginOk),
    Ping(Ping),
    Pong(Ping),
    StatusReport(StatusReport),
    StatusAck(StatusAck),
    StatusResync(StatusResync),
    DesiredConfig(DesiredConfig),
    ConfigApplied(ConfigApplied),
    Command(Command),
    CommandProgress(CommandProgress),
    CommandResult(CommandResult),
    Error(ErrorPdu),
}

/// device -> edge, first frame of a session. Either `device_id`, or `sn` with `model`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Login {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub secret: String,
    pub agent_version: String,
}

/// edge -> device: the session is open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginOk {
    pub device_id: String,
    /// Both sides send `ping` at this interval; a peer silent for `missed_limit`
    /// intervals is gone.
    pub heartbeat_interval_s: u32,
    pub missed_limit: u32,
    /// The last status version the edge holds for this device (0 for none): the agent
    /// sends a diff on top of it, or a full report when it does not have that version.
    pub status_version: u64,
}

/// Either direction; answered with `pong` carrying the same `sent_ms`, which gives the
/// sender the round trip (agents use it to pick the nearest edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub sent_ms: i64,
}

/// Resource figures of a device. In a full report every field is present; in a diff
/// only the fields that changed since `base_version`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_total_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Vec<NetworkInterface>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// The version of the software the device runs (what `install` updates); the
    /// edge records it as the device's `software.version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    pub name: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv4: Vec<String>,
}

impl Status {
    /// Applies a diff: every field present in `diff` replaces this one's.
    pub fn merge(&mut self, diff: Status) {
        macro_rules! take {
            ($($f:ident),*) => { $( if diff.$f.is_some() { self.$f = diff.$f; } )* };
        }
        take!(
            cpu_percent,
            memory_used_bytes,
            memory_total_bytes,
            disk_used_bytes,
            disk_total_bytes,
            uptime_s,
            network,
            agent_version,
            software_version
        );
    }

    /// The fields of `self` that differ from `before` (what a diff report carries).
    pub fn changed_since(&self, before: &Status) -> Status {
        macro_rules! diff {
            ($($f:ident),*) => { Status { $( $f: if self.$f != before.$f { self.$f.clone() } else { None }, )* } };
        }
        diff!(
            cpu_percent,
            memory_used_bytes,
            memory_total_bytes,
            disk_used_bytes,
            disk_total_bytes,
            uptime_s,
            network,
            agent_version,
            software_version
        )
    }
}

/// device -> edge. `version` increases by one per report. A diff (`full: false`)
/// applies on `base_version`; the edge answers `status_resync` if it holds another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: u64,
    pub full: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_version: Option<u64>,
    pub status: Status,
}

/// edge -> device: the edge now holds `version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusAck {
    pub version: u64,
}

/// edge -> device: send a full report; the edge holds `have_version` (0 for none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResync {
    pub have_version: u64,
}

/// edge -> device: the desired configuration (device twin, desired side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredConfig {
    pub version: i64,
    pub report_interval_s: u32,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

/// device -> edge: the configuration version the device now runs (twin, reported side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigApplied {
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandName {
    Reboot,
    PullLogs,
    Exec,
    GetStatus,
    SetConfig,
    Install,
}

impl CommandName {
    /// The name as it travels and is stored.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandName::Reboot => "reboot",
            CommandName::PullLogs => "pull_logs",
            CommandName::Exec => "exec",
            CommandName::GetStatus => "get_status",
            CommandName::SetConfig => "set_config",
            CommandName::Install => "install",
        }
    }
}

/// edge -> device. A command id runs at most once, however often it is delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub command_id: String,
    pub name: CommandName,
    #[serde(default)]
    pub args: serde_json::Value,
    /// Not started after this time (ms since the epoch): the device answers `expired`.
    pub deadline_ms: i64,
}

/// The `upload` argument the edge adds to a `pull_logs` command: the device sends its
/// log with an HTTP `POST` of the raw bytes to `scheme://<edge host it dials>:port/path`,
/// authenticated with HTTP Basic `device_id:secret`, at most `max_bytes` (the newest
/// part is kept when the log is longer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogUpload {
    pub scheme: String,
    pub port: u16,
    pub path: String,
    pub max_bytes: u64,
}

/// The arguments of an `install` command: the artifact and its signed manifest, as
/// the center recorded them, and (added by the edge on delivery) where to download
/// the file. The device trusts none of it until the manifest verifies with its
/// `update_public_key` and names this artifact, and the file matches its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Install {
    pub artifact_id: String,
    pub version: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    /// The manifest text the signature covers (`crate::manifest::Manifest`).
    pub manifest: String,
    /// Base64 Ed25519 signature of `manifest`.
    pub signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<Download>,
}

/// The stages of an install, which its progress reports carry in `progress` alone
/// (so the command's stored progress tells the stage everywhere it replicates):
/// downloading 0-79, installing 80-94, rebooting 95-99.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallStage {
    Downloading,
    Installing,
    Rebooting,
}

impl InstallStage {
    /// Where each stage's range starts, and how wide it is.
    fn range(self) -> (u8, u8) {
        match self {
            InstallStage::Downloading => (0, 80),
            InstallStage::Installing => (80, 15),
            InstallStage::Rebooting => (95, 5),
        }
    }

    /// The `progress` of a report at `percent` (0-100) of this stage.
    pub fn progress(self, percent: u8) -> u8 {
        let (start, width) = self.range();
        let within = (u16::from(percent.min(100)) * u16::from(width - 1) + 50) / 100;
        start + u8::try_from(within).unwrap_or(width - 1)
    }

    /// The stage, and the percent of it, that an install's `progress` stands for.
    pub fn of(progress: u8) -> (Self, u8) {
        let stage = match progress {
            0..=79 => InstallStage::Downloading,
            80..=94 => InstallStage::Installing,
            _ => InstallStage::Rebooting,
        };
        let (start, width) = stage.range();
        let steps = u16::from(width - 1);
        let within = (u16::from(progress.min(99) - start) * 100 + steps / 2) / steps;
        (stage, u8::try_from(within.min(100)).unwrap_or(100))
    }
}

/// Where a device downloads an artifact: an HTTP `GET` (with `Range` to resume) of
/// `scheme://<edge host it dials>:port/path`, authenticated with HTTP Basic
/// `device_id:secret`. While the edge is still fetching the file from the center it
/// answers 503 with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Download {
    pub scheme: String,
    pub port: u16,
    pub path: String,
}

/// device -> edge: the command was taken (`progress` 0) or advanced (up to 100).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandProgress {
    pub command_id: String,
    pub progress: u8,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
    Expired,
    Rejected,
}

/// device -> edge: how a command ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub command_id: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
    /// The output was cut at the device's cap.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Structured data some commands return (`get_status`: the status).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

impl CommandResult {
    /// Cuts the result until its frame fits [`MAX_FRAME_BYTES`] whatever its message
    /// id: first `output`, then `error`, each on a char boundary, setting `truncated`
    /// when anything was cut. Escaping can grow text up to sixfold (a control
    /// character becomes `\u0001`), so the cut is measured on the encoded frame.
    pub fn fit_frame(&mut self) {
        let over = |r: &CommandResult| encoded_len(r).saturating_sub(MAX_FRAME_BYTES);
        if over(self) == 0 {
            return;
        }
        // The flag itself takes room, so it is set before measuring what to cut.
        self.truncated = true;
        let excess = over(self);
        let keep = json_str_len(&self.output).saturating_sub(excess);
        self.output = json_prefix(&self.output, keep).to_string();
        let excess = over(self);
        if excess > 0 {
            if let Some(error) = &mut self.error {
                let keep = json_str_len(error).saturating_sub(excess);
                *error = json_prefix(error, keep).to_string();
            }
        }
        if over(self) > 0 {
            self.data = serde_json::Value::Null;
        }
    }
}

/// The size of the frame carrying `r`, with the longest message id.
fn encoded_len(r: &CommandResult) -> usize {
    Envelope::new(u64::MAX, Pdu::CommandResult(r.clone()))
        .encode()
        .len()
}

/// Bytes `c` takes inside a JSON string as serde_json writes it.
fn json_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Bytes `s` takes as a JSON string literal, quotes included.
fn json_str_len(s: &str) -> usize {
    s.chars().map(json_char_len).sum::<usize>() + 2
}

/// The longest prefix of `s` (on a char boundary) whose JSON literal fits `budget`.
fn json_prefix(s: &str, budget: usize) -> &str {
    let mut used = 2;
    for (at, c) in s.char_indices() {
        used += json_char_len(c);
        if used > budget {
            return &s[..at];
        }
    }
    s
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    TooLarge,
    Malformed,
    UnsupportedVersion,
    UnknownType,
    BadRequest,
    NotLoggedIn,
}

/// Either direction: a frame the sender could not use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorPdu {
    pub code: ErrorCode,
    pub message: String,
    /// The id of the offending message, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<u64>,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
    pub id: Option<u64>,
}

impl DecodeError {
    fn new(code: ErrorCode, message: impl Into<String>, id: Option<u64>) -> Self {
        Self {
            code,
            message: message.into(),
            id,
        }
    }

    /// The `error` PDU that answers this failure.
    pub fn to_pdu(&self) -> Pdu {
        Pdu::Error(ErrorPdu {
            code: self.code,
            message: self.message.clone(),
            in_reply_to: self.id,
        })
    }
}

impl Envelope {
    pub fn new(id: u64, pdu: Pdu) -> Self {
        Self { id, pdu }
    }

    /// The frame's text, written straight from the types (no intermediate JSON tree:
    /// heartbeats and status acks are most of what an edge sends).
    pub fn encode(&self) -> String {
        #[derive(Serialize)]
        struct Frame<'a> {
            v: u16,
            id: u64,
            #[serde(flatten)]
            pdu: &'a Pdu,
        }
        let frame = Frame {
            v: VERSION,
            id: self.id,
            pdu: &self.pdu,
        };
        // Serializing plain data to a string cannot fail; an empty frame would be
        // refused by the peer as malformed, never misread.
        serde_json::to_string(&frame).unwrap_or_default()
    }

    /// Reads a frame: the envelope's fields are located without building a JSON tree,
    /// and the body is parsed straight into its message type.
    pub fn decode(frame: &str) -> Result<Self, DecodeError> {
        if frame.len() > MAX_FRAME_BYTES {
            return Err(DecodeError::new(
                ErrorCode::TooLarge,
                format!("frames are limited to {MAX_FRAME_BYTES} bytes"),
                None,
            ));
        }
        let malformed = |message: String, id| DecodeError::new(ErrorCode::Malformed, message, id);
        let head: Head<'_> = serde_json::from_str(frame).map_err(|e| match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                malformed(format!("not JSON: {e}"), None)
            }
            Category::Data => malformed(format!("a frame is a JSON object: {e}"), None),
        })?;
        let id = head
            .id
            .and_then(|raw| serde_json::from_str::<u64>(raw.get()).ok());
        let Some(id) = id else {
            return Err(malformed("`id` must be an unsigned integer".into(), None));
        };
        match head.v.map(|raw| serde_json::from_str::<u64>(raw.get())) {
            Some(Ok(v)) if v == u64::from(VERSION) => {}
            Some(Ok(v)) => {
                return Err(DecodeError::new(
                    ErrorCode::UnsupportedVersion,
                    format!("version {v} is not spoken here; this side speaks {VERSION}"),
                    Some(id),
                ))
            }
            Some(Err(_)) | None => return Err(malformed("`v` is required".into(), Some(id))),
        }
        let kind = head
            .kind
            .and_then(|raw| serde_json::from_str::<Cow<'_, str>>(raw.get()).ok());
        let Some(kind) = kind else {
            return Err(malformed("`type` must be a string".into(), Some(id)));
        };
        let body = head.body.map_or("null", RawValue::get);
        let pdu = Pdu::read(&kind, body)
            .ok_or_else(|| {
                DecodeError::new(
                    ErrorCode::UnknownType,
                    format!("unknown message type {kind:?}"),
                    Some(id),
                )
            })?
            .map_err(|e| malformed(format!("{kind} body: {e}"), Some(id)))?;
        Ok(Self { id, pdu })
    }
}

/// A frame's envelope, each field left unparsed until it is checked.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    v: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    body: Option<&'a RawValue>,
}

impl Pdu {
    /// The message of type `kind` with the JSON `body`; `None` for an unknown type.
    fn read(kind: &str, body: &str) -> Option<serde_json::Result<Self>> {
        fn parse<T: serde::de::DeserializeOwned>(
            body: &str,
            pdu: fn(T) -> Pdu,
        ) -> serde_json::Result<Pdu> {
            serde_json::from_str(body).map(pdu)
        }
        Some(match kind {
            "login" => parse(body, Pdu::Login),
            "login_ok" => parse(body, Pdu::LoginOk),
            "ping" => parse(body, Pdu::Ping),
            "pong" => parse(body, Pdu::Pong),
            "status_report" => parse(body, Pdu::StatusReport),
            "status_ack" => parse(body, Pdu::StatusAck),
            "status_resync" => parse(body, Pdu::StatusResync),
            "desired_config" => parse(body, Pdu::DesiredConfig),
            "config_applied" => parse(body, Pdu::ConfigApplied),
            "command" => parse(body, Pdu::Command),
            "command_progress" => parse(body, Pdu::CommandProgress),
            "command_result" => parse(body, Pdu::CommandResult),
            "error" => parse(body, Pdu::Error),
            _ => return None,
        })
    }
}

/// Every message type, in the order the protocol document lists them.
pub const KINDS: [&str; 13] = [
    "login",
    "login_ok",
    "ping",
    "pong",
    "status_report",
    "status_ack",
    "status_resync",
    "desired_config",
    "config_applied",
    "command",
    "command_progress",
    "command_result",
    "error",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_stages_travel_in_progress_and_come_back() {
        for stage in [
            InstallStage::Downloading,
            InstallStage::Installing,
            InstallStage::Rebooting,
        ] {
            for percent in [0u8, 1, 50, 99, 100, 250] {
                let (back, at) = InstallStage::of(stage.progress(percent));
                assert_eq!(back, stage, "{stage:?} at {percent}");
                assert!(at <= 100);
                if percent >= 100 {
                    assert_eq!(at, 100, "{stage:?} done");
                }
            }
            assert_eq!(InstallStage::of(stage.progress(0)).1, 0);
        }
        assert_eq!(InstallStage::of(0), (InstallStage::Downloading, 0));
        assert_eq!(InstallStage::of(100).0, InstallStage::Rebooting);
    }

    #[test]
    fn command_names_are_stored_as_they_travel() {
        for name in [
            CommandName::Reboot,
            CommandName::PullLogs,
            CommandName::Exec,
            CommandName::GetStatus,
            CommandName::SetConfig,
            CommandName::Install,
        ] {
            assert_eq!(serde_json::json!(name.as_str()), serde_json::json!(name));
        }
    }

    #[test]
    fn every_kind_round_trips() {
        for (kind, _, _, example) in crate::protocol_doc::catalogue() {
            let frame = example.encode();
            let back = Envelope::decode(&frame).expect("decodes");
            assert_eq!(back, example, "{kind}");
            let value: serde_json::Value = serde_json::from_str(&frame).expect("json");
            assert_eq!(value["type"], kind);
            assert_eq!(value["v"], VERSION);
        }
    }

    #[test]
    fn bad_frames_are_classified() {
        let code = |frame: &str| Envelope::decode(frame).map_err(|e| (e.code, e.id)).err();
        assert_eq!(code("nope"), Some((ErrorCode::Malformed, None)));
        assert_eq!(code("[]"), Some((ErrorCode::Malformed, None)));
        assert_eq!(
            code(r#"{"v":1,"type":"ping","body":{"sent_ms":1}}"#),
            Some((ErrorCode::Malformed, None))
        );
        assert_eq!(
            code(r#"{"v":2,"id":5,"type":"ping","body":{"sent_ms":1}}"#),
            Some((ErrorCode::UnsupportedVersion, Some(5)))
        );
        assert_eq!(
            code(r#"{"v":1,"id":5,"type":"teleport","body":{}}"#),
            Some((ErrorCode::UnknownType, Some(5)))
        );
        assert_eq!(
            code(r#"{"v":1,"id":5,"type":"ping","body":{"sent_ms":"x"}}"#),
            Some((ErrorCode::Malformed, Some(5)))
        );
        for frame in [
            r#"{"id":5,"type":"ping","body":{"sent_ms":1}}"#,
            r#"{"v":"1","id":5,"type":"ping","body":{"sent_ms":1}}"#,
            r#"{"v":1,"id":5,"type":7,"body":{"sent_ms":1}}"#,
            r#"{"v":1,"id":5,"type":"ping"}"#,
        ] {
            assert_eq!(
                code(frame),
                Some((ErrorCode::Malformed, Some(5))),
                "{frame}"
            );
        }
        assert_eq!(
            code(r#"{"v":1,"id":-5,"type":"ping","body":{"sent_ms":1}}"#),
            Some((ErrorCode::Malformed, None))
        );
        // Unknown envelope fields are ignored, as a newer peer may add some.
        let extra = r#"{"v":1,"id":5,"type":"ping","body":{"sent_ms":1},"trace":"t"}"#;
        assert!(Envelope::decode(extra).is_ok());
        let big = format!(
            r#"{{"v":1,"id":1,"type":"ping","body":{{"sent_ms":1}},"pad":"{}"}}"#,
            "x".repeat(MAX_FRAME_BYTES)
        );
        assert_eq!(code(&big), Some((ErrorCode::TooLarge, None)));
    }

    #[test]
    fn a_result_of_any_output_fits_one_frame() {
        let result = |output: String| CommandResult {
            command_id: "383500744805847040".into(),
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            output,
            truncated: false,
            error: None,
            data: serde_json::Value::Null,
        };
        let small = result("fine\n".into());
        let mut same = small.clone();
        same.fit_frame();
        assert_eq!(same, small, "what fits is left alone");

        for (what, output) in [
            ("control characters", "\u{1}".repeat(64 * 1024)),
            ("quotes and backslashes", "\"\\".repeat(32 * 1024)),
            ("plain text", "x".repeat(64 * 1024)),
            ("multi-byte text", "é€😀\n".repeat(8 * 1024)),
        ] {
            let mut r = result(output.clone());
            r.fit_frame();
            let frame = Envelope::new(u64::MAX, Pdu::CommandResult(r.clone())).encode();
            assert!(frame.len() <= MAX_FRAME_BYTES, "{what}: {}", frame.len());
            assert!(r.truncated, "{what}");
            assert!(output.starts_with(&r.output), "{what}: a prefix");
            assert!(
                frame.len() > MAX_FRAME_BYTES - 16,
                "{what}: cut no more than needed ({})",
                frame.len()
            );
            match Envelope::decode(&frame).map(|e| e.pdu) {
                Ok(Pdu::CommandResult(back)) => assert_eq!(back, r, "{what}"),
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn status_diffs_merge_back_to_the_full_report() {
        let before = Status {
            cpu_percent: Some(10.0),
            memory_used_bytes: Some(100),
            uptime_s: Some(5),
            agent_version: Some("1.0.0".into()),
            ..Default::default()
        };
        let mut after = before.clone();
        after.cpu_percent = Some(20.0);
        after.uptime_s = Some(6);
        let diff = after.changed_since(&before);
        assert_eq!(diff.memory_used_bytes, None);
        assert_eq!(diff.cpu_percent, Some(20.0));
        let mut merged = before;
        merged.merge(diff);
        assert_eq!(merged, after);
    }
}
