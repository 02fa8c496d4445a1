//! The agent's configuration: a TOML file, with flags and `AGENT_…` variables on top.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The device's id, as the center issued it. Or leave it out and give `sn` and
    /// `model`: the device logs in by its hardware identity and learns its id from
    /// the edge's answer.
    #[serde(default)]
    pub device_id: String,
    /// Hardware serial number, with `model`, instead of `device_id`.
    #[serde(default)]
    pub sn: String,
    /// Hardware model, with `sn`, instead of `device_id`.
    #[serde(default)]
    pub model: String,
    pub secret: String,
    /// Edge device endpoints, e.g. `wss://edge-a:9444/devices`. The agent measures
    /// each one's round trip, uses the nearest, and fails over in that order.
    pub edges: Vec<String>,
    /// CA certificate the edges' certificates are checked against.
    pub ca_file: PathBuf,
    #[serde(default = "default_report_interval")]
    pub report_interval_s: u64,
    /// Where the agent keeps what must survive a restart (executed command ids).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// `exec` may run only these: name -> program path. Arguments are passed without a shell.
    #[serde(default)]
    pub scripts: BTreeMap<String, PathBuf>,
    /// Program that reboots the device; without one, `reboot` restarts the agent.
    #[serde(default)]
    pub reboot_hook: Option<PathBuf>,
    /// Largest command output returned, in bytes.
    #[serde(default = "default_output_cap")]
    pub output_cap_bytes: usize,
    /// Longest wait before the first reconnect attempt after every edge failed, in
    /// milliseconds (the wait is random below it, doubling each round). An edge that
    /// says it is stopping is redialled at once, without it.
    #[serde(default = "default_backoff_first")]
    pub backoff_first_ms: u64,
    /// Longest backoff between reconnect attempts, in seconds.
    #[serde(default = "default_backoff_cap")]
    pub backoff_cap_s: u64,
    /// The agent's own log file, rotated at `log_max_bytes` (one older file kept as
    /// `<log_path>.1`); `pull_logs` uploads it. Without it the agent logs to stderr
    /// only and `pull_logs` is refused.
    #[serde(default)]
    pub log_path: Option<PathBuf>,
    #[serde(default = "default_log_max")]
    pub log_max_bytes: u64,
    /// The center's artifact signing key (base64, from `GET
    /// /api/v1/artifacts/signing-key`): an `install` whose manifest it does not
    /// verify is refused. Without it the device installs nothing.
    #[serde(default)]
    pub update_public_key: Option<String>,
    /// Program that installs a downloaded artifact, run with the file's path and the
    /// version (no shell). Exit 0: installed; exit 100: installed once the agent
    /// restarts; anything else: failed.
    #[serde(default)]
    pub install_hook: Option<PathBuf>,
    /// Program run with the version after a failed install, to put the old software back.
    #[serde(default)]
    pub rollback_hook: Option<PathBuf>,
    /// File holding the version of the software the device runs (the install hook
    /// writes it): after a restart the install is confirmed by it.
    #[serde(default)]
    pub software_version_file: Option<PathBuf>,
}

fn default_report_interval() -> u64 {
    30
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("data/agent")
}
fn default_output_cap() -> usize {
    64 * 1024
}
fn default_backoff_first() -> u64 {
    500
}
fn default_backoff_cap() -> u64 {
    60
}
fn default_log_max() -> u64 {
    1024 * 1024
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.into(),
            })
        };
        if self.edges.is_empty() {
            return invalid("edges", "name at least one edge");
        }
        if let Some(bad) = self
            .edges
            .iter()
            .find(|e| shared_proto::endpoint::Endpoint::parse(e).is_none())
        {
            return Err(ConfigError::Invalid {
                field: "edges",
                message: format!("{bad:?} is not a wss:// (TLS) or ws:// (plain) URL with a host"),
            });
        }
        // Only TLS edges need the CA: a site of plain ws:// edges may have none.
        if self.ca_file.as_os_str().is_empty() && self.edges.iter().any(|e| e.starts_with("wss://"))
        {
            return invalid(
                "ca_file",
                "required for wss:// edges (the CA their certificates chain to)",
            );
        }
        if self.report_interval_s == 0 {
            return invalid("report_interval_s", "must be at least 1");
        }
        // Both are bounded so a typo cannot silence a device for years.
        if !(1..=3_600_000).contains(&self.backoff_first_ms) {
            return invalid("backoff_first_ms", "must be between 1 and 3600000");
        }
        if !(1..=3_600).contains(&self.backoff_cap_s) {
            return invalid("backoff_cap_s", "must be between 1 and 3600");
        }
        let by_hardware = !self.sn.is_empty() || !self.model.is_empty();
        match (self.device_id.is_empty(), by_hardware) {
            (true, false) => return invalid("device_id", "give device_id, or sn and model"),
            (false, true) => {
                return invalid("device_id", "give device_id, or sn and model, not both")
            }
            (true, true) if self.sn.is_empty() => return invalid("sn", "is required with model"),
            (true, true) if self.model.is_empty() => {
                return invalid("model", "is required with sn")
            }
            _ => {}
        }
        if self.secret.is_empty() {
            return invalid("secret", "is required");
        }
        if let Some(key) = &self.update_public_key {
            if shared_proto::manifest::public_key(key).is_err() {
                return invalid(
                    "update_public_key",
                    "must be base64 of a 32-byte Ed25519 public key (GET /api/v1/artifacts/signing-key)",
                );
            }
        }
        Ok(())
    }

    pub fn report_interval(&self) -> Duration {
        Duration::from_secs(self.report_interval_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(extra: &str) -> AgentConfig {
        let text = format!(
            "device_id = \"1\"\nsecret = \"s\"\nedges = [\"ws://edge:9444/devices\"]\nca_file = \"\"\n{extra}"
        );
        toml::from_str(&text).expect("parses")
    }

    #[test]
    fn reconnect_delays_default_and_stay_within_their_bounds() {
        let defaults = parsed("");
        assert_eq!(
            (defaults.backoff_first_ms, defaults.backoff_cap_s),
            (500, 60)
        );
        assert!(defaults.validate().is_ok());
        for (extra, field) in [
            ("backoff_first_ms = 0", "backoff_first_ms"),
            ("backoff_first_ms = 3600001", "backoff_first_ms"),
            ("backoff_cap_s = 0", "backoff_cap_s"),
            ("backoff_cap_s = 86400", "backoff_cap_s"),
        ] {
            match parsed(extra).validate() {
                Err(ConfigError::Invalid { field: named, .. }) => assert_eq!(named, field),
                other => panic!("{extra}: {other:?}"),
            }
        }
        assert!(parsed("backoff_first_ms = 3600000\nbackoff_cap_s = 3600")
            .validate()
            .is_ok());
    }
}
