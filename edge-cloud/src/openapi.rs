//! The OpenAPI 3 document of an edge's site API, generated from the handlers.

use operator_api::{auth, commands, configs, devices, events, health, metrics, pulled_logs, users};

use crate::{artifacts, status, uploads};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Edge cloud site API",
        description = "The site API of one edge cloud, with the same envelope, login and \
conventions as the center's API: `{status, message, data}`, errors with a stable `code` and \
the offending `field`, ids as strings, `Authorization: Bearer <token>` from `/api/v1/auth/login`."
    ),
    paths(
        auth::login,
        users::list, users::create, users::get, users::update, users::delete,
        users::groups, users::add_groups, users::replace_groups, users::remove_groups,
        devices::list, devices::create, devices::get, devices::update, devices::delete,
        devices::rotate_secret, status::get, configs::put, configs::get, devices::groups_of, devices::join_groups, devices::leave_groups,
        commands::create, commands::list, commands::get, commands::cancel,
        commands::for_group, commands::batch,
        pulled_logs::list, pulled_logs::download, uploads::logs, artifacts::content,
        events::list,
        health::healthz, health::readyz, metrics::scrape,
    ),
    tags(
        (name = "auth", description = "Login"),
        (name = "users", description = "Site accounts (admin)"),
        (name = "devices", description = "The devices of this site"),
        (name = "memberships", description = "Group membership of a device"),
        (name = "commands", description = "Commands to devices: sent at once to a connected device, queued for one that is away, expired past their deadline"),
        (name = "artifacts", description = "Software artifacts, fetched from the center once and served to this site's devices"),
        (name = "events", description = "Audit and device events"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    let mut api = operator_api::docs::with_bearer(ApiDoc::openapi());
    if let Some(components) = api.components.as_mut() {
        components.add_security_scheme(
            "device_basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
    api
}
