//! `install`: a software update from the agent's side (`docs/rollouts.md`).
//!
//! 1. The signed manifest must verify with `update_public_key` and name the very
//!    artifact, version, size and digest the command carries; nothing is
//!    downloaded otherwise.
//! 2. The file is downloaded from the edge (its site API, with the device's own
//!    credentials) into `state_dir/downloads/<id>.part`, resumed with a `Range`
//!    request after a break, waiting as the edge says (`503` + `Retry-After`) while
//!    the edge fetches it from the center. Its size and SHA-256 must be the
//!    manifest's.
//! 3. `install_hook` runs with the file's path and the version as arguments (no
//!    shell). Exit 0: installed. Exit [`RESTART_EXIT`]: installed, restart the agent
//!    (or the device); the new process confirms by the version it reads from
//!    `software_version_file`. Any other exit, or a confirmation that finds another
//!    version: failed, and `rollback_hook` runs with the version.
//!
//! Progress travels as the install stages of `shared_proto::southbound::InstallStage`.
//! Simulated devices download and verify like real ones, then succeed or fail at
//! random (`--install-fail-pct`) without running anything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use ring::digest::{Context, SHA256};
use shared_proto::manifest;
use shared_proto::southbound::{Command, CommandProgress, CommandResult, Install, InstallStage};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::executor::Executor;

/// The exit code by which `install_hook` asks for a restart to finish the install.
pub const RESTART_EXIT: i32 = 100;
/// Attempts at the download before the install fails.
const DOWNLOAD_ATTEMPTS: u32 = 30;
/// Longest a hook may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(1800);
/// What the agent keeps of an install waiting for its restart.
pub const PENDING_FILE: &str = "install-pending";

/// What an install sends the session: progress, the end, or a restart to finish.
#[derive(Debug)]
pub enum Work {
    Progress(CommandProgress),
    /// The device runs this version now (reported in its status from then on).
    Installed(String),
    Done(CommandResult),
    /// Installed; the agent restarts and confirms (the pending file says what).
    Restart,
}

/// How a device installs.
#[derive(Debug, Clone)]
pub struct Installer {
    pub device_id: String,
    pub secret: String,
    /// The edges' CA, for `https` downloads.
    pub ca_file: Option<PathBuf>,
    /// The host of the edge the agent is connected to.
    pub edge_host: String,
    pub public_key: Option<String>,
    pub install_hook: Option<PathBuf>,
    pub rollback_hook: Option<PathBuf>,
    /// Where the installed software's version is read after a restart.
    pub version_file: Option<PathBuf>,
    /// `state_dir`; `None` for a simulated device, which keeps nothing on disk.
    pub state_dir: Option<PathBuf>,
    /// Simulated devices: the share of installs that fail, in percent.
    pub fail_pct: Option<u8>,
}

/// The install a restart left to confirm.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    pub command_id: String,
    pub version: String,
}

impl Installer {
    /// Runs `command` to its end, sending progress and the result (or a restart) to
    /// `out`.
    pub async fn run(self, command: Command, out: mpsc::Sender<Work>) {
        let id = command.command_id.clone();
        let mut end = match self.install(&command, &out).await {
            Ok(end) => end,
            Err(result) => Work::Done(*result),
        };
        if let Work::Done(r) = &mut end {
            r.fit_frame();
        }
        if let Work::Done(r) = &end {
            tracing::info!(command = %id, outcome = ?r.outcome, error = ?r.error, "install ended");
        }
        let _ = out.send(end).await;
    }

    async fn install(
        &self,
        command: &Command,
        out: &mpsc::Sender<Work>,
    ) -> Result<Work, Box<CommandResult>> {
        let id = &command.command_id;
        let rejected = |why: String| Box::new(Executor::rejected(id, &why));
        let failed = |why: String| Box::new(Executor::failed_with(id, &why));
        let args: Install = serde_json::from_value(command.args.clone())
            .map_err(|e| rejected(format!("bad install arguments: {e}")))?;
        self.check_manifest(&args).map_err(rejected)?;
        let download = args
            .download
            .as_ref()
            .ok_or_else(|| rejected("the edge gave no download location".into()))?;
        let url = crate::http::url(
            &self.edge_host,
            &download.scheme,
            download.port,
            &download.path,
        );
        let progress = |stage: InstallStage, percent: u8| {
            let out = out.clone();
            let id = id.clone();
            async move {
                let _ = out
                    .send(Work::Progress(CommandProgress {
                        command_id: id,
                        progress: stage.progress(percent),
                        message: format!("{stage:?} {percent}%").to_lowercase(),
                    }))
                    .await;
            }
        };
        progress(InstallStage::Downloading, 0).await;
        let file = self.fetch(&url, &args, &progress).await.map_err(failed)?;
        if let Some(pct) = self.fail_pct {
            let fails = rand::random::<u8>() % 100 < pct;
            if !fails {
                let _ = out.send(Work::Installed(args.version.clone())).await;
            }
            return Ok(Work::Done(if fails {
                Executor::failed_with(id, "simulated install failure")
            } else {
                Executor::succeeded(id, serde_json::json!({"version": args.version}))
            }));
        }
        let Some(file) = file else {
            return Err(failed("nothing was kept of the download".into()));
        };
        progress(InstallStage::Installing, 0).await;
        let hook = self
            .install_hook
            .as_ref()
            .ok_or_else(|| rejected("this device has no install_hook".into()))?;
        let path = file.display().to_string();
        let ran = run_hook(hook, &[path.as_str(), args.version.as_str()]).await;
        let _ = tokio::fs::remove_file(&file).await;
        match ran {
            Ok((0, output)) => {
                let _ = out.send(Work::Installed(args.version.clone())).await;
                Ok(Work::Done(CommandResult {
                    output,
                    exit_code: Some(0),
                    ..Executor::succeeded(id, serde_json::json!({"version": args.version}))
                }))
            }
            Ok((RESTART_EXIT, _)) => {
                progress(InstallStage::Rebooting, 0).await;
                self.leave_pending(id, &args.version).map_err(failed)?;
                Ok(Work::Restart)
            }
            Ok((code, output)) => {
                let why = format!("the install hook exited with {code}");
                Ok(Work::Done(
                    self.rolled_back(id, &args.version, &why, output, Some(code))
                        .await,
                ))
            }
            Err(e) => Ok(Work::Done(
                self.rolled_back(id, &args.version, &e, String::new(), None)
                    .await,
            )),
        }
    }

    /// The manifest verifies with the device's key and says what the command says.
    fn check_manifest(&self, args: &Install) -> Result<(), String> {
        let Some(key) = &self.public_key else {
            if self.fail_pct.is_some() {
                return Ok(());
            }
            return Err("this device has no update_public_key to verify the artifact with".into());
        };
        let m = manifest::verify(key, &args.manifest, &args.signature)
            .map_err(|e| format!("the artifact's manifest does not verify: {e}"))?;
        if m.id != args.artifact_id
            || m.version != args.version
            || m.size != args.size
            || m.sha256 != args.sha256
        {
            return Err("the install names another artifact than its signed manifest".into());
        }
        Ok(())
    }

    /// Downloads the artifact, resuming what an earlier attempt kept, and checks its
    /// size and digest; answers the file (`None` for a simulated device, which
    /// keeps only the digest).
    async fn fetch<F, Fut>(
        &self,
        url: &str,
        args: &Install,
        progress: &F,
    ) -> Result<Option<PathBuf>, String>
    where
        F: Fn(InstallStage, u8) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let client = crate::http::client(self.ca_file.as_deref(), None)?;
        let part = match &self.state_dir {
            Some(dir) => {
                let downloads = dir.join("downloads");
                tokio::fs::create_dir_all(&downloads)
                    .await
                    .map_err(|e| format!("{}: {e}", downloads.display()))?;
                Some(downloads.join(format!("{}.part", args.artifact_id)))
            }
            None => None,
        };
        let mut sink = Sink::open(part.as_deref(), args.size).await?;
        let mut last_error = String::new();
        for attempt in 1..=DOWNLOAD_ATTEMPTS {
            if sink.have >= args.size {
                break;
            }
            match self
                .download(&client, url, &mut sink, args.size, progress)
                .await
            {
                Ok(()) => continue,
                Err(Retry { wait, why }) => {
                    last_error = why;
                    tracing::debug!(attempt, error = %last_error, "download interrupted");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        if sink.have < args.size {
            return Err(format!("downloading the artifact: {last_error}"));
        }
        let sha256 = sink.finish().await?;
        if sha256 != args.sha256 {
            if let Some(p) = &part {
                let _ = tokio::fs::remove_file(p).await;
            }
            return Err("the downloaded file does not match its digest; it was discarded".into());
        }
        Ok(part)
    }

    /// One request for the rest of the file.
    async fn download<F, Fut>(
        &self,
        client: &reqwest::Client,
        url: &str,
        sink: &mut Sink,
        size: u64,
        progress: &F,
    ) -> Result<(), Retry>
    where
        F: Fn(InstallStage, u8) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut request = client
            .get(url)
            .basic_auth(&self.device_id, Some(&self.secret));
        if sink.have > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={}-", sink.have));
        }
        let response = request
            .send()
            .await
            .map_err(|e| Retry::soon(e.to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            let wait = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(2)
                .clamp(1, 60);
            return Err(Retry {
                wait: Duration::from_secs(wait),
                why: "the edge is fetching the artifact".into(),
            });
        }
        if !status.is_success() {
            let answer: serde_json::Value = response.json().await.unwrap_or_default();
            return Err(Retry::soon(format!(
                "the edge answered {status}: {}",
                answer["message"]
            )));
        }
        if status != reqwest::StatusCode::PARTIAL_CONTENT && sink.have > 0 {
            sink.restart().await.map_err(Retry::soon)?;
        }
        let mut body = response.bytes_stream();
        let mut shown = percent(sink.have, size);
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| Retry::soon(e.to_string()))?;
            if sink.have + piece.len() as u64 > size {
                sink.restart().await.map_err(Retry::soon)?;
                return Err(Retry::soon(
                    "the edge sent more than the artifact's size".into(),
                ));
            }
            sink.write(&piece).await.map_err(Retry::soon)?;
            let now = percent(sink.have, size);
            if now >= shown.saturating_add(10) {
                shown = now;
                progress(InstallStage::Downloading, now).await;
            }
        }
        Ok(())
    }

    fn leave_pending(&self, command_id: &str, version: &str) -> Result<(), String> {
        let dir = self.state_dir.as_ref().ok_or("no state directory")?;
        let pending = Pending {
            command_id: command_id.into(),
            version: version.into(),
        };
        std::fs::write(
            dir.join(PENDING_FILE),
            serde_json::to_vec(&pending).unwrap_or_default(),
        )
        .map_err(|e| format!("recording the install for the restart: {e}"))
    }

    /// Runs `rollback_hook` (if any) after a failed install; the failure, with what
    /// both hooks said.
    async fn rolled_back(
        &self,
        id: &str,
        version: &str,
        why: &str,
        mut output: String,
        code: Option<i32>,
    ) -> CommandResult {
        let mut error = why.to_string();
        if let Some(hook) = &self.rollback_hook {
            match run_hook(hook, &[version]).await {
                Ok((0, said)) => {
                    error.push_str("; rolled back");
                    output.push_str(&said);
                }
                Ok((code, said)) => {
                    error.push_str(&format!("; the rollback hook exited with {code}"));
                    output.push_str(&said);
                }
                Err(e) => error.push_str(&format!("; {e}")),
            }
        }
        CommandResult {
            output,
            exit_code: code,
            ..Executor::failed_with(id, &error)
        }
    }

    /// After a restart: the install this process was restarted to finish, confirmed
    /// by the version the device now runs, or failed (and rolled back).
    pub async fn confirm(&self) -> Option<CommandResult> {
        let dir = self.state_dir.as_ref()?;
        let path = dir.join(PENDING_FILE);
        let text = std::fs::read(&path).ok()?;
        let _ = std::fs::remove_file(&path);
        let pending: Pending = serde_json::from_slice(&text).ok()?;
        let running = self.version_file.as_ref().map(|f| {
            std::fs::read_to_string(f)
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        });
        let id = &pending.command_id;
        Some(match running {
            Some(v) if v != pending.version => {
                let why = format!(
                    "after the restart the device runs {v:?}, not {:?}",
                    pending.version
                );
                self.rolled_back(id, &pending.version, &why, String::new(), None)
                    .await
            }
            _ => Executor::succeeded(
                id,
                serde_json::json!({"version": pending.version, "restarted": true}),
            ),
        })
    }
}

fn percent(have: u64, size: u64) -> u8 {
    if size == 0 {
        return 100;
    }
    u8::try_from(have.saturating_mul(100) / size)
        .unwrap_or(100)
        .min(100)
}

/// A failed download attempt, and how long to wait before the next.
struct Retry {
    wait: Duration,
    why: String,
}

impl Retry {
    fn soon(why: String) -> Self {
        Self {
            wait: Duration::from_secs(1),
            why,
        }
    }
}

/// Where downloaded bytes go: the part file (hashed as it grows), or only the hash.
struct Sink {
    file: Option<(tokio::fs::File, PathBuf)>,
    digest: Context,
    have: u64,
}

impl Sink {
    /// Opens the part file and hashes what it holds (starting over if it holds more
    /// than the file's size).
    async fn open(part: Option<&Path>, size: u64) -> Result<Self, String> {
        let mut digest = Context::new(&SHA256);
        let Some(path) = part else {
            return Ok(Self {
                file: None,
                digest,
                have: 0,
            });
        };
        let err = |e: std::io::Error| format!("{}: {e}", path.display());
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)
            .await
            .map_err(err)?;
        let mut have = file.metadata().await.map_err(err)?.len();
        if have > size {
            file.set_len(0).await.map_err(err)?;
            have = 0;
        }
        // What an earlier attempt kept, hashed a piece at a time.
        let mut buf = vec![0u8; 256 * 1024];
        let mut left = have;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(buf.len()).min(buf.len());
            let n = file.read(&mut buf[..want]).await.map_err(err)?;
            if n == 0 {
                break;
            }
            digest.update(&buf[..n]);
            left -= n as u64;
        }
        let have = have - left;
        file.set_len(have).await.map_err(err)?;
        file.seek(std::io::SeekFrom::Start(have))
            .await
            .map_err(err)?;
        Ok(Self {
            file: Some((file, path.to_path_buf())),
            digest,
            have,
        })
    }

    async fn write(&mut self, piece: &[u8]) -> Result<(), String> {
        if let Some((file, path)) = &mut self.file {
            file.write_all(piece)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        self.digest.update(piece);
        self.have += piece.len() as u64;
        Ok(())
    }

    /// Empties the sink: the edge sent the whole file instead of the rest.
    async fn restart(&mut self) -> Result<(), String> {
        if let Some((file, path)) = &mut self.file {
            let err = |e: std::io::Error| format!("{}: {e}", path.display());
            file.set_len(0).await.map_err(err)?;
            file.seek(std::io::SeekFrom::Start(0)).await.map_err(err)?;
        }
        self.digest = Context::new(&SHA256);
        self.have = 0;
        Ok(())
    }

    /// Flushes the file; answers the hex digest of everything written.
    async fn finish(self) -> Result<String, String> {
        if let Some((file, path)) = self.file {
            file.sync_all()
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(manifest::hex(self.digest.finish().as_ref()))
    }
}

/// Runs a hook with `args` (no shell); its exit code and what it printed.
async fn run_hook(hook: &Path, args: &[&str]) -> Result<(i32, String), String> {
    let child = tokio::process::Command::new(hook)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(HOOK_TIMEOUT, child).await {
        Err(_) => Err(format!(
            "{} ran longer than {} s; killed",
            hook.display(),
            HOOK_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(format!("could not start {}: {e}", hook.display())),
        Ok(Ok(done)) => {
            let mut said = String::from_utf8_lossy(&done.stdout).into_owned();
            said.push_str(&String::from_utf8_lossy(&done.stderr));
            Ok((done.status.code().unwrap_or(-1), said))
        }
    }
}
