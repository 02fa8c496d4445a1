use std::io::Write;

use anyhow::Context;
use center_cloud::config::{Cli, Command, Dialect};
use center_cloud::{startup, Application, Settings};
use clap::Parser;
use sea_orm::DbBackend;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // rustls panics at config time if two crypto providers are linked and none chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::PrintSchema { dialect } => {
            let backend = match dialect {
                Dialect::Mysql => DbBackend::MySql,
                Dialect::Sqlite => DbBackend::Sqlite,
            };
            let ddl = fleet_store::schema::ddl(backend, &startup::tables(backend));
            std::io::stdout().write_all(ddl.as_bytes())?;
            Ok(())
        }
        Command::Serve(args) => {
            let settings = Settings::resolve(*args).context("invalid configuration")?;
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_new(&settings.log)
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
                settings.listen.ip(),
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
