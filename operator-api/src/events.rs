//! The event log as `GET /api/v1/events` lists it (recording and retention are the
//! core's, `fleet_node::events`).

use actix_web::{web, HttpRequest, HttpResponse};
use fleet_store::events;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::reply::{PageRequest, Paged};
use crate::{input, reply, ApiError, Caller, Node};

#[derive(Debug, Serialize, ToSchema)]
pub struct Event {
    pub id: String,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    /// `ok` or `error`.
    pub outcome: String,
    pub status_code: i32,
    pub detail: String,
}

impl From<events::Model> for Event {
    fn from(m: events::Model) -> Self {
        Self {
            id: m.id.to_string(),
            at: m.at,
            actor: m.actor,
            action: m.action,
            target_type: m.target_type,
            target_id: m.target_id,
            outcome: m.outcome,
            status_code: m.status_code,
            detail: m.detail,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventFilter {
    /// Exact username.
    pub actor: Option<String>,
    /// Substring of the action, e.g. `devices`.
    pub action: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// `ok` or `error`.
    pub outcome: Option<String>,
    /// From this time on (ms since epoch).
    pub since: Option<i64>,
    /// Before this time (ms since epoch).
    pub until: Option<i64>,
    pub page: Option<u64>,
    pub per_page: Option<u64>,
}

/// List events, newest first. Admins see every event; others see their own.
///
/// Recorded: every change an authenticated caller asked for (and how it ended), logins
/// of known accounts (a run of failures as its first and the one reaching the
/// account's limit), and changes made without an operator. Failed requests without an
/// authenticated caller (bad tokens, unknown routes, logins as unknown names, throttled
/// logins) are counted in `/metrics` as `http_unrecorded_requests_total` instead.
/// Events older than the node's retention (`--event-retain-days`) are deleted.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventFilter),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of events", body = inline(Paged<Event>))))]
pub async fn list(
    req: HttpRequest,
    node: web::Data<Node>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let f: EventFilter = input::query(&req)?;
    let page = PageRequest::new(f.page, f.per_page)?;
    if let Some(o) = &f.outcome {
        if o != "ok" && o != "error" {
            return Err(ApiError::invalid("outcome", "must be `ok` or `error`"));
        }
    }
    let mut q = events::Entity::find();
    if !caller.is_admin() {
        q = q.filter(events::Column::Actor.eq(caller.username.as_str()));
    }
    if let Some(v) = f.actor {
        q = q.filter(events::Column::Actor.eq(v));
    }
    if let Some(v) = f.action {
        q = q.filter(events::Column::Action.contains(v));
    }
    if let Some(v) = f.target_type {
        q = q.filter(events::Column::TargetType.eq(v));
    }
    if let Some(v) = f.target_id {
        q = q.filter(events::Column::TargetId.eq(v));
    }
    if let Some(v) = f.outcome {
        q = q.filter(events::Column::Outcome.eq(v));
    }
    if let Some(v) = f.since {
        q = q.filter(events::Column::At.gte(v));
    }
    if let Some(v) = f.until {
        q = q.filter(events::Column::At.lt(v));
    }
    let total = crate::reply::count(&node.db, q.clone()).await?;
    let rows = q
        .order_by_desc(events::Column::At)
        .order_by_desc(events::Column::Id)
        .offset(page.offset())
        .limit(page.per_page)
        .all(&node.db)
        .await?;
    Ok(reply::ok(
        page.wrap(rows.into_iter().map(Event::from).collect(), total),
    ))
}
