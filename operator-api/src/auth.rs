//! Operator login, and the caller behind a request. Logins get a short-lived token
//! (`fleet_node::tokens`). Every request checks the token against the account as it
//! is now (cached per node, `fleet_node::accounts`), so a deleted account or a
//! changed password or role takes effect at once, not at token expiry.

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse};
use fleet_node::metrics::LoginOutcome;
use fleet_node::{passwords, throttle, Actor, Error, Role};
use fleet_store::users;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{AuditActor, AuditDeferred, AuditTarget};
use crate::{input, reply, ApiError, Node};

/// The authenticated account behind a request: a handler that takes one refuses a
/// request without a valid token (401) before it runs.
#[derive(Debug, Clone)]
pub struct Caller(pub Actor);

impl std::ops::Deref for Caller {
    type Target = Actor;

    fn deref(&self) -> &Actor {
        &self.0
    }
}

fn bearer(req: &HttpRequest) -> Result<&str, Error> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            Error::Unauthenticated("log in and send Authorization: Bearer <token>".into())
        })?;
    header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Error::Unauthenticated("the Authorization header must be `Bearer <token>`".into())
        })
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let node = req
                .app_data::<web::Data<Node>>()
                .ok_or_else(|| Error::Internal("node state missing".into()))?
                .clone();
            let claims = node.tokens.verify(bearer(&req)?)?;
            let id: i64 = claims
                .sub
                .parse()
                .map_err(|_| Error::Unauthenticated("the token is not valid".into()))?;
            let actor = node.accounts.actor(&node.db, id, claims.iat_ms).await?;
            req.extensions_mut()
                .insert(AuditActor(actor.username.clone()));
            Ok(Caller(actor))
        })
    }
}

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    pub token: String,
    /// Expiry as seconds since the Unix epoch.
    pub expires_at: i64,
    pub role: Role,
}

/// A hash to verify against when the username is unknown, so that a wrong username
/// and a wrong password take the same time.
fn decoy_hash() -> String {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY
        .get_or_init(|| passwords::hash("decoy password").unwrap_or_default())
        .clone()
}

/// Whether this failed login of a known account goes to the event log. A flood of
/// guesses must not write a row per guess: the first failure of the account in the
/// throttle window is recorded, and the one that reaches the account's limit (after
/// which the throttle refuses it); the rest are counted in metrics only. A success
/// clears the count, so the next failure is recorded again.
fn failure_is_recorded(account_failures: usize) -> bool {
    account_failures == 1 || account_failures == throttle::MAX_FAILURES_PER_ACCOUNT
}

/// The address a request came from (the unspecified address when unknown, which
/// then throttles all such requests together).
pub fn source_of(req: &HttpRequest) -> std::net::IpAddr {
    req.peer_addr()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip())
}

/// Checks `password` against `user`'s, counting the check in the login throttle under
/// `account` from `source` (the throttle's check and count are one step). Answers the
/// still-open attempt, so the caller decides what a failure records.
pub async fn verify_throttled<'a>(
    node: &'a Node,
    source: std::net::IpAddr,
    account: &str,
    stored_hash: Option<String>,
    password: String,
) -> Result<(bool, throttle::Attempt<'a>), ApiError> {
    let attempt = match node.login_throttle.try_begin(source, account) {
        Ok(attempt) => attempt,
        Err(wait) => {
            node.metrics.count_login(LoginOutcome::Throttled);
            return Err(Error::TooManyAttempts(wait.as_secs().max(1)).into());
        }
    };
    let matches =
        web::block(move || passwords::matches(&password, &stored_hash.unwrap_or_else(decoy_hash)))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
    node.metrics.count_login(if matches {
        LoginOutcome::Ok
    } else {
        LoginOutcome::Failed
    });
    Ok((matches, attempt))
}

/// Log in with a username and password.
///
/// Failed attempts are limited per source address and account, per account and per
/// source address; past a limit the answer is 429 with Retry-After, even for the right
/// password, until the oldest counted failure is 5 minutes old. A success clears only
/// its own account's counts.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses((status = 200, description = "A bearer token", body = LoginResponse),
              (status = 401, description = "Wrong username or password"),
              (status = 429, description = "Too many failed attempts; see Retry-After")))]
pub async fn login(
    req: HttpRequest,
    node: web::Data<Node>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let login: LoginRequest = input::json(&body)?;
    if login.username.is_empty() || login.username.len() > 64 {
        return Err(ApiError::invalid("username", "must be 1 to 64 characters"));
    }
    if login.password.is_empty() || login.password.len() > 128 {
        return Err(ApiError::invalid("password", "must be 1 to 128 characters"));
    }
    let source = source_of(&req);
    let user = users::Entity::find()
        .filter(users::Column::Username.eq(login.username.as_str()))
        .one(&node.db)
        .await?;
    // The throttle counts a known account under its stored name, so spellings the
    // database takes as the same name do not get fresh counts.
    let account = user
        .as_ref()
        .map_or(login.username.as_str(), |u| u.username.as_str());
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let (matches, attempt) =
        verify_throttled(&node, source, account, stored, login.password).await?;
    let user = match user {
        Some(u) if matches => u,
        Some(u) => {
            if failure_is_recorded(attempt.account_failures()) {
                req.extensions_mut().insert(AuditActor(u.username));
                req.extensions_mut().insert(AuditDeferred);
            }
            attempt.failed();
            return Err(Error::Unauthenticated("wrong username or password".into()).into());
        }
        // Unknown names are not recorded: anyone can send them, as many as they like.
        None => {
            attempt.failed();
            return Err(Error::Unauthenticated("wrong username or password".into()).into());
        }
    };
    attempt.succeeded();
    req.extensions_mut()
        .insert(AuditActor(user.username.clone()));
    let role = Role::parse(&user.role)
        .ok_or_else(|| Error::Internal(format!("user {} has role {:?}", user.id, user.role)))?;
    let (token, expires_at) = node.tokens.issue(&user)?;
    let mut response = reply::ok(LoginResponse {
        token,
        expires_at,
        role,
    });
    response
        .extensions_mut()
        .insert(AuditTarget(user.id.to_string()));
    Ok(response)
}
