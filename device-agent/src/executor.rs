//! Runs commands. A command id runs at most once, even across a restart: its id is
//! written to the state directory before it starts, and later deliveries of the same
//! id get the remembered result (or nothing while it still runs).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use shared_proto::southbound::{Command, CommandResult, Outcome};
use tokio::io::AsyncReadExt;

use crate::config::AgentConfig;

pub struct Executor {
    scripts: std::collections::BTreeMap<String, PathBuf>,
    reboot_hook: Option<PathBuf>,
    output_cap: usize,
    /// Where started command ids are kept across restarts (none for simulated devices).
    journal: Option<PathBuf>,
    started: HashSet<String>,
    results: HashMap<String, CommandResult>,
}

/// What to do with a delivered command.
pub enum Delivery {
    /// New: run it.
    Run,
    /// Seen before and finished: send this result again.
    Repeat(CommandResult),
    /// Seen before, still running or lost to a restart: nothing to do.
    Ignore,
}

#[derive(Debug, Deserialize)]
struct ExecArgs {
    script: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    timeout_s: Option<u64>,
}

fn result(command_id: &str, outcome: Outcome) -> CommandResult {
    CommandResult {
        command_id: command_id.to_string(),
        outcome,
        exit_code: None,
        output: String::new(),
        truncated: false,
        error: None,
        data: serde_json::Value::Null,
    }
}

fn failed(command_id: &str, outcome: Outcome, error: impl Into<String>) -> CommandResult {
    CommandResult {
        error: Some(error.into()),
        ..result(command_id, outcome)
    }
}

impl Executor {
    pub fn new(config: &AgentConfig) -> std::io::Result<Self> {
        std::fs::create_dir_all(&config.state_dir)?;
        let journal = config.state_dir.join("executed-commands");
        let started = std::fs::read_to_string(&journal)
            .map(|text| text.lines().map(str::to_string).collect())
            .unwrap_or_default();
        Ok(Self {
            scripts: config.scripts.clone(),
            reboot_hook: config.reboot_hook.clone(),
            output_cap: config.output_cap_bytes,
            journal: Some(journal),
            started,
            results: HashMap::new(),
        })
    }

    /// An executor that remembers in memory only and runs no programs.
    pub fn in_memory() -> Self {
        Self {
            scripts: std::collections::BTreeMap::new(),
            reboot_hook: None,
            output_cap: 4096,
            journal: None,
            started: HashSet::new(),
            results: HashMap::new(),
        }
    }

    /// Decides about a delivery and, for a new command, records that it started.
    pub fn accept(&mut self, command: &Command) -> Delivery {
        if let Some(r) = self.results.get(&command.command_id) {
            return Delivery::Repeat(r.clone());
        }
        if self.started.contains(&command.command_id) {
            return Delivery::Ignore;
        }
        self.started.insert(command.command_id.clone());
        let Some(journal) = &self.journal else {
            return Delivery::Run;
        };
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(journal)
            .and_then(|mut f| writeln!(f, "{}", command.command_id));
        if let Err(e) = written {
            tracing::warn!(error = %e, "could not record a command id; a restart might repeat it");
        }
        Delivery::Run
    }

    pub fn remember(&mut self, r: &CommandResult) {
        if self.results.len() >= 1000 {
            self.results.clear();
        }
        self.results.insert(r.command_id.clone(), r.clone());
    }

    /// Checks an `exec` against the allow-list; the answer runs without `self`.
    pub fn prepare(
        &self,
        command: &Command,
        default_timeout: Duration,
    ) -> Result<Prepared, Box<CommandResult>> {
        let id = &command.command_id;
        let args: ExecArgs = serde_json::from_value(command.args.clone()).map_err(|e| {
            Box::new(failed(
                id,
                Outcome::Rejected,
                format!("bad exec arguments: {e}"),
            ))
        })?;
        let program = self.scripts.get(&args.script).ok_or_else(|| {
            failed(
                id,
                Outcome::Rejected,
                format!("script {:?} is not allowed on this device", args.script),
            )
        })?;
        Ok(Prepared {
            command_id: id.clone(),
            program: program.clone(),
            args: args.args,
            timeout: args.timeout_s.map_or(default_timeout, Duration::from_secs),
            output_cap: self.output_cap,
        })
    }

    /// Reboots through the hook. Without one the caller restarts the agent.
    pub async fn reboot_hook(&self, command: &Command) -> Option<CommandResult> {
        let hook = self.reboot_hook.as_ref()?;
        let status = tokio::process::Command::new(hook).status().await;
        Some(match status {
            Ok(s) if s.success() => result(&command.command_id, Outcome::Succeeded),
            Ok(s) => failed(
                &command.command_id,
                Outcome::Failed,
                format!("reboot hook exited with {s}"),
            ),
            Err(e) => failed(
                &command.command_id,
                Outcome::Failed,
                format!("reboot hook: {e}"),
            ),
        })
    }

    pub fn succeeded(command_id: &str, data: serde_json::Value) -> CommandResult {
        CommandResult {
            data,
            ..result(command_id, Outcome::Succeeded)
        }
    }

    pub fn rejected(command_id: &str, why: &str) -> CommandResult {
        failed(command_id, Outcome::Rejected, why)
    }

    pub fn failed_with(command_id: &str, why: &str) -> CommandResult {
        failed(command_id, Outcome::Failed, why)
    }

    pub fn expired(command_id: &str) -> CommandResult {
        failed(command_id, Outcome::Expired, "arrived after its deadline")
    }
}

/// An allowed `exec`, ready to run: the program, its arguments (no shell), a timeout
/// and an output cap.
pub struct Prepared {
    command_id: String,
    program: PathBuf,
    args: Vec<String>,
    timeout: Duration,
    output_cap: usize,
}

impl Prepared {
    pub async fn run(self) -> CommandResult {
        let id = &self.command_id;
        let child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                return failed(
                    id,
                    Outcome::Failed,
                    format!("could not start {}: {e}", self.program.display()),
                )
            }
        };
        let cap = self.output_cap;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let run = async {
            // Both pipes are read together and to the end, keeping at most `cap`
            // bytes of each: a program that writes more than the pipe holds, or
            // fills stderr while stdout is read, never blocks and so never times out.
            let (out, err) = tokio::join!(capped(stdout, cap), capped(stderr, cap));
            let status = child.wait().await;
            (out, err, status)
        };
        match tokio::time::timeout(self.timeout, run).await {
            Err(_) => failed(
                id,
                Outcome::TimedOut,
                format!("still running after {} s; killed", self.timeout.as_secs()),
            ),
            Ok(((mut out, out_cut), (err, err_cut), status)) => {
                out.extend_from_slice(&err);
                let truncated = out_cut || err_cut || out.len() > cap;
                out.truncate(cap);
                let code = status.ok().and_then(|s| s.code());
                CommandResult {
                    outcome: if code == Some(0) {
                        Outcome::Succeeded
                    } else {
                        Outcome::Failed
                    },
                    exit_code: code,
                    output: String::from_utf8_lossy(&out).into_owned(),
                    truncated,
                    ..result(id, Outcome::Failed)
                }
            }
        }
    }
}

/// Everything `pipe` yields until it ends, keeping the first `cap` bytes and whether
/// more came.
async fn capped<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>, cap: usize) -> (Vec<u8>, bool) {
    let Some(mut pipe) = pipe else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut cut = false;
    let mut chunk = [0u8; 8192];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return (kept, cut),
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                let take = n.min(room);
                kept.extend_from_slice(&chunk[..take]);
                cut |= take < n;
            }
        }
    }
}
