use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use device_agent::config::AgentConfig;
use device_agent::link::{Agent, End};
use device_agent::logs::LogFile;
use tracing_subscriber::fmt::writer::MakeWriterExt;

#[derive(Debug, Parser)]
#[command(
    name = "device-agent",
    version,
    about = "The device side of the federation: connects to the nearest edge, reports status, runs commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        /// TOML configuration (device_id, secret, edges, ca_file, scripts, …).
        #[arg(long, env = "AGENT_CONFIG")]
        config: PathBuf,
        /// Edge URLs to use instead of the configured ones (repeatable).
        #[arg(long = "edge", env = "AGENT_EDGES", value_delimiter = ',')]
        edges: Vec<String>,
        /// Log filter [default: info].
        #[arg(long, env = "AGENT_LOG", default_value = "info")]
        log: String,
    },
    /// Run N virtual devices (from a credentials file) in this process.
    Simulate {
        /// How many devices of the credentials file to run [default: all].
        #[arg(long)]
        count: Option<usize>,
        /// CSV with the header `device_id,secret`, as `provision` writes it.
        #[arg(long)]
        credentials: PathBuf,
        /// Edge device endpoints, wss:// or ws:// (repeatable); each device uses the nearest.
        #[arg(long = "edge", required = true)]
        edges: Vec<String>,
        /// CA certificate of the edges (needed for wss:// edges only).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Seconds between status reports [default: 30].
        #[arg(long, default_value_t = 30)]
        report_interval_s: u64,
        /// Local address the devices connect from (repeatable, used in turn): one
        /// address has ~28k ephemeral ports, so e.g. 127.0.0.2, 127.0.0.3, … let one
        /// machine open more connections.
        #[arg(long = "source-ip")]
        source_ips: Vec<std::net::IpAddr>,
        /// Share of installs that fail, in percent: the devices download and verify
        /// the artifact, then report success or failure at random [default: 0].
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
        install_fail_pct: u8,
        /// The center's artifact signing key, to verify manifests with (base64) [default: none, not verified].
        #[arg(long)]
        update_public_key: Option<String>,
    },
    /// Register N devices at an edge's site API and write their credentials file.
    Provision {
        /// Site API base URL, e.g. https://127.0.0.1:9443.
        #[arg(long)]
        site: String,
        #[arg(long)]
        ca: PathBuf,
        #[arg(long, default_value = "admin")]
        username: String,
        #[arg(long, env = "AGENT_SITE_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long)]
        count: usize,
        /// Prefix of the devices' names and serial numbers.
        #[arg(long, default_value = "sim")]
        prefix: String,
        /// Where to write `device_id,secret` lines.
        #[arg(long)]
        out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // rustls panics at config time if two crypto providers are linked and none chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (config, edges, log) = match Cli::parse().command {
        Command::Run { config, edges, log } => (config, edges, log),
        Command::Simulate {
            count,
            credentials,
            edges,
            ca,
            report_interval_s,
            source_ips,
            install_fail_pct,
            update_public_key,
        } => {
            let mut devices = device_agent::fleet::read_credentials(&credentials)?;
            if let Some(n) = count {
                devices.truncate(n);
            }
            let (stop, stopped) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                let _ = stop.send(true);
            });
            let simulation = device_agent::fleet::Simulation {
                edges,
                ca_file: ca,
                report_interval_s,
                source_ips,
                install_fail_pct,
                update_public_key,
            };
            simulation.run(devices, stopped).await?;
            return Ok(());
        }
        Command::Provision {
            site,
            ca,
            username,
            password,
            count,
            prefix,
            out,
        } => {
            let n = device_agent::fleet::provision(
                site.trim_end_matches('/'),
                &ca,
                &username,
                &password,
                count,
                &prefix,
                &out,
            )
            .await?;
            writeln!(
                std::io::stdout(),
                "wrote {n} device credentials to {}",
                out.display()
            )?;
            return Ok(());
        }
    };
    let mut settings = AgentConfig::load(&config).context("invalid configuration")?;
    let filter = tracing_subscriber::EnvFilter::try_new(&log).context("invalid log filter")?;
    match &settings.log_path {
        Some(path) => {
            let file = LogFile::open(path, settings.log_max_bytes)
                .with_context(|| format!("opening the log file {}", path.display()))?;
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(std::io::stderr.and(file))
                .init();
        }
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    if !edges.is_empty() {
        settings.edges = edges;
        settings.validate().context("invalid --edge")?;
    }
    let agent = Agent::new(settings).context("starting the agent")?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        let _ = stop.send(true);
    });
    match agent.run(stopped).await {
        End::Restart => {
            use std::os::unix::process::CommandExt;
            tracing::info!("restarting for a reboot command");
            let exe = std::env::current_exe().context("finding the agent binary")?;
            let err = std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .exec();
            Err(err).context("restarting the agent")
        }
        End::Shutdown | End::Lost | End::Away => Ok(()),
    }
}
