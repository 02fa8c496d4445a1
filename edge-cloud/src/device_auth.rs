//! Devices calling the site API over HTTP (log uploads, artifact downloads) with
//! their own credentials, HTTP Basic `device_id:secret`, checked like a southbound
//! login. A refusal does not say why, and failures are throttled per source address.

use actix_web::http::header;
use actix_web::HttpRequest;
use base64::Engine;
use fleet_node::throttle::LoginThrottle;
use fleet_node::{Error, Node};
use operator_api::ApiError;
use shared_proto::southbound::Login;

use crate::hub::authenticate;

#[derive(Default)]
pub struct DeviceAuth {
    throttle: LoginThrottle,
}

/// `device_id` and `secret` from `Authorization: Basic …`.
fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

impl DeviceAuth {
    /// The id of the device whose credentials `req` carries.
    pub async fn device(&self, node: &Node, req: &HttpRequest) -> Result<i64, ApiError> {
        let source = req
            .peer_addr()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        if let Err(wait) = self.throttle.check(source) {
            return Err(Error::TooManyAttempts(wait.as_secs().max(1)).into());
        }
        let refused = || Error::Unauthenticated("device credentials were not accepted".into());
        let Some((device_id, secret)) = basic_credentials(req) else {
            self.throttle.failed(source);
            return Err(refused().into());
        };
        let login = Login {
            device_id: Some(device_id),
            sn: None,
            model: None,
            secret,
            agent_version: String::new(),
        };
        let Some(device) = authenticate(&node.db, &login).await?.map(|d| d.id) else {
            self.throttle.failed(source);
            return Err(refused().into());
        };
        self.throttle.succeeded(source);
        Ok(device)
    }
}
