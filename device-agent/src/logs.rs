//! The agent's own log file, and `pull_logs`. The file rotates at a size cap, keeping
//! one older file (`<path>.1`), so the agent's disk use stays bounded. `pull_logs`
//! sends the newest part of both files, as much as the edge accepts, to the edge's
//! site API with the device's own credentials.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use shared_proto::southbound::{Command, CommandResult, LogUpload};

use crate::executor::Executor;

/// A log file that rotates before it would grow past `max_bytes`.
pub struct LogFile {
    path: PathBuf,
    max_bytes: u64,
    open: Mutex<(File, u64)>,
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

fn append(path: &Path) -> io::Result<(File, u64)> {
    let file = File::options().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

impl LogFile {
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1024),
            open: Mutex::new(append(path)?),
        })
    }
}

/// One `write` is one formatted log line, so rotation never splits a line.
impl Write for &LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.1 > 0 && open.1 + buf.len() as u64 > self.max_bytes {
            std::fs::rename(&self.path, rotated(&self.path))?;
            *open = append(&self.path)?;
        }
        open.0.write_all(buf)?;
        open.1 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0.flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogFile {
    type Writer = &'a LogFile;
    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

/// The newest `cap` bytes of the rotated file followed by the current one, starting
/// at a line boundary when cut; and whether anything was cut.
pub fn collect(path: &Path, cap: u64) -> io::Result<(Vec<u8>, bool)> {
    let mut all = match std::fs::read(rotated(path)) {
        Ok(older) => older,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    all.extend_from_slice(&std::fs::read(path)?);
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    if all.len() <= cap {
        return Ok((all, false));
    }
    let mut tail = all.split_off(all.len() - cap);
    if let Some(newline) = tail.iter().position(|b| *b == b'\n') {
        tail.drain(..=newline);
    }
    Ok((tail, true))
}

/// A few lines that stand in for a simulated device's log.
pub fn synthetic(device_id: &str) -> Vec<u8> {
    (1..=20)
        .map(|n| format!("simulated device {device_id}: log line {n}\n"))
        .collect::<String>()
        .into_bytes()
}

/// Where to send the upload: the host the agent dials for its edge, with the
/// scheme, port and path the edge named.
pub fn upload_url(edge_host: &str, upload: &LogUpload) -> String {
    crate::http::url(edge_host, &upload.scheme, upload.port, &upload.path)
}

/// A `pull_logs` ready to send: the log (or a simulated one) and where it goes.
pub struct Pull {
    pub upload: LogUpload,
    pub body: Vec<u8>,
    pub truncated: bool,
}

/// Reads what `command` asks for; the error is the command's result.
pub fn prepare(
    command: &Command,
    log_path: Option<&Path>,
    simulated_device: Option<&str>,
) -> Result<Pull, Box<CommandResult>> {
    let id = &command.command_id;
    let upload: LogUpload = command
        .args
        .get("upload")
        .cloned()
        .and_then(|u| serde_json::from_value(u).ok())
        .ok_or_else(|| {
            Box::new(Executor::rejected(
                id,
                "args.upload is missing or malformed",
            ))
        })?;
    let (body, truncated) = match (simulated_device, log_path) {
        (Some(device), _) => (synthetic(device), false),
        (None, Some(path)) => collect(path, upload.max_bytes).map_err(|e| {
            Box::new(Executor::failed_with(
                id,
                &format!("reading {}: {e}", path.display()),
            ))
        })?,
        (None, None) => {
            return Err(Box::new(Executor::rejected(
                id,
                "this device keeps no log file (log_path is not configured)",
            )))
        }
    };
    Ok(Pull {
        upload,
        body,
        truncated,
    })
}

/// What a device needs to upload: its credentials and the CA of its edges.
#[derive(Clone)]
pub struct Uploader {
    pub device_id: String,
    pub secret: String,
    pub ca_file: Option<PathBuf>,
}

impl Uploader {
    /// Sends `body` and answers the command's result.
    pub async fn send(
        &self,
        command_id: &str,
        url: &str,
        body: Vec<u8>,
        truncated: bool,
    ) -> CommandResult {
        let bytes = body.len();
        match self.post(url, body).await {
            Ok(()) => CommandResult {
                truncated,
                ..Executor::succeeded(command_id, serde_json::json!({"uploaded_bytes": bytes}))
            },
            Err(e) => Executor::failed_with(command_id, &format!("uploading the log: {e}")),
        }
    }

    async fn post(&self, url: &str, body: Vec<u8>) -> Result<(), String> {
        let client = crate::http::client(self.ca_file.as_deref(), Some(Duration::from_secs(60)))?;
        let response = client
            .post(url)
            .basic_auth(&self.device_id, Some(&self.secret))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            return Ok(());
        }
        let status = response.status();
        let answer: serde_json::Value = response.json().await.unwrap_or_default();
        Err(format!("the edge answered {status}: {}", answer["message"]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_rotates_at_its_cap_and_keeps_one_older_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("logs/agent.log");
        let log = LogFile::open(&path, 1024).expect("open");
        let line = [b'x'; 99];
        for _ in 0..25 {
            (&log)
                .write_all(&[&line[..], b"\n"].concat())
                .expect("write");
        }
        let current = std::fs::metadata(&path).expect("current").len();
        let older = std::fs::metadata(rotated(&path)).expect("rotated").len();
        assert!(current <= 1024 && older <= 1024, "{current} {older}");
        assert_eq!(
            current + older,
            1500,
            "rotation keeps the newest 1,500 bytes"
        );
    }

    #[test]
    fn collect_keeps_the_newest_whole_lines_under_the_cap() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("agent.log");
        std::fs::write(rotated(&path), "old 1\nold 2\n").expect("older");
        std::fs::write(&path, "new 1\nnew 2\n").expect("current");
        let (all, cut) = collect(&path, 1000).expect("all");
        assert_eq!(
            (all.as_slice(), cut),
            (&b"old 1\nold 2\nnew 1\nnew 2\n"[..], false)
        );
        let (tail, cut) = collect(&path, 14).expect("tail");
        assert_eq!((tail.as_slice(), cut), (&b"new 1\nnew 2\n"[..], true));
    }

    #[test]
    fn upload_urls_use_the_dialled_host() {
        let upload = LogUpload {
            scheme: "https".into(),
            port: 9443,
            path: "/api/v1/uploads/logs/7".into(),
            max_bytes: 10,
        };
        assert_eq!(
            upload_url("edge-a", &upload),
            "https://edge-a:9443/api/v1/uploads/logs/7"
        );
        assert_eq!(
            upload_url("::1", &upload),
            "https://[::1]:9443/api/v1/uploads/logs/7"
        );
    }
}
