//! The real binary: first start prints what a newcomer needs, SIGTERM stops it
//! cleanly, a second start reuses the state, and `--help` documents every setting.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_center-cloud");

struct Running {
    child: Child,
    lines: Vec<String>,
    port: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path, database_url: &str) -> Running {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--link-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir)
        .args(["--database-url", database_url, "--workers", "1"])
        .env("CENTER_LOG", "warn")
        .env_remove("CENTER_ADMIN_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    let mut port = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if let Some(rest) = line.strip_prefix("center listening on https://127.0.0.1:") {
            port = rest.trim().parse().expect("port");
        }
        let done = line.starts_with("development CA");
        lines.push(line);
        if done {
            break;
        }
    }
    assert!(port > 0, "{lines:?}");
    Running { child, lines, port }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..200 {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the center did not stop within 10 s of SIGTERM");
}

#[tokio::test]
async fn first_start_prints_credentials_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().expect("dir");
    let url = crate::helpers::fresh_database(dir.path()).await;
    let mut first = start(dir.path(), &url);
    let all = first.lines.join("\n");
    let password = all
        .lines()
        .find_map(|l| l.split("with password ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the generated admin password is printed: {all}"))
        .to_string();
    assert!(all.contains(&format!(
        "development CA certificate: {}",
        dir.path().join("tls/ca.crt").display()
    )));

    let pem = std::fs::read(dir.path().join("tls/ca.crt")).expect("ca");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .use_rustls_tls()
        .build()
        .expect("client");
    let login = |port: u16, password: String| {
        let client = client.clone();
        async move {
            client
                .post(format!("https://localhost:{port}/api/v1/auth/login"))
                .json(&serde_json::json!({"username": "admin", "password": password}))
                .send()
                .await
                .expect("sent")
                .status()
                .as_u16()
        }
    };
    assert_eq!(login(first.port, password.clone()).await, 200);

    let status = Command::new("kill")
        .args(["-TERM", &first.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = wait_exit(&mut first.child);
    assert!(exit.success(), "graceful stop exits 0, got {exit:?}");

    let second = start(dir.path(), &url);
    assert!(
        !second.lines.join("\n").contains("with password"),
        "the admin exists already"
    );
    assert_eq!(
        std::fs::read(dir.path().join("tls/ca.crt")).expect("ca"),
        pem,
        "the CA is reused"
    );
    assert_eq!(
        login(second.port, password).await,
        200,
        "state survived the restart"
    );
}

#[test]
fn help_lists_every_setting_with_its_variable() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--link-listen",
        "--data-dir",
        "--database-url",
        "--config",
        "--worker-id",
        "--tls-cert",
        "--tls-key",
        "--insecure-http",
        "--admin-password",
        "--token-ttl-s",
        "--body-limit",
        "--import-limit",
        "--workers",
        "--log",
        "--db-max-connections",
        "--tls-hosts",
    ] {
        assert!(text.contains(flag), "{flag} in --help");
    }
    assert!(text.contains("CENTER_DATABASE_URL") && text.contains("CENTER_ADMIN_PASSWORD"));
    assert!(text.contains("CENTER_TOKEN_TTL_S") && text.contains("CENTER_IMPORT_LIMIT"));
    assert!(text.contains("default: 127.0.0.1:8443"));
}

#[test]
fn a_bad_config_file_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "listen = 5\n").expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("c.toml") && err.contains("listen"), "{err}");
}

#[test]
fn environment_variables_are_read() {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("CENTER_WORKER_ID", "0")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("worker id 0"), "{err}");
}

#[tokio::test]
async fn a_stopped_center_leaves_no_task_of_its_own_running() {
    let dir = tempfile::tempdir().expect("dir");
    let mut settings = center_cloud::Settings::with_data_dir(dir.path());
    settings.node.listen = "127.0.0.1:0".parse().expect("addr");
    settings.node.database_url = crate::helpers::fresh_database(dir.path()).await;
    settings.node.admin_password = Some(crate::helpers::ADMIN_PASSWORD.into());
    settings.link_listen = "127.0.0.1:0".parse().expect("addr");
    let app = center_cloud::Application::build(settings)
        .await
        .expect("starts");
    let loops = app.served.loops.clone();
    // Account watch, log checkpoints (SQLite only), compaction, the writer of events
    // nobody waits for, event expiry, the worker id lease, the shared log and
    // presence watchers, the sweep of abandoned artifact uploads, the rollout driver
    // and the edge link endpoint.
    let checkpoints = usize::from(!crate::helpers::on_mariadb());
    assert_eq!(loops.running(), 10 + checkpoints);
    let (links, handle) = (app.links.clone(), app.served.handle());
    let served = tokio::spawn(app.served.run_until_stopped());
    links.shutdown();
    links.ended().await;
    handle.stop(true).await;
    served.await.expect("joined").expect("served");
    assert_eq!(loops.running(), 0, "every loop ended with the center");
}
