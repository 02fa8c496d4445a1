//! The center's command line. The settings every node has come from
//! `operator_api::settings` (layered defaults < TOML file < `CENTER_…` variables <
//! flags); the center adds its own few. `center-cloud serve --help` lists them all.

use clap::{Args, CommandFactory, FromArgMatches, Parser};
use operator_api::settings::{
    self, ConfigError, NodeArgs, NodeCommand, NodeDefaults, NodeSettings,
};
use serde::Deserialize;

pub const DEFAULTS: NodeDefaults = NodeDefaults {
    listen: ([127, 0, 0, 1], 8443),
    data_dir: "data/center",
    db_file: "center.db",
};

#[derive(Debug, Parser)]
#[command(
    name = "center-cloud",
    version,
    about = "The center of the device federation: fleet registry and operators' REST API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line, with every setting also readable from `CENTER_…`.
    pub fn from_env_and_args() -> Result<Self, clap::Error> {
        let matches = settings::for_node(Self::command(), "CENTER", DEFAULTS).get_matches();
        Self::from_arg_matches(&matches)
    }
}

pub type Command = NodeCommand<ServeArgs>;

#[derive(Debug, Default, Clone, Args, Deserialize)]
pub struct ServeArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub node: NodeArgs,
    /// Largest CSV import body in bytes [default: 67108864].
    #[arg(long)]
    pub import_limit: Option<usize>,
    /// Address of the endpoint edges dial for their federation link (TLS like the API) [default: 127.0.0.1:8444].
    #[arg(long)]
    pub link_listen: Option<std::net::SocketAddr>,
    /// Heartbeat interval of edge links, in seconds [default: 5].
    #[arg(long)]
    pub link_heartbeat_s: Option<u64>,
    /// Largest artifact upload in bytes [default: 1073741824].
    #[arg(long)]
    pub artifact_max_bytes: Option<u64>,
    /// PEM file of the Ed25519 key (PKCS#8) that signs artifact manifests, e.g. made by
    /// `openssl genpkey -algorithm ed25519` [default: a key generated once and kept in
    /// the database].
    #[arg(long)]
    pub artifact_signing_key: Option<std::path::PathBuf>,
}

/// The resolved settings of a center.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: NodeSettings,
    pub import_limit: usize,
    pub link_listen: std::net::SocketAddr,
    pub link_heartbeat: std::time::Duration,
    pub artifact_max_bytes: u64,
    pub artifact_signing_key: Option<std::path::PathBuf>,
}

impl Settings {
    /// Defaults for a center keeping its state in `data_dir`.
    pub fn with_data_dir(data_dir: &std::path::Path) -> Self {
        Self {
            node: NodeSettings::with_data_dir(DEFAULTS, data_dir),
            import_limit: 64 * 1024 * 1024,
            link_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8444)),
            link_heartbeat: std::time::Duration::from_secs(5),
            artifact_max_bytes: 1 << 30,
            artifact_signing_key: None,
        }
    }

    /// Layers the config file (if any) under the flags and variables in `args`.
    pub fn resolve(args: ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.node.config {
            Some(path) => settings::read_file::<ServeArgs>(path)?,
            None => ServeArgs::default(),
        };
        let defaults = Self::with_data_dir(std::path::Path::new(DEFAULTS.data_dir));
        let heartbeat = args.link_heartbeat_s.or(file.link_heartbeat_s).unwrap_or(5);
        if heartbeat == 0 {
            return Err(ConfigError::Invalid {
                field: "link_heartbeat_s",
                message: "must be at least 1".into(),
            });
        }
        let artifact_max_bytes = args
            .artifact_max_bytes
            .or(file.artifact_max_bytes)
            .unwrap_or(defaults.artifact_max_bytes);
        if artifact_max_bytes == 0 {
            return Err(ConfigError::Invalid {
                field: "artifact_max_bytes",
                message: "must be at least 1".into(),
            });
        }
        Ok(Self {
            node: NodeSettings::resolve(DEFAULTS, args.node, file.node)?,
            import_limit: args
                .import_limit
                .or(file.import_limit)
                .unwrap_or(defaults.import_limit),
            link_listen: args
                .link_listen
                .or(file.link_listen)
                .unwrap_or(defaults.link_listen),
            link_heartbeat: std::time::Duration::from_secs(heartbeat),
            artifact_max_bytes,
            artifact_signing_key: args.artifact_signing_key.or(file.artifact_signing_key),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("center.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nworker_id = 3\ntoken_ttl_s = 60\nimport_limit = 10\n",
        )
        .expect("write");
        let mut args = ServeArgs::default();
        args.node.config = Some(path);
        args.node.worker_id = Some(5);
        let s = Settings::resolve(args).expect("resolves");
        assert_eq!(s.node.listen.port(), 9000);
        assert_eq!(s.node.worker_id, 5);
        assert_eq!(s.node.token_ttl_s, 60);
        assert_eq!(s.import_limit, 10);
        assert_eq!(s.artifact_max_bytes, 1 << 30);
        assert_eq!(s.node.body_limit, 1024 * 1024);
        assert!(s.node.database_url.ends_with("data/center/center.db"));
    }

    #[test]
    fn change_log_retention_is_read_and_zero_is_refused_by_name() {
        let mut args = ServeArgs::default();
        args.node.change_log_retain_h = Some(2);
        let s = Settings::resolve(args.clone()).expect("resolves");
        assert_eq!(s.node.change_log_retain.as_secs(), 2 * 3600);
        args.node.change_log_retain_h = Some(0);
        match Settings::resolve(args) {
            Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "change_log_retain_h"),
            other => panic!("expected an invalid setting, got {other:?}"),
        }
    }

    #[test]
    fn clock_skew_and_event_retention_are_read_and_zero_is_refused_by_name() {
        let mut args = ServeArgs::default();
        args.node.max_clock_skew_ms = Some(5_000);
        args.node.event_retain_days = Some(7);
        let s = Settings::resolve(args.clone()).expect("resolves");
        assert_eq!(s.node.max_clock_skew_ms, 5_000);
        assert_eq!(s.node.event_retain.as_secs(), 7 * 86_400);
        for (skew, days, want) in [
            (Some(0), None, "max_clock_skew_ms"),
            (None, Some(0), "event_retain_days"),
        ] {
            let mut bad = ServeArgs::default();
            bad.node.max_clock_skew_ms = skew;
            bad.node.event_retain_days = days;
            match Settings::resolve(bad) {
                Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, want),
                other => panic!("expected {want} refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_shutdown_timeout_is_read_and_out_of_range_is_refused_by_name() {
        let mut args = ServeArgs::default();
        assert_eq!(
            Settings::resolve(args.clone())
                .expect("resolves")
                .node
                .shutdown_timeout
                .as_secs(),
            10
        );
        args.node.shutdown_timeout_s = Some(3);
        let s = Settings::resolve(args).expect("resolves");
        assert_eq!(s.node.shutdown_timeout.as_secs(), 3);
        for bad_value in [0, 3_601] {
            let mut bad = ServeArgs::default();
            bad.node.shutdown_timeout_s = Some(bad_value);
            match Settings::resolve(bad) {
                Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "shutdown_timeout_s"),
                other => panic!("expected shutdown_timeout_s refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_artifact_size_cap_is_read_and_zero_is_refused_by_name() {
        let mut args = ServeArgs {
            artifact_max_bytes: Some(4096),
            ..Default::default()
        };
        assert_eq!(
            Settings::resolve(args.clone())
                .expect("resolves")
                .artifact_max_bytes,
            4096
        );
        args.artifact_max_bytes = Some(0);
        match Settings::resolve(args) {
            Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "artifact_max_bytes"),
            other => panic!("expected artifact_max_bytes refused, got {other:?}"),
        }
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("center.toml");
        std::fs::write(&path, "lisen = \"x\"\n").expect("write");
        let mut args = ServeArgs::default();
        args.node.config = Some(path);
        match Settings::resolve(args) {
            Err(ConfigError::Parse { message, .. }) => {
                assert!(message.contains("lisen"), "{message}")
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }
}
