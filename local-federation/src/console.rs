//! What the user sees: plain lines, a live line that rewrites itself on a terminal,
//! and the welcome text with commands to paste.
//!
//! Writes to stdout ignore errors on purpose: a closed stdout (a pipe whose reader
//! went away) must not abort the run half-way, with children left to stop.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Erases the current terminal line: the live line is redrawn in place.
const CLEAR_LINE: &str = "\r\x1b[K";

/// How often progress shows when stdout is not a terminal.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(10);

pub struct Console {
    tty: bool,
    /// When progress last showed as a plain line.
    last_progress: Mutex<Instant>,
}

impl Console {
    pub fn new() -> Self {
        Self {
            tty: std::io::stdout().is_terminal(),
            last_progress: Mutex::new(Instant::now()),
        }
    }

    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// A line of its own, in place of the live line if one is showing.
    pub fn say(&self, text: impl AsRef<str>) {
        let mut out = std::io::stdout().lock();
        if self.tty {
            let _ = write!(out, "{CLEAR_LINE}");
        }
        let _ = writeln!(out, "{}", text.as_ref());
        let _ = out.flush();
    }

    /// The live line: redrawn in place on a terminal, a plain line otherwise.
    pub fn live(&self, text: impl AsRef<str>) {
        if !self.tty {
            return self.say(text);
        }
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{CLEAR_LINE}{}", text.as_ref());
        let _ = out.flush();
    }

    /// Progress of a long step: redrawn in place on a terminal; elsewhere (a log
    /// file) a plain line now and then, so that a long step is not silent.
    pub fn progress(&self, text: impl AsRef<str>) {
        if self.tty {
            return self.live(text);
        }
        let mut last = self.last_progress.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= PLAIN_PROGRESS_EVERY {
            *last = Instant::now();
            self.say(text);
        }
    }
}

/// An edge as the welcome text shows it.
pub struct EdgeView {
    pub name: String,
    pub api_url: String,
    pub devices_url: String,
    pub devices: usize,
}

/// Everything the welcome text shows.
pub struct Welcome<'a> {
    pub center_url: &'a str,
    pub link_url: &'a str,
    pub ca: &'a Path,
    pub password: &'a str,
    pub logs: &'a Path,
    pub state_file: &'a Path,
    pub edges: Vec<EdgeView>,
    pub a_device: Option<&'a str>,
    pub group_all: &'a str,
}

impl Welcome<'_> {
    pub fn render(&self) -> String {
        let ca = shell_quote(&self.ca.display().to_string());
        let mut lines = vec![
            String::new(),
            format!("center      {}", self.center_url),
            format!("edge link   {}", self.link_url),
            format!("CA file     {}", self.ca.display()),
            format!(
                "admin       user admin, password {} (the same at every edge's site API)",
                self.password
            ),
            format!("logs        {}", self.logs.display()),
            format!(
                "state       {} (ids and secrets, mode 0600)",
                self.state_file.display()
            ),
        ];
        for e in &self.edges {
            lines.push(format!(
                "{:<11} site API {}, devices {} ({} simulated)",
                e.name, e.api_url, e.devices_url, e.devices
            ));
        }
        let auth = r#"-H "Authorization: Bearer $TOKEN""#;
        let json = "-H 'content-type: application/json'";
        lines.push(String::new());
        lines.push("Try it (bash, with curl and jq):".into());
        lines.push(format!("  CA={ca}; U={}", self.center_url));
        lines.push(format!(
            r#"  TOKEN=$(curl -s --cacert "$CA" $U/api/v1/auth/login {json} -d '{{"username":"admin","password":"{}"}}' | jq -r .data.token)"#,
            self.password
        ));
        lines.push(format!(
            r#"  curl -s --cacert "$CA" "$U/api/v1/devices?per_page=5" {auth} | jq"#
        ));
        if let Some(device) = self.a_device {
            lines.push(format!(
                r#"  curl -s --cacert "$CA" $U/api/v1/devices/{device}/commands {auth} {json} -d '{{"name":"get_status","timeout_s":10,"wait":true}}' | jq"#
            ));
        }
        lines.push(format!(
            r#"  B=$(curl -s --cacert "$CA" $U/api/v1/groups/{}/commands {auth} {json} -d '{{"name":"get_status","timeout_s":30}}' | jq -r .data.batch_id); sleep 1; curl -s --cacert "$CA" $U/api/v1/batches/$B {auth} | jq"#,
            self.group_all
        ));
        lines.push(String::new());
        lines.join("\n")
    }
}

/// `s` as one shell word.
fn shell_quote(s: &str) -> String {
    let plain = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:,@%".contains(c));
    if plain && !s.is_empty() {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
