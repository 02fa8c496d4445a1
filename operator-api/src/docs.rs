//! API documentation and the envelope for everything the router itself answers
//! (unknown routes, oversized bodies, wrong methods), so clients never see a
//! non-envelope error.

use actix_web::dev::ServiceResponse;
use actix_web::http::header;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{web, HttpRequest, HttpResponse};
use shared_proto::ErrorCode;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi;
use utoipa_redoc::{Redoc, Servable};
use utoipa_swagger_ui::SwaggerUi;

/// Adds the bearer-token scheme that the `security(("bearer" = []))` clauses name.
pub fn with_bearer(mut api: OpenApi) -> OpenApi {
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    api
}

/// `/openapi.json`, Redoc at `/docs`, Swagger UI at `/docs/swagger` (redirected to
/// `/docs/swagger/`, which its assets are relative to).
pub fn configure(cfg: &mut web::ServiceConfig, api: OpenApi) {
    cfg.route(
        "/docs/swagger",
        web::get().to(|| async {
            HttpResponse::PermanentRedirect()
                .insert_header((header::LOCATION, "/docs/swagger/"))
                .finish()
        }),
    )
    .service(Redoc::with_url("/docs", api.clone()))
    .service(SwaggerUi::new("/docs/swagger/{_:.*}").url("/openapi.json", api));
}

fn code_for(status: u16) -> ErrorCode {
    match status {
        401 => ErrorCode::Unauthenticated,
        403 => ErrorCode::PermissionDenied,
        404 | 405 => ErrorCode::NotFound,
        413 => ErrorCode::PayloadTooLarge,
        429 => ErrorCode::ResourceExhausted,
        503 => ErrorCode::Unavailable,
        504 => ErrorCode::DeadlineExceeded,
        s if s >= 500 => ErrorCode::Internal,
        _ => ErrorCode::InvalidArgument,
    }
}

fn envelope(status: u16, message: &str) -> serde_json::Value {
    serde_json::json!({"status": status, "message": message, "data": null, "code": code_for(status)})
}

/// The fallback route: 404 in the envelope.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    HttpResponse::NotFound().json(envelope(
        404,
        &format!("no route for {} {}", req.method(), req.path()),
    ))
}

/// Rewrites any error response that is not already an envelope.
pub fn envelope_errors<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let message = match status.as_u16() {
        413 => "the request body is too large".to_string(),
        405 => "method not allowed on this route".to_string(),
        _ => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
    };
    let (req, _) = res.into_parts();
    let response = HttpResponse::build(status).json(envelope(status.as_u16(), &message));
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, response).map_into_right_body(),
    ))
}
