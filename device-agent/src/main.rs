use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use device_agent::config::AgentConfig;
use device_agent::link::{Agent, End};

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // rustls panics at config time if two crypto providers are linked and none chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Command::Run { config, edges, log } = Cli::parse().command;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&log).context("invalid log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    let mut settings = AgentConfig::load(&config).context("invalid configuration")?;
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
        End::Shutdown | End::Lost => Ok(()),
    }
}
