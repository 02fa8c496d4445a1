//! `local-federation`: a center, edges and simulated devices on this machine, in one
//! command. See `--help`.

mod binaries;
mod center;
mod console;
mod databases;
mod error;
mod federation;
mod layout;
mod process;
mod registration;
mod state;
mod summary;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "local-federation",
    version,
    about = "Runs a whole federation on this machine: a center, edges and simulated devices",
    long_about = "Runs a whole federation on this machine: a center, edges and a device \
                  simulator per edge, all on SQLite (or one MySQL server) with generated development TLS. The first \
                  run registers the edges and devices through the center's API and keeps their \
                  credentials in DATA_DIR/state.json; later runs reuse them. Ctrl-C stops \
                  everything."
)]
struct Cli {
    /// Directory for every process's data, the logs and the state file.
    #[arg(long, default_value = "./data/federation")]
    data_dir: PathBuf,
    /// Number of edges.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=100))]
    edges: u16,
    /// Number of simulated devices, spread evenly over the edges.
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// First port: the center's API, its edge link on the next port, then per edge its
    /// site API and its device endpoint. 0 lets each process pick a free port.
    #[arg(long, default_value_t = 8443)]
    port_base: u16,
    /// A MySQL/MariaDB server for the center and the edges instead of SQLite, e.g.
    /// mysql://user:pass@127.0.0.1:3306/fed. Each node gets its own database, named
    /// after the URL's (default `federation`): fed_center, fed_edge_1, fed_edge_2...
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Take center-cloud, edge-cloud and device-agent from DIR instead of building them.
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Start, wait until every device is online, run one group command, stop.
    #[arg(long)]
    once: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = federation::run(federation::Options {
        data_dir: cli.data_dir,
        edges: usize::from(cli.edges),
        devices: cli.devices,
        port_base: cli.port_base,
        database_url: cli.database_url,
        bin_dir: cli.bin_dir,
        once: cli.once,
    })
    .await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The message and its causes on one line: a backtrace says nothing to
            // someone whose edge failed to start.
            let _ = writeln!(std::io::stderr(), "error: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}
