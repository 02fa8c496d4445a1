//! The one error type of the operator APIs, mapped to HTTP statuses and the stable
//! codes of the envelope. Internal details are logged, never sent.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use shared_proto::{ErrorCode, FieldError};

use crate::audit::AuditDetail;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::NotFound {
            field: None,
            message: message.into(),
        }
    }

    /// A reference in the request body (named by `field`) to something that does not exist.
    pub fn missing_ref(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::NotFound {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn exists(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::AlreadyExists {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            ApiError::NotFound { .. } => ErrorCode::NotFound,
            ApiError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            ApiError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            ApiError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            ApiError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            ApiError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            ApiError::TooManyAttempts(_) => ErrorCode::ResourceExhausted,
            ApiError::Unavailable(_) | ApiError::Contended(_) => ErrorCode::Unavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::InvalidArgument { field, .. }
            | ApiError::AlreadyExists { field, .. }
            | ApiError::TooLarge { field, .. } => Some(field),
            ApiError::NotFound { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    fn public_message(&self) -> String {
        match self {
            ApiError::InvalidArgument { field, message }
            | ApiError::TooLarge { field, message } => {
                format!("{field} {message}")
            }
            other => other.to_string(),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::invalid(e.field, e.message)
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        match e {
            sea_orm::DbErr::ConnectionAcquire(_) | sea_orm::DbErr::Conn(_) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::Unavailable("the database is unavailable; retry shortly".into())
            }
            other if fleet_store::write::contended(&other) => {
                ApiError::Contended(other.to_string())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl fleet_store::write::Contended for ApiError {
    fn contended(&self) -> bool {
        matches!(self, ApiError::Contended(_))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(detail) = self {
            tracing::error!(error = %detail, "internal error");
        }
        let message = self.public_message();
        let mut body = serde_json::json!({
            "status": self.status_code().as_u16(),
            "message": message,
            "data": null,
            "code": self.code(),
        });
        if let Some(field) = self.field() {
            body["field"] = serde_json::Value::String(field.to_string());
        }
        let mut builder = HttpResponse::build(self.status_code());
        match self {
            ApiError::TooManyAttempts(seconds) => {
                builder.insert_header(("retry-after", seconds.to_string()));
            }
            ApiError::Contended(detail) => {
                tracing::warn!(error = %detail, "a write kept meeting concurrent writes");
                builder.insert_header(("retry-after", "1"));
            }
            _ => {}
        }
        let mut response = builder.json(body);
        response
            .extensions_mut()
            .insert(AuditDetail(format!("{:?}: {message}", self.code())));
        response
    }
}
