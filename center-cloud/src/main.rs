use std::io::Write;

use anyhow::Context;
use center_cloud::config::{Cli, Command};
use center_cloud::{startup, Application, Settings};

/// mimalloc instead of the C library's allocator: under a storm of commands or
/// changes, glibc's malloc (and its consolidation of freed chunks) was a third of
/// this process's CPU time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            operator_api::server::print_schema(
                &mut std::io::stdout().lock(),
                "center-cloud",
                "sql/center.sql",
                &startup::tables(backend),
                backend,
            )?;
            Ok(())
        }
        Command::Serve(args) => {
            let settings = Settings::resolve(*args).context("invalid configuration")?;
            operator_api::server::init_logging(&settings.node.log)
                .map_err(anyhow::Error::msg)
                .context("invalid log filter")?;
            let app = Application::build(settings.clone())
                .await
                .context("starting the center")?;
            let mut out = std::io::stdout().lock();
            let scheme = if app.served.tls { "wss" } else { "ws" };
            writeln!(
                out,
                "edges link to {scheme}://{}:{}/link",
                settings.link_listen.ip(),
                app.link_port
            )?;
            operator_api::server::announce(&mut out, "center", &settings.node, &app.served)?;
            drop(out);
            let links = app.links.clone();
            app.served
                .run_until_signal(|| async move {
                    links.shutdown();
                    links.ended().await;
                })
                .await
                .context("serving")?;
            tracing::info!("center stopped");
            Ok(())
        }
    }
}
