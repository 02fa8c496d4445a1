//! The child processes: each writes to its own log file, runs in its own process
//! group (so a Ctrl-C at the terminal reaches only this tool, which then stops the
//! children in order), and is stopped by its own PID, never by name.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::error::Error;

/// How many log lines a failure shows.
const TAIL_LINES: usize = 20;

pub struct Process {
    pub name: String,
    pub log: PathBuf,
    pid: Pid,
    child: Child,
    exit: Option<ExitStatus>,
}

impl Process {
    /// Starts `command` with its output going to `log`. The previous run's log is
    /// kept as `NAME.log.1`.
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> Result<Self, Error> {
        if log.exists() {
            let mut previous = log.as_os_str().to_owned();
            previous.push(".1");
            std::fs::rename(&log, previous)
                .map_err(Error::io(format!("keeping the previous {}", log.display())))?;
        }
        let out = std::fs::File::create(&log)
            .map_err(Error::io(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(Error::io(format!("opening {}", log.display())))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            // The last resort if this tool fails without stopping its children.
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::io(format!("starting {name}")))?;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
            .ok_or_else(|| Error::Io {
                context: format!("starting {name}"),
                source: std::io::Error::other("it exited at once"),
            })?;
        Ok(Self {
            name: name.to_string(),
            log,
            pid,
            child,
            exit: None,
        })
    }

    /// How it exited, if it did; never blocks.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
            }
        }
        self.exit
    }

    /// An error about this process, with the end of its log.
    pub fn failure(&self, problem: impl Into<String>) -> Error {
        Error::Process {
            name: self.name.clone(),
            problem: problem.into(),
            log: self.log.clone(),
            tail: self.tail(),
        }
    }

    /// The failure to report when it has exited (`None` while it runs).
    pub fn exited(&mut self, doing: &str) -> Option<Error> {
        let status = self.exit_status()?;
        Some(self.failure(format!("exited {doing} ({status})")))
    }

    /// The last lines of its log, indented. Progress lines rewritten with `\r` show
    /// as their last version.
    pub fn tail(&self) -> String {
        let text = match std::fs::read(&self.log) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => return format!("  (cannot read the log: {e})"),
        };
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.rsplit('\r').next().unwrap_or(l))
            .filter(|l| !l.trim().is_empty())
            .collect();
        let start = lines.len().saturating_sub(TAIL_LINES);
        if lines.is_empty() {
            return "  (the log is empty)".into();
        }
        lines[start..]
            .iter()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until its log has a line starting with `prefix`, and answers the rest of
    /// that line: the nodes print where they listen once they do.
    pub async fn announced(&mut self, prefix: &str, deadline: Instant) -> Result<String, Error> {
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(rest) = text.lines().find_map(|l| l.strip_prefix(prefix)) {
                return Ok(rest.trim().to_string());
            }
            if let Some(e) = self.exited("while starting") {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(self.failure(format!("did not print `{prefix}…` in time")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn terminate(&mut self) {
        // Only a child not yet reaped: until then its PID cannot belong to anyone else.
        if self.exit_status().is_none() {
            let _ = kill(self.pid, Signal::SIGTERM);
        }
    }

    async fn kill_now(&mut self) {
        let _ = self.child.start_kill();
        if let Ok(status) = self.child.wait().await {
            self.exit = Some(status);
        }
    }
}

/// Stops `processes` together: SIGTERM to each, then SIGKILL to whatever still runs
/// after `grace`. Answers the names of those that had to be killed.
pub async fn stop_all(processes: &mut [Process], grace: Duration) -> Vec<String> {
    for p in processes.iter_mut() {
        p.terminate();
    }
    let deadline = Instant::now() + grace;
    let mut killed = Vec::new();
    for p in processes.iter_mut() {
        while p.exit_status().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if p.exit_status().is_none() {
            p.kill_now().await;
            killed.push(p.name.clone());
        }
    }
    killed
}
