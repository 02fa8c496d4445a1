//! What a later run needs from the first: the admin password, the edges' and devices'
//! ids and secrets (shown only once by the center), the group every device is in.
//! Kept in one JSON file that only the owner may read, since it holds secrets.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::Error;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub admin_password: String,
    /// The group `all`, once created.
    #[serde(default)]
    pub group_all: Option<String>,
    #[serde(default)]
    pub edges: Vec<EdgeRecord>,
    #[serde(default)]
    pub devices: Vec<DeviceRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeRecord {
    pub name: String,
    pub id: String,
    pub worker_id: u64,
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub sn: String,
    pub id: String,
    pub secret: String,
    /// Id of the home edge.
    pub edge_id: String,
}

impl State {
    /// A fresh state with a new random admin password.
    pub fn new() -> Self {
        let admin_password = rand::thread_rng()
            .sample_iter(rand::distributions::Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        Self {
            admin_password,
            group_all: None,
            edges: Vec::new(),
            devices: Vec::new(),
        }
    }

    /// The devices homed at `edge_id`.
    pub fn devices_of<'a>(&'a self, edge_id: &'a str) -> impl Iterator<Item = &'a DeviceRecord> {
        self.devices.iter().filter(move |d| d.edge_id == edge_id)
    }
}

#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state, or `None` on a first run.
    pub fn load(&self) -> Result<Option<State>, Error> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::State {
                    path: self.path.clone(),
                    message: e.to_string(),
                })
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::State {
                path: self.path.clone(),
                message: format!(
                    "{e}; move it away to start a new federation in a new data directory"
                ),
            })
    }

    /// Saves `state` whole: written beside the file, then renamed over it, so a crash
    /// leaves either the old or the new state, never half of one.
    pub fn save(&self, state: &State) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(state).map_err(|e| Error::State {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        write_private(&self.path, text.as_bytes())
    }
}

/// Writes the `device_id,secret` file that `device-agent simulate` reads.
pub fn write_credentials<'a>(
    path: &Path,
    devices: impl Iterator<Item = &'a DeviceRecord>,
) -> Result<(), Error> {
    let mut text = String::from("device_id,secret\n");
    for d in devices {
        text.push_str(&d.id);
        text.push(',');
        text.push_str(&d.secret);
        text.push('\n');
    }
    write_private(path, text.as_bytes())
}

/// Replaces `path` with `bytes`, readable by the owner only (mode 0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".new");
    let temp = PathBuf::from(temp);
    let context = || format!("writing {}", path.display());
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(Error::io(context()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(Error::io(context()))?;
    std::fs::rename(&temp, path).map_err(Error::io(context()))
}
