//! Machine credentials (device and edge secrets). They are 256-bit random strings, so
//! a slow password hash buys nothing; a keyed hash (HMAC-SHA256 with a per-secret
//! random key) is safe against a leaked table and cheap enough for a reconnect storm
//! of 100k devices. The stored form is self-describing: `hmac-sha256$KEY$MAC`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const SCHEME: &str = "hmac-sha256";

/// A fresh secret to hand out once.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hash_secret(secret: &str) -> String {
    let mut key = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut key);
    let tag = mac(&key, secret).finalize().into_bytes();
    format!(
        "{SCHEME}${}${}",
        URL_SAFE_NO_PAD.encode(key),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// Constant-time check of a presented secret against its stored hash.
pub fn verify_secret(secret: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some(SCHEME), Some(key), Some(tag), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(key), Ok(tag)) = (URL_SAFE_NO_PAD.decode(key), URL_SAFE_NO_PAD.decode(tag)) else {
        return false;
    };
    mac(&key, secret).verify_slice(&tag).is_ok()
}

fn mac(key: &[u8], secret: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(secret.as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_verify_only_against_their_own_hash() {
        let secret = generate_secret();
        assert!(secret.len() >= 43);
        let stored = hash_secret(&secret);
        assert!(!stored.contains(&secret));
        assert!(verify_secret(&secret, &stored));
        assert!(!verify_secret(&generate_secret(), &stored));
        assert!(!verify_secret(&secret, "garbage"));
        assert!(!verify_secret(&secret, "hmac-sha256$$"));
        assert_ne!(stored, hash_secret(&secret), "each hash has its own key");
    }
}
