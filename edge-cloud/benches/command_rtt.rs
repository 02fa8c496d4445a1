//! Command round trip through a running edge: `POST /api/v1/devices/{id}/commands`
//! with `get_status` and `wait: true`, answered 200 once the device has run it, so
//! one request is operator -> edge -> device -> edge -> operator. Commands go one
//! after another to different connected devices over one kept-alive connection, so
//! the figure is the system's latency, not a client's connection setup.
//!
//! `tests/bench-hub.sh` and `tests/bench-fleet.sh` start the edges and the devices and
//! run this with arguments; `cargo bench` alone has no edge to measure and says so.

// Printing the figures is what a benchmark is for.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// Site API base URL, e.g. https://127.0.0.1:9443.
    #[arg(long)]
    site: Option<String>,
    /// CA certificate of the site API (for https).
    #[arg(long)]
    ca: Option<PathBuf>,
    #[arg(long, default_value = "admin")]
    username: String,
    #[arg(long, env = "BENCH_SITE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// `device_id,secret` CSV; its first `--devices` devices must be connected.
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// How many devices of the file are connected.
    #[arg(long)]
    devices: Option<usize>,
    /// Measured commands, each to the next device spread over the connected ones.
    #[arg(long, default_value_t = 300)]
    commands: usize,
    /// Unmeasured commands first, to open the connection and warm the edge.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Start a command every this many milliseconds (a steady load for a soak) instead
    /// of each as soon as the previous one is answered.
    #[arg(long)]
    every_ms: Option<u64>,
    /// Pick each command's device at random instead of spreading them in order.
    #[arg(long)]
    random: bool,
    /// Also write every measured round trip here (ms, one a line), so the runs against
    /// several edges can be combined.
    #[arg(long)]
    samples: Option<PathBuf>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let Some(site) = args.site.as_deref().map(|s| s.trim_end_matches('/')) else {
        println!(
            "command_rtt: no --site; run it through tests/bench-hub.sh or tests/bench-fleet.sh"
        );
        return Ok(());
    };
    let credentials = args
        .credentials
        .as_ref()
        .context("--credentials is required")?;
    let password = args
        .password
        .as_deref()
        .context("--password (or BENCH_SITE_PASSWORD) is required")?;
    let text = std::fs::read_to_string(credentials)
        .with_context(|| format!("reading {}", credentials.display()))?;
    let mut ids: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(',').map(|(id, _)| id.trim()))
        .collect();
    if let Some(n) = args.devices {
        ids.truncate(n);
    }
    if ids.is_empty() || args.commands == 0 {
        bail!("no devices or no commands to measure");
    }

    let mut client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30));
    if let Some(ca) = &args.ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        client = client
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .use_rustls_tls();
    }
    let client = client.build()?;
    let login: serde_json::Value = client
        .post(format!("{site}/api/v1/auth/login"))
        .json(&json!({"username": args.username, "password": password}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["data"]["token"]
        .as_str()
        .with_context(|| format!("login refused: {}", login["message"]))?;

    let body = json!({"name": "get_status", "args": {}, "timeout_s": 10, "wait": true});
    let mut times = Vec::with_capacity(args.commands);
    let mut failed = 0usize;
    let total = args.warmup + args.commands;
    let mut pace = args
        .every_ms
        .map(|ms| tokio::time::interval(Duration::from_millis(ms.max(1))));
    for i in 0..total {
        if let Some(pace) = &mut pace {
            pace.tick().await;
        }
        // Spread over the connected devices, so each command meets a different session.
        let id = if args.random {
            ids[rand::random::<usize>() % ids.len()]
        } else {
            ids[i * ids.len() / total]
        };
        let started = Instant::now();
        let answer = client
            .post(format!("{site}/api/v1/devices/{id}/commands"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await;
        let done = match answer {
            Ok(r) if r.status() == 200 => r
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|v| v["data"]["state"] == "succeeded"),
            Ok(_) | Err(_) => false,
        };
        let took = started.elapsed();
        if i < args.warmup {
            continue;
        }
        if done {
            times.push(took);
        } else {
            failed += 1;
        }
    }
    times.sort();
    if let Some(path) = &args.samples {
        let lines: String = times
            .iter()
            .map(|d| format!("{:.3}\n", d.as_secs_f64() * 1000.0))
            .collect();
        std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))?;
    }
    let at = |q: f64| {
        times
            .get(((times.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "commands={} failed={failed} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        times.len(),
        at(0.50),
        at(0.99),
        at(1.0)
    );
    Ok(())
}
