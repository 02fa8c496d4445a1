//! Operator tokens: short-lived HS256 JWTs. A token names its account and when it
//! was issued, so an account changed after that (`accounts`) no longer honours it.

use std::time::Duration;

use fleet_store::users;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::Error;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    /// Issue time in milliseconds, compared with the account's last change.
    pub iat_ms: i64,
    pub exp: u64,
}

pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl Tokens {
    pub fn new(key: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            ttl,
        }
    }

    /// A token for `user`, and when it expires (seconds since the epoch).
    pub fn issue(&self, user: &users::Model) -> Result<(String, i64), Error> {
        let now = fleet_store::now_ms();
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_ms = now.saturating_add(ttl_ms);
        let claims = Claims {
            sub: user.id.to_string(),
            role: user.role.clone(),
            iat_ms: now,
            exp: u64::try_from(expires_ms / 1000).unwrap_or(0),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Internal(format!("signing a token: {e}")))?;
        Ok((token, expires_ms / 1000))
    }

    pub fn verify(&self, token: &str) -> Result<Claims, Error> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    Error::Unauthenticated("the token has expired; log in again".into())
                }
                _ => Error::Unauthenticated("the token is not valid".into()),
            })
    }
}
