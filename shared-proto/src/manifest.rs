//! The signed manifest of a software artifact. The center signs what it stored (id,
//! name, version, size, SHA-256) with its Ed25519 key; a device checks the signature
//! with the public key it was configured with, then the file's digest against the
//! manifest, and installs nothing that fails either. The signature covers the
//! manifest's exact JSON text, so nobody re-encodes it on the way.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::signature::{UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What the center vouches for about one artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Manifest {
    pub id: String,
    pub name: String,
    pub version: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
}

impl Manifest {
    /// The text that is signed and shipped.
    pub fn to_text(&self) -> String {
        // A struct of strings and a number always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why a manifest was not believed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("the public key is not base64 of 32 bytes")]
    BadKey,
    #[error("the signature is not base64")]
    BadSignatureEncoding,
    #[error("the signature does not verify with the configured key")]
    BadSignature,
    #[error("the manifest is not a manifest: {0}")]
    Malformed(String),
}

/// The raw key of `public_key`, base64 of a 32-byte Ed25519 public key.
pub fn public_key(public_key: &str) -> Result<Vec<u8>, ManifestError> {
    B64.decode(public_key.trim())
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or(ManifestError::BadKey)
}

/// The manifest `text` as its signature vouches for it, checked with `public_key`
/// (base64 of the raw 32-byte Ed25519 key).
pub fn verify(public_key: &str, text: &str, signature: &str) -> Result<Manifest, ManifestError> {
    let key = self::public_key(public_key)?;
    let signature = B64
        .decode(signature.trim())
        .map_err(|_| ManifestError::BadSignatureEncoding)?;
    UnparsedPublicKey::new(&ED25519, key)
        .verify(text.as_bytes(), &signature)
        .map_err(|_| ManifestError::BadSignature)?;
    serde_json::from_str(text).map_err(|e| ManifestError::Malformed(e.to_string()))
}

/// Lowercase hex of `bytes` (a digest as manifests write it).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn signed(manifest: &Manifest) -> (String, String, String) {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
        let text = manifest.to_text();
        let signature = B64.encode(pair.sign(text.as_bytes()).as_ref());
        (B64.encode(pair.public_key().as_ref()), text, signature)
    }

    #[test]
    fn a_signed_manifest_verifies_and_any_change_does_not() {
        let m = Manifest {
            id: "42".into(),
            name: "firmware".into(),
            version: "2.0.1".into(),
            size: 10,
            sha256: hex(&[0xab; 32]),
        };
        let (key, text, signature) = signed(&m);
        assert_eq!(verify(&key, &text, &signature), Ok(m.clone()));
        let tampered = text.replace("2.0.1", "2.0.2");
        assert_eq!(
            verify(&key, &tampered, &signature),
            Err(ManifestError::BadSignature)
        );
        let (other_key, _, _) = signed(&m);
        assert_eq!(
            verify(&other_key, &text, &signature),
            Err(ManifestError::BadSignature)
        );
        assert_eq!(
            verify("c2hvcnQ=", &text, &signature),
            Err(ManifestError::BadKey)
        );
        assert_eq!(
            verify(&key, &text, "not base64!"),
            Err(ManifestError::BadSignatureEncoding)
        );
    }

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0, 0x0f, 0xff]), "000fff");
    }
}
