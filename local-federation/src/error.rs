//! The one error type of the tool. A failure that concerns a child process names the
//! process and its log file and shows the log's last lines, because that is where the
//! reason is.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid options: {0}")]
    Options(String),
    #[error("building the binaries: {0}")]
    Build(String),
    #[error(
        "{} is missing: build the workspace first (`cargo build --workspace`), \
         or point --bin-dir at the directory holding center-cloud, edge-cloud and device-agent",
        path.display()
    )]
    MissingBinary { path: PathBuf },
    #[error("state file {}: {message}", path.display())]
    State { path: PathBuf, message: String },
    #[error("{} is held by another local-federation; stop it first", path.display())]
    Locked { path: PathBuf },
    #[error("{name} {problem}\n  log: {}\n{tail}", log.display())]
    Process {
        name: String,
        problem: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{action}")]
    Database {
        action: String,
        #[source]
        source: sea_orm::DbErr,
    },
    #[error("center API, {action}: {message}")]
    Api { action: String, message: String },
    #[error("{0}")]
    Once(String),
}

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}
