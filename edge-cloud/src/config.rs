//! The edge's command line: the settings every node has (`EDGE_…` variables, a TOML
//! file, flags), with the edge's own defaults.

use clap::{Args, CommandFactory, FromArgMatches, Parser};
use fleet_node::admission;
use operator_api::settings::{
    self, ConfigError, NodeArgs, NodeCommand, NodeDefaults, NodeSettings,
};
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use shared_proto::endpoint::Endpoint;

use crate::hub::HubSettings;
use crate::uplink::CenterLink;

/// The center link from the four settings that name it: all or none.
fn center_link(args: &ServeArgs, file: &ServeArgs) -> Result<Option<CenterLink>, ConfigError> {
    // The flags (or the variable) replace the file's list, never add to it.
    let urls = if args.center_url.is_empty() {
        &file.center_url
    } else {
        &args.center_url
    };
    let id = args.edge_id.clone().or_else(|| file.edge_id.clone());
    let secret = args
        .edge_secret
        .clone()
        .or_else(|| file.edge_secret.clone());
    let ca = args.center_ca.clone().or_else(|| file.center_ca.clone());
    let invalid = |field, message: &str| ConfigError::Invalid {
        field,
        message: message.into(),
    };
    let api_urls = if args.center_api_url.is_empty() {
        &file.center_api_url
    } else {
        &args.center_api_url
    };
    if urls.is_empty() {
        if !api_urls.is_empty() {
            return Err(invalid("center_api_url", "is only used with center_url"));
        }
        if id.is_some() || secret.is_some() {
            return Err(invalid(
                "center_url",
                "is required with edge_id and edge_secret",
            ));
        }
        return Ok(None);
    }
    let id = id.ok_or_else(|| invalid("edge_id", "is required to join a center"))?;
    let edge_id =
        shared_proto::id::parse_id("edge_id", &id).map_err(|e| invalid("edge_id", &e.message))?;
    let secret = secret.ok_or_else(|| invalid("edge_secret", "is required to join a center"))?;
    let urls = center_urls(urls)?;
    if ca.is_none() && urls.iter().any(|u| u.starts_with("wss://")) {
        return Err(invalid("center_ca", "is required for a wss:// center_url"));
    }
    let api_urls = center_api_urls(api_urls)?;
    if ca.is_none() && api_urls.iter().any(|u| u.scheme() == "https") {
        return Err(invalid(
            "center_ca",
            "is required for an https:// center_api_url",
        ));
    }
    let heartbeat = args
        .center_heartbeat_s
        .or(file.center_heartbeat_s)
        .unwrap_or(5);
    if heartbeat == 0 {
        return Err(invalid("center_heartbeat_s", "must be at least 1"));
    }
    let backoff = args
        .center_backoff_max_s
        .or(file.center_backoff_max_s)
        .unwrap_or(30);
    if backoff == 0 {
        return Err(invalid("center_backoff_max_s", "must be at least 1"));
    }
    Ok(Some(CenterLink {
        urls,
        api_urls,
        edge_id,
        secret,
        ca_file: ca,
        heartbeat: Duration::from_secs(heartbeat),
        backoff_cap: Duration::from_secs(backoff),
    }))
}

/// Every center URL, trimmed, each a `wss://` (or `ws://`) URL with a host, so a
/// typo in the second replica's URL stops the start instead of a failover later.
fn center_urls(given: &[String]) -> Result<Vec<String>, ConfigError> {
    given
        .iter()
        .map(|url| {
            let url = url.trim();
            match Endpoint::parse(url) {
                Some(_) => Ok(url.to_string()),
                None => Err(ConfigError::Invalid {
                    field: "center_url",
                    message: format!("{url:?} is not a wss:// (or ws://) URL with a host"),
                }),
            }
        })
        .collect()
}

/// Every center API URL, each an `https://` (or `http://`) URL with a host and
/// nothing after it but a path prefix.
fn center_api_urls(given: &[String]) -> Result<Vec<reqwest::Url>, ConfigError> {
    given
        .iter()
        .map(|url| {
            let url = url.trim();
            match reqwest::Url::parse(url) {
                Ok(parsed)
                    if matches!(parsed.scheme(), "https" | "http")
                        && parsed.host().is_some()
                        && parsed.query().is_none()
                        && parsed.fragment().is_none() =>
                {
                    Ok(parsed)
                }
                _ => Err(ConfigError::Invalid {
                    field: "center_api_url",
                    message: format!("{url:?} is not an https:// (or http://) URL with a host"),
                }),
            }
        })
        .collect()
}

/// `center_url` in the config file: one URL, a comma-separated string or a list.
fn one_or_many<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        One(String),
        Many(Vec<String>),
    }
    let given = match Urls::deserialize(deserializer)? {
        Urls::One(url) => vec![url],
        Urls::Many(urls) => urls,
    };
    Ok(given
        .iter()
        .flat_map(|urls| urls.split(','))
        .map(str::to_string)
        .collect())
}

/// A cap of zero would shut the device endpoint: refused by name instead.
fn at_least_one(field: &'static str, v: usize) -> Result<usize, ConfigError> {
    if v == 0 {
        return Err(ConfigError::Invalid {
            field,
            message: "must be at least 1".into(),
        });
    }
    Ok(v)
}

pub const DEFAULTS: NodeDefaults = NodeDefaults {
    listen: ([127, 0, 0, 1], 9443),
    data_dir: "data/edge",
    db_file: "edge.db",
};

#[derive(Debug, Parser)]
#[command(
    name = "edge-cloud",
    version,
    about = "An edge cloud of the device federation: the site server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line, with every setting also readable from `EDGE_…`.
    pub fn from_env_and_args() -> Result<Self, clap::Error> {
        let matches = settings::for_node(Self::command(), "EDGE", DEFAULTS).get_matches();
        Self::from_arg_matches(&matches)
    }
}

pub type Command = NodeCommand<ServeArgs>;

#[derive(Debug, Default, Clone, Args, Deserialize)]
pub struct ServeArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub node: NodeArgs,
    /// Address of the devices' WebSocket endpoint (TLS like the site API) [default: 127.0.0.1:9444].
    #[arg(long)]
    pub device_listen: Option<SocketAddr>,
    /// Application heartbeat interval for devices, in seconds [default: 15].
    #[arg(long)]
    pub heartbeat_interval_s: Option<u64>,
    /// Heartbeat intervals a device may miss before it is offline [default: 3].
    #[arg(long)]
    pub missed_heartbeats: Option<u32>,
    /// Seconds a new device connection has, from TCP accept, for the TLS handshake, the WebSocket upgrade and the login together [default: 10].
    #[arg(long)]
    pub login_timeout_s: Option<u64>,
    /// Device connections not yet logged in, at most, from one source address (an IPv6 /64 counts as one) [default: 64].
    #[arg(long)]
    pub max_unauthenticated_per_source: Option<usize>,
    /// Device connections not yet logged in, at most, in total [default: 4096].
    #[arg(long)]
    pub max_unauthenticated: Option<usize>,
    /// Milliseconds between writes of changed device statuses to the database [default: 2000].
    #[arg(long)]
    pub status_flush_ms: Option<u64>,
    /// Largest log a device may upload for `pull_logs`, in bytes (at most 16 MiB) [default: 1048576].
    #[arg(long)]
    pub log_upload_max_bytes: Option<u64>,
    /// The center's edge-link endpoint to join, e.g. wss://center:8444/link; repeat it, or separate URLs by commas, to name several center replicas, tried in turn [default: none, standalone].
    #[arg(long, value_delimiter = ',')]
    #[serde(default, deserialize_with = "one_or_many")]
    pub center_url: Vec<String>,
    /// The center's REST API, where this edge fetches the artifacts its devices install, e.g. https://center:8443; repeat it, or separate URLs by commas, for several replicas [default: none, devices cannot install].
    #[arg(long, value_delimiter = ',')]
    #[serde(default, deserialize_with = "one_or_many")]
    pub center_api_url: Vec<String>,
    /// Disk the artifact cache (in the data directory) may use, in bytes; the least recently used artifacts go first [default: 8589934592].
    #[arg(long)]
    pub artifact_cache_bytes: Option<u64>,
    /// This edge's id, from its registration at the center.
    #[arg(long)]
    pub edge_id: Option<String>,
    /// This edge's secret, from its registration at the center.
    #[arg(long, hide_env_values = true)]
    pub edge_secret: Option<String>,
    /// CA certificate the center's certificate is checked against.
    #[arg(long)]
    pub center_ca: Option<std::path::PathBuf>,
    /// Heartbeat interval of the center link, in seconds [default: 5].
    #[arg(long)]
    pub center_heartbeat_s: Option<u64>,
    /// Longest pause between attempts to reach the center, in seconds [default: 30].
    #[arg(long)]
    pub center_backoff_max_s: Option<u64>,
}

/// The resolved settings of an edge.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: NodeSettings,
    pub device_listen: SocketAddr,
    pub hub: HubSettings,
    /// How often changed device statuses are written, as one batch.
    pub status_flush: Duration,
    pub log_upload_max_bytes: u64,
    /// Disk the artifact cache may use.
    pub artifact_cache_bytes: u64,
    /// The center to join; `None` runs the edge standalone.
    pub center: Option<CenterLink>,
}

impl Settings {
    pub fn with_data_dir(data_dir: &std::path::Path) -> Self {
        Self {
            node: NodeSettings::with_data_dir(DEFAULTS, data_dir),
            device_listen: SocketAddr::from(([127, 0, 0, 1], 9444)),
            hub: HubSettings {
                heartbeat_interval: Duration::from_secs(15),
                missed_limit: 3,
                login_timeout: Duration::from_secs(10),
                max_unauthenticated_per_source: admission::DEFAULT_PER_SOURCE,
                max_unauthenticated: admission::DEFAULT_TOTAL,
            },
            status_flush: Duration::from_secs(2),
            log_upload_max_bytes: 1024 * 1024,
            artifact_cache_bytes: 8 << 30,
            center: None,
        }
    }

    /// Layers the config file (if any) under the flags and variables in `args`.
    pub fn resolve(args: ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.node.config {
            Some(path) => settings::read_file::<ServeArgs>(path)?,
            None => ServeArgs::default(),
        };
        let center = center_link(&args, &file)?;
        let node = NodeSettings::resolve(DEFAULTS, args.node, file.node)?;
        let mut out = Self {
            node,
            center,
            ..Self::with_data_dir(std::path::Path::new(DEFAULTS.data_dir))
        };
        if let Some(v) = args.device_listen.or(file.device_listen) {
            out.device_listen = v;
        }
        if let Some(v) = args.heartbeat_interval_s.or(file.heartbeat_interval_s) {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    field: "heartbeat_interval_s",
                    message: "must be at least 1".into(),
                });
            }
            out.hub.heartbeat_interval = Duration::from_secs(v);
        }
        if let Some(v) = args.missed_heartbeats.or(file.missed_heartbeats) {
            out.hub.missed_limit = v.max(1);
        }
        if let Some(v) = args.status_flush_ms.or(file.status_flush_ms) {
            out.status_flush = Duration::from_millis(v.max(10));
        }
        if let Some(v) = args.log_upload_max_bytes.or(file.log_upload_max_bytes) {
            // The column holds 16 MiB on MySQL (MEDIUMBLOB).
            if v == 0 || v > 16 * 1024 * 1024 {
                return Err(ConfigError::Invalid {
                    field: "log_upload_max_bytes",
                    message: "must be 1 to 16777216".into(),
                });
            }
            out.log_upload_max_bytes = v;
        }
        if let Some(v) = args.artifact_cache_bytes.or(file.artifact_cache_bytes) {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    field: "artifact_cache_bytes",
                    message: "must be at least 1".into(),
                });
            }
            out.artifact_cache_bytes = v;
        }
        if let Some(v) = args.login_timeout_s.or(file.login_timeout_s) {
            out.hub.login_timeout = Duration::from_secs(v.max(1));
        }
        if let Some(v) = args
            .max_unauthenticated_per_source
            .or(file.max_unauthenticated_per_source)
        {
            out.hub.max_unauthenticated_per_source =
                at_least_one("max_unauthenticated_per_source", v)?;
        }
        if let Some(v) = args.max_unauthenticated.or(file.max_unauthenticated) {
            out.hub.max_unauthenticated = at_least_one("max_unauthenticated", v)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joining() -> ServeArgs {
        ServeArgs {
            center_url: vec!["wss://127.0.0.1:8444/link".into()],
            edge_id: Some("42".into()),
            edge_secret: Some("s".into()),
            center_ca: Some("ca.crt".into()),
            ..ServeArgs::default()
        }
    }

    fn serve_args(argv: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(["edge-cloud", "serve"].iter().chain(argv))
            .expect("the command line parses");
        match cli.command {
            Command::Serve(args) => *args,
            other => panic!("expected serve, got {other:?}"),
        }
    }

    fn urls(args: &ServeArgs, file: &ServeArgs) -> Vec<String> {
        center_link(args, file)
            .expect("valid")
            .expect("joins a center")
            .urls
    }

    const JOIN: [&str; 6] = [
        "--edge-id",
        "42",
        "--edge-secret",
        "s",
        "--center-ca",
        "ca.crt",
    ];

    #[test]
    fn several_center_urls_are_read_from_flags_commas_and_the_file() {
        let expected = vec!["wss://a:8444/link".to_string(), "wss://b:8444/link".into()];
        let repeated = serve_args(
            &[
                &JOIN[..],
                &[
                    "--center-url",
                    "wss://a:8444/link",
                    "--center-url",
                    "wss://b:8444/link",
                ],
            ]
            .concat(),
        );
        assert_eq!(urls(&repeated, &ServeArgs::default()), expected, "repeated");
        let commas = serve_args(
            &[
                &JOIN[..],
                &["--center-url", "wss://a:8444/link, wss://b:8444/link"],
            ]
            .concat(),
        );
        assert_eq!(
            urls(&commas, &ServeArgs::default()),
            expected,
            "comma-separated"
        );

        let dir = tempfile::tempdir().expect("dir");
        let join = "edge_id = \"42\"\nedge_secret = \"s\"\ncenter_ca = \"ca.crt\"\n";
        for (how, line) in [
            (
                "a list",
                "center_url = [\"wss://a:8444/link\", \"wss://b:8444/link\"]",
            ),
            (
                "a comma-separated string",
                "center_url = \"wss://a:8444/link,wss://b:8444/link\"",
            ),
        ] {
            let path = dir.path().join("edge.toml");
            std::fs::write(&path, format!("{join}{line}\n")).expect("write");
            let file = settings::read_file::<ServeArgs>(&path).expect("the file parses");
            assert_eq!(urls(&ServeArgs::default(), &file), expected, "{how}");
            let flag = serve_args(&["--center-url", "ws://c:8444/link"]);
            assert_eq!(
                urls(&flag, &file),
                vec!["ws://c:8444/link".to_string()],
                "the flag replaces the file's list"
            );
        }
    }

    #[test]
    fn a_bad_second_center_url_is_refused_by_name() {
        for bad in ["https://b:8444/link", "wss://:8444/link", ""] {
            let args = ServeArgs {
                center_url: vec!["wss://a:8444/link".into(), bad.into()],
                ..joining()
            };
            match center_link(&args, &ServeArgs::default()) {
                Err(ConfigError::Invalid { field, message }) => {
                    assert_eq!(field, "center_url", "{bad:?}");
                    assert!(message.contains(&format!("{bad:?}")), "{message}");
                }
                other => panic!("expected {bad:?} refused, got {other:?}"),
            }
        }
        let plain = ServeArgs {
            center_url: vec!["ws://a:8444/link".into(), "wss://b:8444/link".into()],
            center_ca: None,
            ..joining()
        };
        match center_link(&plain, &ServeArgs::default()) {
            Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "center_ca"),
            other => panic!("a wss:// URL without a CA: expected refused, got {other:?}"),
        }
    }

    #[test]
    fn center_api_urls_are_read_and_bad_ones_refused_by_name() {
        let args = serve_args(
            &[
                &JOIN[..],
                &[
                    "--center-url",
                    "wss://a:8444/link",
                    "--center-api-url",
                    "https://a:8443, https://b:8443/fleet",
                ],
            ]
            .concat(),
        );
        let link = center_link(&args, &ServeArgs::default())
            .expect("valid")
            .expect("joins");
        let urls: Vec<String> = link.api_urls.iter().map(ToString::to_string).collect();
        assert_eq!(urls, ["https://a:8443/", "https://b:8443/fleet"]);
        let refused = |args: ServeArgs| match center_link(&args, &ServeArgs::default()) {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected refused, got {other:?}"),
        };
        for bad in ["wss://a:8443", "https://", "https://a:8443/?x=1", "center"] {
            let args = ServeArgs {
                center_api_url: vec![bad.into()],
                ..joining()
            };
            assert_eq!(refused(args), "center_api_url", "{bad:?}");
        }
        let alone = ServeArgs {
            center_api_url: vec!["https://a:8443".into()],
            ..ServeArgs::default()
        };
        assert_eq!(refused(alone), "center_api_url", "without center_url");
        let no_ca = ServeArgs {
            center_url: vec!["ws://a:8444/link".into()],
            center_api_url: vec!["https://a:8443".into()],
            center_ca: None,
            ..joining()
        };
        assert_eq!(refused(no_ca), "center_ca");
        let cache = Settings::resolve(ServeArgs {
            artifact_cache_bytes: Some(0),
            ..ServeArgs::default()
        });
        assert!(
            matches!(
                cache,
                Err(ConfigError::Invalid {
                    field: "artifact_cache_bytes",
                    ..
                })
            ),
            "{cache:?}"
        );
    }

    #[test]
    fn the_center_backoff_is_read_and_zero_is_refused_by_name() {
        let mut args = joining();
        args.center_backoff_max_s = Some(3);
        let link = center_link(&args, &ServeArgs::default())
            .expect("valid")
            .expect("joins a center");
        assert_eq!(link.backoff_cap.as_secs(), 3);
        assert_eq!(
            center_link(&joining(), &ServeArgs::default())
                .expect("valid")
                .expect("joins")
                .backoff_cap
                .as_secs(),
            30,
            "the default"
        );
        args.center_backoff_max_s = Some(0);
        match center_link(&args, &ServeArgs::default()) {
            Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, "center_backoff_max_s"),
            other => panic!("expected an invalid setting, got {other:?}"),
        }
    }

    #[test]
    fn the_unauthenticated_caps_are_read_and_zero_is_refused_by_name() {
        let defaults = Settings::resolve(ServeArgs::default()).expect("defaults");
        assert_eq!(
            (
                defaults.hub.max_unauthenticated_per_source,
                defaults.hub.max_unauthenticated
            ),
            (admission::DEFAULT_PER_SOURCE, admission::DEFAULT_TOTAL)
        );
        let set = Settings::resolve(ServeArgs {
            max_unauthenticated_per_source: Some(8),
            max_unauthenticated: Some(100),
            ..ServeArgs::default()
        })
        .expect("valid");
        assert_eq!(
            (
                set.hub.max_unauthenticated_per_source,
                set.hub.max_unauthenticated
            ),
            (8, 100)
        );
        for (args, name) in [
            (
                ServeArgs {
                    max_unauthenticated_per_source: Some(0),
                    ..ServeArgs::default()
                },
                "max_unauthenticated_per_source",
            ),
            (
                ServeArgs {
                    max_unauthenticated: Some(0),
                    ..ServeArgs::default()
                },
                "max_unauthenticated",
            ),
        ] {
            match Settings::resolve(args) {
                Err(ConfigError::Invalid { field, .. }) => assert_eq!(field, name),
                other => panic!("expected {name} refused, got {other:?}"),
            }
        }
    }
}
