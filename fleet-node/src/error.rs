//! The one error type of a node's core. Each variant is one of the envelope's stable
//! codes (`shared_proto::ErrorCode`), so every door (HTTP, the device hub, the
//! federation link) answers the same failure the same way. Internal details are kept
//! for the log, never shown.

use shared_proto::{ErrorCode, FieldError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{message}")]
    NotFound {
        field: Option<String>,
        message: String,
    },
    #[error("{message}")]
    AlreadyExists { field: String, message: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{field}: {message}")]
    TooLarge { field: String, message: String },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("too many failed attempts; retry in {0} s")]
    TooManyAttempts(u64),
    #[error("{0}")]
    Unavailable(String),
    /// A write that kept losing races with other writers (`fleet_store::write`).
    #[error("the write met concurrent writes of the same rows; retry")]
    Contended(String),
    #[error("internal error")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Error::NotFound {
            field: None,
            message: message.into(),
        }
    }

    /// A reference in the request body (named by `field`) to something that does not exist.
    pub fn missing_ref(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::NotFound {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn exists(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::AlreadyExists {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            Error::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Error::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            Error::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Error::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Error::TooManyAttempts(_) => ErrorCode::ResourceExhausted,
            Error::Unavailable(_) | Error::Contended(_) => ErrorCode::Unavailable,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The request field the error is about, if one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::InvalidArgument { field, .. }
            | Error::AlreadyExists { field, .. }
            | Error::TooLarge { field, .. } => Some(field),
            Error::NotFound { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    /// What the caller is told: never an internal detail.
    pub fn public_message(&self) -> String {
        match self {
            Error::InvalidArgument { field, message } | Error::TooLarge { field, message } => {
                format!("{field} {message}")
            }
            other => other.to_string(),
        }
    }

    /// Seconds after which trying again may succeed, where that is known.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            Error::TooManyAttempts(seconds) => Some(*seconds),
            Error::Contended(_) | Error::Unavailable(_) => Some(1),
            _ => None,
        }
    }
}

impl From<FieldError> for Error {
    fn from(e: FieldError) -> Self {
        Error::invalid(e.field, e.message)
    }
}

impl From<sea_orm::DbErr> for Error {
    fn from(e: sea_orm::DbErr) -> Self {
        match e {
            sea_orm::DbErr::ConnectionAcquire(_) | sea_orm::DbErr::Conn(_) => {
                tracing::warn!(error = %e, "database unavailable");
                Error::Unavailable("the database is unavailable; retry shortly".into())
            }
            other if fleet_store::write::contended(&other) => Error::Contended(other.to_string()),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl fleet_store::write::Contended for Error {
    fn contended(&self) -> bool {
        matches!(self, Error::Contended(_))
    }
}
