//! TLS session tickets that outlive a restart. After an edge restarts, its devices
//! come back with the tickets it gave them and resume their sessions: no certificate
//! to sign at the edge or to check on the device, which is most of a handshake's cost
//! in a reconnect storm.
//!
//! A ticket is sealed (ChaCha20-Poly1305) with a key derived from a secret in the data
//! directory and the current 12-hour period, so a restarted node opens the tickets it
//! issued before, and a ticket opens only in its own period and the next one. The
//! secret is as sensitive as the server's private key beside it (either lets an
//! attacker pose as the server); resumed sessions still run a fresh key exchange, so a
//! stolen secret does not open recorded traffic.

use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf::{Salt, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

use crate::tls::TlsError;

/// How long one sealing key is used; a ticket opens for one more period after it.
const PERIOD_S: u64 = 12 * 3600;
const SECRET_LEN: usize = 32;
/// Ticket layout: the period it was sealed in, the nonce, then the sealed session.
const PERIOD_LEN: usize = 8;

/// Seals and opens session tickets; see the module documentation.
pub struct Tickets {
    secret: [u8; SECRET_LEN],
    random: SystemRandom,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tickets { secret: <redacted> }")
    }
}

impl Tickets {
    /// The tickets of the secret in `path`, made (readable by the owner only) on
    /// first use.
    pub fn from_file(path: &Path) -> Result<Self, TlsError> {
        let read_err = |message: String| TlsError::Read {
            path: path.to_path_buf(),
            message,
        };
        let random = SystemRandom::new();
        let mut secret = [0u8; SECRET_LEN];
        if path.exists() {
            let held = std::fs::read(path).map_err(|e| read_err(e.to_string()))?;
            secret = held
                .try_into()
                .map_err(|_| read_err(format!("a ticket secret is {SECRET_LEN} bytes")))?;
        } else {
            random
                .fill(&mut secret)
                .map_err(|_| read_err("no randomness for a ticket secret".into()))?;
            crate::tls::write_private(path, &secret)?;
        }
        Ok(Self { secret, random })
    }

    fn key(&self, period: u64) -> Option<LessSafeKey> {
        let prk = Salt::new(HKDF_SHA256, b"fleet session tickets").extract(&self.secret);
        let info = period.to_be_bytes();
        let info = [&info[..]];
        let okm = prk.expand(&info, &CHACHA20_POLY1305).ok()?;
        Some(LessSafeKey::new(UnboundKey::from(okm)))
    }
}

fn current_period() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    now / PERIOD_S
}

impl ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        PERIOD_S as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let period = current_period();
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let mut sealed = plain.to_vec();
        self.key(period)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(period.to_be_bytes()),
                &mut sealed,
            )
            .ok()?;
        let mut ticket = Vec::with_capacity(PERIOD_LEN + NONCE_LEN + sealed.len());
        ticket.extend_from_slice(&period.to_be_bytes());
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let (period, rest) = cipher.split_first_chunk::<PERIOD_LEN>()?;
        let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>()?;
        let period = u64::from_be_bytes(*period);
        let now = current_period();
        if period != now && Some(period) != now.checked_sub(1) {
            return None;
        }
        let mut opened = sealed.to_vec();
        let plain = self
            .key(period)?
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(period.to_be_bytes()),
                &mut opened,
            )
            .ok()?
            .len();
        opened.truncate(plain);
        Some(opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_after_a_restart_and_nowhere_else() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ticket.key");
        let first = Tickets::from_file(&path).expect("made");
        let ticket = first.encrypt(b"session state").expect("sealed");
        let restarted = Tickets::from_file(&path).expect("read back");
        assert_eq!(
            restarted.decrypt(&ticket).as_deref(),
            Some(&b"session state"[..])
        );
        let other = Tickets::from_file(&dir.path().join("other.key")).expect("made");
        assert_eq!(other.decrypt(&ticket), None, "another node's secret");
        let mut forged = ticket.clone();
        if let Some(last) = forged.last_mut() {
            *last ^= 1;
        }
        assert_eq!(restarted.decrypt(&forged), None, "a changed byte");
        let mut stale = ticket.clone();
        stale[..PERIOD_LEN].copy_from_slice(&(current_period() - 2).to_be_bytes());
        assert_eq!(restarted.decrypt(&stale), None, "two periods old");
        assert_eq!(restarted.decrypt(&ticket[..10]), None, "cut short");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("secret")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the secret is not readable by others");
    }
}
