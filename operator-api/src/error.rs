//! The core's error (`fleet_node::Error`) as an HTTP answer: its status, the
//! envelope with the stable code and the field at fault, and `Retry-After` where
//! trying again helps. Internal details are logged, never sent.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use fleet_node::Error;
use shared_proto::FieldError;

use crate::audit::AuditDetail;

/// What a handler fails with: any core error, answered over HTTP.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ApiError(#[from] pub Error);

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self(Error::invalid(field, message))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self(Error::not_found(message))
    }

    /// A reference in the request body (named by `field`) to something that does not exist.
    pub fn missing_ref(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self(Error::missing_ref(field, message))
    }

    pub fn exists(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self(Error::exists(field, message))
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self(e.into())
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self(e.into())
    }
}

impl fleet_store::write::Contended for ApiError {
    fn contended(&self) -> bool {
        self.0.contended()
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.code().http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        match &self.0 {
            Error::Internal(detail) => tracing::error!(error = %detail, "internal error"),
            Error::Contended(detail) => {
                tracing::warn!(error = %detail, "a write kept meeting concurrent writes");
            }
            _ => {}
        }
        let message = self.0.public_message();
        let mut body = serde_json::json!({
            "status": self.status_code().as_u16(),
            "message": message,
            "data": null,
            "code": self.0.code(),
        });
        if let Some(field) = self.0.field() {
            body["field"] = serde_json::Value::String(field.to_string());
        }
        let mut builder = HttpResponse::build(self.status_code());
        if let Some(seconds) = self.0.retry_after_s() {
            builder.insert_header(("retry-after", seconds.to_string()));
        }
        let mut response = builder.json(body);
        response
            .extensions_mut()
            .insert(AuditDetail(format!("{:?}: {message}", self.0.code())));
        response
    }
}
