//! The OpenAPI 3 document of the center, generated from the handlers' annotations.

use utoipa::OpenApi;

use crate::{artifacts, bulk, edges, groups, lab, rollouts};
use operator_api::{auth, commands, configs, devices, events, health, metrics, pulled_logs, users};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Center cloud API",
        description = "Operators' API of the device federation. Every response is an envelope \
`{status, message, data}`; errors add a stable `code` and, for bad input, the offending `field`. \
Ids are strings. Log in at `/api/v1/auth/login` and send `Authorization: Bearer <token>`."
    ),
    paths(
        auth::login,
        users::list, users::create, users::get, users::update, users::delete,
        users::groups, users::add_groups, users::replace_groups, users::remove_groups,
        devices::list, devices::create, devices::get, devices::update, devices::delete,
        devices::rotate_secret, devices::groups_of, devices::join_groups, devices::leave_groups,
        bulk::export, bulk::import,
        groups::list, groups::create, groups::get, groups::update, groups::delete,
        groups::members, groups::add_members, groups::replace_members, groups::remove_members,
        edges::list, edges::create, edges::get, edges::update, edges::delete, edges::rotate_secret,
        commands::create, commands::list, commands::get, commands::cancel,
        commands::for_group, commands::batch, edges::commands,
        configs::put, configs::get, pulled_logs::list, pulled_logs::download,
        events::list,
        lab::find, lab::add, lab::update, lab::remove,
        artifacts::list, artifacts::upload, artifacts::get, artifacts::delete,
        artifacts::content, artifacts::signing_key,
        rollouts::create, rollouts::list, rollouts::get, rollouts::devices,
        rollouts::pause, rollouts::resume, rollouts::abort,
        health::healthz, health::readyz, metrics::scrape,
    ),
    tags(
        (name = "auth", description = "Login"),
        (name = "users", description = "Operator accounts and their group scopes (admin)"),
        (name = "devices", description = "The device registry"),
        (name = "groups", description = "Device groups"),
        (name = "memberships", description = "Which devices are in which groups, from either side"),
        (name = "edges", description = "Edge clouds (admin)"),
        (name = "commands", description = "Commands to devices, routed to their home edge: sent at once down its link, and carried by change-sync when the link is down"),
        (name = "events", description = "Audit events"),
        (name = "artifacts", description = "Software artifacts with signed manifests: writers upload, admins delete, everyone signed in reads"),
        (name = "rollouts", description = "Artifacts installed on devices in waves, with success and error thresholds: writers make and steer them, scoped operators over their groups"),
        (name = "seed lab contract", description = "The seed lab's `/v1/devices` contract, unchanged"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
    let mut api = operator_api::docs::with_bearer(ApiDoc::openapi());
    let mut edge = Http::new(HttpAuthScheme::Basic);
    edge.description =
        Some("An edge's id and secret, for the artifacts its devices install".into());
    api.components
        .get_or_insert_with(Default::default)
        .add_security_scheme("edge", SecurityScheme::Http(edge));
    api
}
