use std::io::Write;

use anyhow::Context;
use edge_cloud::config::{Cli, Command};
use edge_cloud::{startup, Application, Settings};

const SCHEMA_HEADER: &str = "\
-- Schema of an edge cloud database, as `edge-cloud print-schema` prints it.
-- The edge creates it at start; this is for operators who provision or review the
-- database by hand. A test keeps sql/edge.sql equal to what the binary creates.
-- Replicated tables carry hlc (hybrid logical clock stamp), origin (writing node),
-- deleted (tombstone) and field_stamps (per-field HLC stamps, JSON); every write to
-- them is appended to change_log in the same transaction. There are no foreign keys:
-- replicated rows may arrive in any order, so the application keeps integrity.

";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // rustls panics at config time if two crypto providers are linked and none chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = match Cli::from_env_and_args() {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::PrintSchema { dialect } => {
            let backend = dialect.backend();
            let ddl = fleet_store::schema::ddl(backend, &startup::tables(backend));
            let mut out = std::io::stdout().lock();
            out.write_all(SCHEMA_HEADER.as_bytes())?;
            out.write_all(ddl.as_bytes())?;
            Ok(())
        }
        Command::Serve(args) => {
            let settings = Settings::resolve(*args).context("invalid configuration")?;
            operator_api::server::init_logging(&settings.node.log)
                .map_err(anyhow::Error::msg)
                .context("invalid log filter")?;
            let app = Application::build(settings.clone())
                .await
                .context("starting the edge")?;
            let mut out = std::io::stdout().lock();
            operator_api::server::announce(&mut out, "edge", &settings.node, &app.served)?;
            let scheme = if app.served.tls { "wss" } else { "ws" };
            writeln!(
                out,
                "devices connect to {scheme}://{}:{}",
                settings.device_listen.ip(),
                app.device_port
            )?;
            drop(out);
            let hub = app.hub.clone();
            app.served.run_until_stopped().await.context("serving")?;
            // The last statuses reported before the stop are not lost.
            hub.flush_statuses()
                .await
                .context("writing the last device statuses")?;
            tracing::info!("edge stopped");
            Ok(())
        }
    }
}
