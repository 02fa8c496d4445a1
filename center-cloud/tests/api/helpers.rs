//! A center per test, through the shared API harness.

pub use api_harness::*;
use center_cloud::{Application, Settings};

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let (dir, node) = test_settings(center_cloud::config::DEFAULTS).await;
    let mut settings = Settings {
        node,
        ..Settings::with_data_dir(dir.path())
    };
    settings.link_listen = "127.0.0.1:0".parse().expect("addr");
    tweak(&mut settings);
    let database_url = settings.node.database_url.clone();
    let app = Application::build(settings).await.expect("center starts");
    start(app.served, dir, database_url).await
}
