//! The settings every node (center or edge) has, and how they are layered: defaults in
//! code, then a TOML file, then environment variables, then command-line flags.
//! Each binary flattens [`NodeArgs`] into its own arguments and names its variables
//! with [`with_env_prefix`] (`CENTER_LISTEN`, `EDGE_LISTEN`, …), so both read the
//! same way without two copies of this code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The subcommands every node binary has; `S` is the binary's own serve arguments.
#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand<S: Args> {
    /// Serve the node's HTTPS API.
    Serve(Box<S>),
    /// Print the database schema DDL this binary creates.
    PrintSchema {
        #[arg(long, value_enum, default_value_t = Dialect::Mysql)]
        dialect: Dialect,
    },
}

/// The SQL dialect `print-schema` writes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Dialect {
    Mysql,
    Sqlite,
}

impl Dialect {
    pub fn backend(self) -> sea_orm::DbBackend {
        match self {
            Dialect::Mysql => sea_orm::DbBackend::MySql,
            Dialect::Sqlite => sea_orm::DbBackend::Sqlite,
        }
    }
}

#[derive(Debug, Default, Clone, Args, Deserialize)]
pub struct NodeArgs {
    /// TOML file with any of these settings (variables and flags override it).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Directory for the SQLite database and generated TLS material.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Database URL, `mysql://user:pass@host/db` or `sqlite://file` [default: SQLite in the data directory].
    #[arg(long)]
    pub database_url: Option<String>,
    /// Largest number of pooled database connections [default: 16].
    #[arg(long)]
    pub db_max_connections: Option<u32>,
    /// Snowflake worker id of this node, 1..=1023 [default: an edge 1 (registration
    /// gives it one); a center leases a free one from its database, so that replicas
    /// start the same way].
    #[arg(long)]
    pub worker_id: Option<i64>,
    /// PEM certificate chain to serve [default: a development certificate generated in DATA_DIR/tls].
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Extra DNS names or IPs for the generated development certificate (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub tls_hosts: Option<Vec<String>>,
    /// Serve plain HTTP instead of HTTPS (behind a TLS-terminating proxy only) [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub insecure_http: Option<bool>,
    /// Password of the `admin` account created on first start [default: random, printed once].
    #[arg(long)]
    pub admin_password: Option<String>,
    /// Lifetime of login tokens in seconds [default: 3600].
    #[arg(long)]
    pub token_ttl_s: Option<u64>,
    /// Largest JSON request body in bytes [default: 1048576].
    #[arg(long)]
    pub body_limit: Option<usize>,
    /// HTTP worker threads [default: one per core].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Log filter, e.g. `info` or `federation=debug,info` [default: info].
    #[arg(long)]
    pub log: Option<String>,
    /// Hours the change log keeps entries a federation peer has not acknowledged;
    /// a peer away for longer gets a snapshot when it returns [default: 168].
    #[arg(long)]
    pub change_log_retain_h: Option<u64>,
    /// Milliseconds a federation peer's stamp may run ahead of this node's wall clock;
    /// a change stamped further ahead is refused and never moves this node's clock
    /// [default: 60000].
    #[arg(long)]
    pub max_clock_skew_ms: Option<u64>,
    /// Days events are kept before a background job deletes them [default: 90].
    #[arg(long)]
    pub event_retain_days: Option<u64>,
    /// Seconds a stop (SIGTERM, SIGINT) has to wind the node down before its API stops: an edge ends device sessions and its center link and writes what is queued, a center ends its edge links [default: 10].
    #[arg(long)]
    pub shutdown_timeout_s: Option<u64>,
}

/// Names every argument's environment variable `PREFIX_ARG_ID` (for all subcommands),
/// hiding the values of those that may carry secrets, and shows the binary's own
/// defaults for the listen address and data directory.
pub fn for_node(cmd: clap::Command, prefix: &str, defaults: NodeDefaults) -> clap::Command {
    let listen = SocketAddr::from(defaults.listen);
    let cmd = cmd.mut_subcommand("serve", |serve| {
        serve
            .mut_arg("listen", |a| {
                a.help(format!("Address to listen on [default: {listen}]"))
            })
            .mut_arg("data_dir", |a| {
                a.help(format!(
                    "Directory for the SQLite database and generated TLS material [default: ./{}]",
                    defaults.data_dir
                ))
            })
    });
    with_env_prefix(cmd, prefix)
}

fn with_env_prefix(cmd: clap::Command, prefix: &str) -> clap::Command {
    let prefix = prefix.to_string();
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    names.into_iter().fold(cmd, |cmd, sub| {
        cmd.mut_subcommand(sub, |sub| {
            let ids: Vec<String> = sub
                .get_arguments()
                .filter(|a| !a.is_positional() && a.get_id() != "help" && a.get_id() != "version")
                .map(|a| a.get_id().to_string())
                .collect();
            ids.into_iter().fold(sub, |sub, id| {
                let var = format!("{prefix}_{}", id.to_uppercase());
                let secret =
                    id.contains("password") || id.contains("secret") || id == "database_url";
                sub.mut_arg(id, |a| a.env(var).hide_env_values(secret))
            })
        })
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// Reads a binary's settings file. Keys must be argument names of `T` (the file
/// cannot name its own path); a misspelt key is an error, not silently ignored.
pub fn read_file<T: DeserializeOwned + Args>(path: &Path) -> Result<T, ConfigError> {
    let parse = |message: String| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| parse(e.to_string()))?;
    let known = T::augment_args(clap::Command::new("settings"));
    for key in table.keys() {
        let is_known = key != "config" && known.get_arguments().any(|a| a.get_id() == key.as_str());
        if !is_known {
            return Err(parse(format!("unknown setting `{key}`")));
        }
    }
    toml::from_str(&text).map_err(|e| parse(e.to_string()))
}

/// A node's resolved settings.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub db_max_connections: u32,
    pub worker_id: i64,
    /// Whether `worker_id` was set rather than defaulted (a center then leases none).
    pub worker_id_pinned: bool,
    pub tls: TlsSettings,
    pub admin_password: Option<String>,
    pub token_ttl_s: u64,
    pub body_limit: usize,
    pub workers: Option<usize>,
    pub log: String,
    pub change_log_retain: std::time::Duration,
    pub max_clock_skew_ms: i64,
    pub event_retain: std::time::Duration,
    pub shutdown_timeout: std::time::Duration,
}

#[derive(Debug, Clone)]
pub enum TlsSettings {
    /// Generate (once) and serve a development certificate; these are its extra names.
    Development {
        extra_hosts: Vec<String>,
    },
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    Off,
}

/// What differs between binaries before any configuration.
#[derive(Debug, Clone, Copy)]
pub struct NodeDefaults {
    pub listen: ([u8; 4], u16),
    pub data_dir: &'static str,
    pub db_file: &'static str,
}

impl NodeSettings {
    /// The defaults for a node keeping its state in `data_dir`.
    pub fn with_data_dir(defaults: NodeDefaults, data_dir: &Path) -> Self {
        Self {
            listen: SocketAddr::from(defaults.listen),
            data_dir: data_dir.to_path_buf(),
            database_url: format!("sqlite://{}", data_dir.join(defaults.db_file).display()),
            db_max_connections: 16,
            worker_id: 1,
            worker_id_pinned: false,
            tls: TlsSettings::Development {
                extra_hosts: Vec::new(),
            },
            admin_password: None,
            token_ttl_s: 3600,
            body_limit: 1024 * 1024,
            workers: None,
            log: "info".into(),
            change_log_retain: std::time::Duration::from_secs(168 * 3600),
            max_clock_skew_ms: 60_000,
            event_retain: std::time::Duration::from_secs(90 * 86_400),
            shutdown_timeout: std::time::Duration::from_secs(10),
        }
    }

    /// Layers `high` (flags and variables) over `low` (the file) over the defaults.
    pub fn resolve(
        defaults: NodeDefaults,
        high: NodeArgs,
        low: NodeArgs,
    ) -> Result<Self, ConfigError> {
        let s = merge(high, low);
        let data_dir = s
            .data_dir
            .unwrap_or_else(|| PathBuf::from(defaults.data_dir));
        let mut out = Self::with_data_dir(defaults, &data_dir);
        if let Some(v) = s.listen {
            out.listen = v;
        }
        if let Some(v) = s.database_url {
            out.database_url = v;
        }
        if let Some(v) = s.db_max_connections {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    field: "db_max_connections",
                    message: "must be at least 1".into(),
                });
            }
            out.db_max_connections = v;
        }
        if let Some(v) = s.worker_id {
            out.worker_id = v;
            out.worker_id_pinned = true;
        }
        out.tls = match (s.insecure_http.unwrap_or(false), s.tls_cert, s.tls_key) {
            (true, _, _) => TlsSettings::Off,
            (false, Some(cert), Some(key)) => TlsSettings::Files { cert, key },
            (false, None, None) => TlsSettings::Development {
                extra_hosts: s.tls_hosts.unwrap_or_default(),
            },
            _ => {
                return Err(ConfigError::Invalid {
                    field: "tls_cert",
                    message: "tls_cert and tls_key go together".into(),
                })
            }
        };
        out.admin_password = s.admin_password;
        if let Some(v) = s.token_ttl_s {
            out.token_ttl_s = v;
        }
        if let Some(v) = s.body_limit {
            out.body_limit = v;
        }
        out.workers = s.workers;
        if let Some(v) = s.log {
            out.log = v;
        }
        if let Some(v) = s.change_log_retain_h {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    field: "change_log_retain_h",
                    message: "must be at least 1".into(),
                });
            }
            out.change_log_retain = std::time::Duration::from_secs(v.saturating_mul(3600));
        }
        if let Some(v) = s.max_clock_skew_ms {
            // Past a day a forged stamp could drag clocks far enough to matter.
            if !(1..=86_400_000).contains(&v) {
                return Err(ConfigError::Invalid {
                    field: "max_clock_skew_ms",
                    message: "must be between 1 and 86400000".into(),
                });
            }
            out.max_clock_skew_ms = i64::try_from(v).unwrap_or(60_000);
        }
        if let Some(v) = s.event_retain_days {
            if !(1..=36_500).contains(&v) {
                return Err(ConfigError::Invalid {
                    field: "event_retain_days",
                    message: "must be between 1 and 36500".into(),
                });
            }
            out.event_retain = std::time::Duration::from_secs(v.saturating_mul(86_400));
        }
        if let Some(v) = s.shutdown_timeout_s {
            if !(1..=3_600).contains(&v) {
                return Err(ConfigError::Invalid {
                    field: "shutdown_timeout_s",
                    message: "must be between 1 and 3600".into(),
                });
            }
            out.shutdown_timeout = std::time::Duration::from_secs(v);
        }
        Ok(out)
    }
}

/// Field by field, the first of `high` and `low` that is set.
fn merge(high: NodeArgs, low: NodeArgs) -> NodeArgs {
    NodeArgs {
        config: high.config.or(low.config),
        listen: high.listen.or(low.listen),
        data_dir: high.data_dir.or(low.data_dir),
        database_url: high.database_url.or(low.database_url),
        db_max_connections: high.db_max_connections.or(low.db_max_connections),
        worker_id: high.worker_id.or(low.worker_id),
        tls_cert: high.tls_cert.or(low.tls_cert),
        tls_key: high.tls_key.or(low.tls_key),
        tls_hosts: high.tls_hosts.or(low.tls_hosts),
        insecure_http: high.insecure_http.or(low.insecure_http),
        admin_password: high.admin_password.or(low.admin_password),
        token_ttl_s: high.token_ttl_s.or(low.token_ttl_s),
        body_limit: high.body_limit.or(low.body_limit),
        workers: high.workers.or(low.workers),
        log: high.log.or(low.log),
        change_log_retain_h: high.change_log_retain_h.or(low.change_log_retain_h),
        max_clock_skew_ms: high.max_clock_skew_ms.or(low.max_clock_skew_ms),
        event_retain_days: high.event_retain_days.or(low.event_retain_days),
        shutdown_timeout_s: high.shutdown_timeout_s.or(low.shutdown_timeout_s),
    }
}
