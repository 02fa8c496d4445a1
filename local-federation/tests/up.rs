//! Runs the real `local-federation --once` twice on one data directory, with the
//! workspace's own center, edge and agent binaries: the first run builds a
//! federation and sends a group command through it, the second reuses it.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Far more than a run takes (a few seconds), so only a hang trips it.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
const DEVICES: usize = 6;

/// Where cargo built the workspace's binaries: this test runs from
/// `target/<profile>/deps/`, and the binaries sit one level up.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps")
        .to_path_buf();
    for name in ["center-cloud", "edge-cloud", "device-agent"] {
        assert!(
            dir.join(name).is_file(),
            "{} is missing: build the workspace first (`cargo build --workspace`, or run the \
             tests with `cargo nextest run --workspace`)",
            dir.join(name).display()
        );
    }
    dir
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// One `--once` run, its output kept in files (a pipe could fill up and stall it).
fn run_once(data: &Path, bin: &Path, n: usize) -> Run {
    let out_path = data.with_extension(format!("stdout.{n}"));
    let err_path = data.with_extension(format!("stderr.{n}"));
    let out = std::fs::File::create(&out_path).expect("stdout file");
    let err = std::fs::File::create(&err_path).expect("stderr file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_local-federation"))
        .arg("--bin-dir")
        .arg(bin)
        .arg("--data-dir")
        .arg(data)
        .args([
            "--port-base",
            "0",
            "--devices",
            &DEVICES.to_string(),
            "--once",
        ])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("starting local-federation");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for local-federation") {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            // SIGTERM first, so that it stops the processes it started.
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
            let _ = kill(pid, Signal::SIGTERM);
            std::thread::sleep(Duration::from_secs(20));
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "local-federation did not finish within {} s; its output:\n{}\n{}",
                RUN_TIMEOUT.as_secs(),
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Run {
        status,
        stdout: std::fs::read_to_string(&out_path).expect("its stdout"),
        stderr: std::fs::read_to_string(&err_path).expect("its stderr"),
    }
}

/// Command lines of the processes still running with `dir` in them.
fn survivors(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            if line.contains(&dir) {
                found.push(line);
            }
        }
    }
    found
}

fn state(data: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(data.join("state.json")).expect("the state file");
    serde_json::from_str(&text).expect("the state file is JSON")
}

fn ids(state: &serde_json::Value, key: &str) -> Vec<String> {
    state[key]
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| e["id"].as_str().expect("an id").to_string())
        .collect()
}

#[test]
fn builds_a_federation_then_reuses_it() {
    use std::os::unix::fs::PermissionsExt;

    let bin = bin_dir();
    let scratch = tempfile::tempdir().expect("a temp dir");
    let data = scratch.path().join("federation");

    let first = run_once(&data, &bin, 1);
    let context = format!("stdout:\n{}\nstderr:\n{}", first.stdout, first.stderr);
    assert!(first.status.success(), "first run failed\n{context}");
    for expected in [
        "new federation in",
        "registered edge-1",
        "registered edge-2",
        "created the group `all`",
        &format!("registered {DEVICES} devices"),
        &format!("all {DEVICES} devices online at the center"),
        &format!("{DEVICES}/{DEVICES} get_status succeeded"),
        &format!(
            "summary: edges online 2/2 | devices online {DEVICES}/{DEVICES} | commands done {DEVICES}"
        ),
        "stopped",
    ] {
        assert!(first.stdout.contains(expected), "no `{expected}`\n{context}");
    }
    let saved = state(&data);
    let mode = std::fs::metadata(data.join("state.json"))
        .expect("the state file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the state file holds secrets");
    let edges = ids(&saved, "edges");
    let devices = ids(&saved, "devices");
    assert_eq!(edges.len(), 2);
    assert_eq!(devices.len(), DEVICES);
    let password = saved["admin_password"].as_str().expect("a password");
    assert!(
        first.stdout.contains(password),
        "the password is printed\n{context}"
    );
    for (log, line) in [
        ("center", "center stopped"),
        ("edge-1", "edge stopped"),
        ("edge-2", "edge stopped"),
    ] {
        let text = std::fs::read_to_string(data.join("logs").join(format!("{log}.log")))
            .expect("a log per process");
        assert!(
            text.contains(line),
            "{log} did not stop gracefully:\n{text}"
        );
    }
    assert_eq!(
        survivors(&data),
        Vec::<String>::new(),
        "processes left running"
    );

    let second = run_once(&data, &bin, 2);
    let context = format!("stdout:\n{}\nstderr:\n{}", second.stdout, second.stderr);
    assert!(second.status.success(), "second run failed\n{context}");
    assert!(
        second.stdout.contains("reusing the federation"),
        "{context}"
    );
    for id in &edges {
        assert!(
            second.stdout.contains(id.as_str()),
            "edge {id} not reused\n{context}"
        );
    }
    assert!(
        !second.stdout.contains("registered"),
        "registered again\n{context}"
    );
    assert!(
        second.stdout.contains(&format!(
            "summary: edges online 2/2 | devices online {DEVICES}/{DEVICES} | commands done {}",
            2 * DEVICES
        )),
        "{context}"
    );
    let reused = state(&data);
    assert_eq!(ids(&reused, "edges"), edges);
    assert_eq!(ids(&reused, "devices"), devices);
    assert_eq!(reused["admin_password"], saved["admin_password"]);
    assert_eq!(
        survivors(&data),
        Vec::<String>::new(),
        "processes left running"
    );
}
