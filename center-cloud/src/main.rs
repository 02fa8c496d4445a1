use std::io::Write;

use anyhow::Context;
use center_cloud::config::{Cli, Command, Dialect};
use center_cloud::{startup, Application, Settings};
use sea_orm::DbBackend;

const SCHEMA_HEADER: &str = "\
-- Schema of the center cloud database, as `center-cloud print-schema` prints it.
-- The center creates it at start; this is for operators who provision or review the
-- database by hand. A test keeps sql/center.sql equal to what the binary creates.
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
            let backend = match dialect {
                Dialect::Mysql => DbBackend::MySql,
                Dialect::Sqlite => DbBackend::Sqlite,
            };
            let ddl = fleet_store::schema::ddl(backend, &startup::tables(backend));
            let mut out = std::io::stdout().lock();
            out.write_all(SCHEMA_HEADER.as_bytes())?;
            out.write_all(ddl.as_bytes())?;
            Ok(())
        }
        Command::Serve(args) => {
            let settings = Settings::resolve(*args).context("invalid configuration")?;
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_new(&settings.node.log)
                        .context("invalid log filter")?,
                )
                .with_writer(std::io::stderr)
                .init();
            let app = Application::build(settings.clone())
                .await
                .context("starting the center")?;
            let scheme = if app.tls { "https" } else { "http" };
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "center listening on {scheme}://{}:{}",
                settings.node.listen.ip(),
                app.port()
            )?;
            if let Some(password) = &app.generated_admin_password {
                writeln!(
                    out,
                    "first start: created user `admin` with password {password} (shown once)"
                )?;
            }
            if let Some(ca) = &app.ca_file {
                writeln!(out, "development CA certificate: {}", ca.display())?;
            }
            drop(out);
            app.run_until_stopped().await.context("serving")?;
            tracing::info!("center stopped");
            Ok(())
        }
    }
}
