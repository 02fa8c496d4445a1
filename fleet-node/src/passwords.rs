//! Operator passwords, hashed with Argon2id.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use crate::Error;

pub fn hash(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("hashing a password: {e}")))
}

pub fn matches(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Hashing runs on the blocking pool: an Argon2 hash takes tens of milliseconds.
pub async fn hash_blocking(password: String) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || hash(&password))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
}

pub fn check_policy(field: &str, password: &str) -> Result<(), Error> {
    let n = password.chars().count();
    if !(8..=128).contains(&n) {
        return Err(Error::invalid(field, "must be 8 to 128 characters"));
    }
    Ok(())
}
