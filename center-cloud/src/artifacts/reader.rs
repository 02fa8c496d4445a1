//! Who may read an artifact: a signed-in operator (a bearer token), or an edge with
//! its own id and secret as HTTP Basic credentials, which fetches the files its
//! site's devices install. An edge reads artifacts and nothing else this way.

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use fleet_node::{Error, Node};
use fleet_store::credentials::verify_secret;
use fleet_store::edges;
use operator_api::audit::AuditActor;
use operator_api::{ApiError, Caller};
use sea_orm::EntityTrait;

/// A caller allowed to read artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    Operator,
    /// The edge of this id, authenticated by its secret.
    Edge(i64),
}

impl FromRequest for Reader {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let basic = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .map(str::to_string);
        let Some(basic) = basic else {
            let operator = Caller::from_request(req, payload);
            return Box::pin(async move { operator.await.map(|_| Reader::Operator) });
        };
        let req = req.clone();
        Box::pin(async move {
            let node = req
                .app_data::<web::Data<Node>>()
                .ok_or_else(|| Error::Internal("node state missing".into()))?
                .clone();
            let edge = edge_of(&node, &basic).await?;
            req.extensions_mut()
                .insert(AuditActor(format!("edge:{edge}")));
            Ok(Reader::Edge(edge))
        })
    }
}

/// The edge that `basic` (base64 of `edge_id:secret`) names, if the secret is its own.
async fn edge_of(node: &Node, basic: &str) -> Result<i64, ApiError> {
    let refused = || {
        ApiError(Error::Unauthenticated(
            "the edge credentials are not valid".into(),
        ))
    };
    let decoded = B64.decode(basic.trim()).map_err(|_| refused())?;
    let text = String::from_utf8(decoded).map_err(|_| refused())?;
    let (id, secret) = text.split_once(':').ok_or_else(refused)?;
    let id: i64 = id.parse().map_err(|_| refused())?;
    let edge = edges::Entity::find_by_id(id)
        .one(&node.db)
        .await?
        .ok_or_else(refused)?;
    if verify_secret(secret, &edge.secret_hash) {
        Ok(id)
    } else {
        Err(refused())
    }
}
