//! Configuration: defaults in code, overridden by a TOML file, then by environment
//! variables (`CENTER_…`), then by command-line flags. `center-cloud serve --help`
//! lists every setting with its default and variable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the REST API.
    Serve(Box<ServeArgs>),
    /// Print the database schema DDL this binary creates.
    PrintSchema {
        #[arg(long, value_enum, default_value_t = Dialect::Mysql)]
        dialect: Dialect,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Dialect {
    Mysql,
    Sqlite,
}

#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (flags and variables override it).
    #[arg(long, env = "CENTER_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8443].
    #[arg(long, env = "CENTER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the SQLite database and generated TLS material [default: ./data/center].
    #[arg(long, env = "CENTER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL, `mysql://user:pass@host/db` or `sqlite://file` [default: SQLite in the data directory].
    #[arg(long, env = "CENTER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Largest number of pooled database connections [default: 16].
    #[arg(long, env = "CENTER_DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,
    /// Snowflake worker id of this node, 1..=1023 [default: 1].
    #[arg(long, env = "CENTER_WORKER_ID")]
    pub worker_id: Option<i64>,
    /// PEM certificate chain to serve [default: a development certificate generated in DATA_DIR/tls].
    #[arg(long, env = "CENTER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "CENTER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Extra DNS names or IPs for the generated development certificate (comma separated).
    #[arg(long, env = "CENTER_TLS_HOSTS", value_delimiter = ',')]
    pub tls_hosts: Option<Vec<String>>,
    /// Serve plain HTTP instead of HTTPS (for a TLS-terminating proxy only) [default: false].
    #[arg(long, env = "CENTER_INSECURE_HTTP", num_args = 0..=1, default_missing_value = "true")]
    pub insecure_http: Option<bool>,
    /// Password of the `admin` account created on first start [default: random, printed once].
    #[arg(long, env = "CENTER_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Lifetime of login tokens in seconds [default: 3600].
    #[arg(long, env = "CENTER_TOKEN_TTL")]
    pub token_ttl_s: Option<u64>,
    /// Largest JSON request body in bytes [default: 1048576].
    #[arg(long, env = "CENTER_BODY_LIMIT")]
    pub body_limit: Option<usize>,
    /// Largest CSV import body in bytes [default: 67108864].
    #[arg(long, env = "CENTER_IMPORT_LIMIT")]
    pub import_limit: Option<usize>,
    /// HTTP worker threads [default: one per core].
    #[arg(long, env = "CENTER_WORKERS")]
    pub workers: Option<usize>,
    /// Log filter, e.g. `info` or `center_cloud=debug,info` [default: info].
    #[arg(long, env = "CENTER_LOG")]
    pub log: Option<String>,
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

/// The resolved settings of a center.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub db_max_connections: u32,
    pub worker_id: i64,
    pub tls: TlsSettings,
    pub admin_password: Option<String>,
    pub token_ttl_s: u64,
    pub body_limit: usize,
    pub import_limit: usize,
    pub workers: Option<usize>,
    pub log: String,
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

impl Settings {
    /// Defaults for a center keeping its state in `data_dir`.
    pub fn with_data_dir(data_dir: &Path) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            data_dir: data_dir.to_path_buf(),
            database_url: sqlite_url(data_dir),
            db_max_connections: 16,
            worker_id: 1,
            tls: TlsSettings::Development {
                extra_hosts: Vec::new(),
            },
            admin_password: None,
            token_ttl_s: 3600,
            body_limit: 1024 * 1024,
            import_limit: 64 * 1024 * 1024,
            workers: None,
            log: "info".into(),
        }
    }

    /// Layers the config file (if any) under the flags and variables in `args`.
    pub fn resolve(args: ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<ServeArgs>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => ServeArgs::default(),
        };
        let s = merge(args, file);
        let data_dir = s.data_dir.unwrap_or_else(|| PathBuf::from("data/center"));
        let mut out = Settings::with_data_dir(&data_dir);
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
        if let Some(v) = s.import_limit {
            out.import_limit = v;
        }
        out.workers = s.workers;
        if let Some(v) = s.log {
            out.log = v;
        }
        Ok(out)
    }
}

fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("center.db").display())
}

/// Field by field, the first of `high` and `low` that is set.
fn merge(high: ServeArgs, low: ServeArgs) -> ServeArgs {
    ServeArgs {
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
        import_limit: high.import_limit.or(low.import_limit),
        workers: high.workers.or(low.workers),
        log: high.log.or(low.log),
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
            "listen = \"127.0.0.1:9000\"\nworker_id = 3\ntoken_ttl_s = 60\n",
        )
        .expect("write");
        let args = ServeArgs {
            config: Some(path),
            worker_id: Some(5),
            ..Default::default()
        };
        let s = Settings::resolve(args).expect("resolves");
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.worker_id, 5);
        assert_eq!(s.token_ttl_s, 60);
        assert_eq!(s.body_limit, 1024 * 1024);
        assert!(s.database_url.ends_with("data/center/center.db"));
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("center.toml");
        std::fs::write(&path, "lisen = \"x\"\n").expect("write");
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        assert!(matches!(
            Settings::resolve(args),
            Err(ConfigError::Parse { .. })
        ));
    }
}
