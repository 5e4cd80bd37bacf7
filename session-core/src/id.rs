//! Session identifiers: 128 random bits from the operating system's CSPRNG.

use std::fmt;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::error::TokenError;

/// Number of random bytes in a [`SessionId`] (128 bits, OWASP's recommended minimum).
pub const SESSION_ID_LEN: usize = 16;

/// A session identifier: 128 bits from the OS CSPRNG, never derived from anything guessable.
///
/// Its [`Display`](fmt::Display) is the URL-safe base64 form (22 characters). Its
/// [`Debug`](fmt::Debug) deliberately does **not** print the id: it prints a short hash salted
/// with a per-process random salt, so logs can correlate one session's lines without leaking a
/// usable id (OWASP: log a salted hash of the id).
///
/// ```
/// use session_core::SessionId;
/// let id = SessionId::random();
/// let text = id.to_string();
/// assert_eq!(text.len(), 22);
/// assert_eq!(SessionId::parse(&text).unwrap(), id);
/// assert!(!format!("{id:?}").contains(&text));
/// ```
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct SessionId([u8; SESSION_ID_LEN]);

impl SessionId {
    /// A fresh id from the operating system's random source.
    ///
    /// # Panics
    /// Panics only if the operating system cannot provide randomness at all, in which case no
    /// secure id can exist and continuing would be worse.
    pub fn random() -> Self {
        let mut bytes = [0u8; SESSION_ID_LEN];
        fill_random(&mut bytes);
        SessionId(bytes)
    }

    /// Wraps raw bytes (for backends decoding their own storage format).
    pub const fn from_bytes(bytes: [u8; SESSION_ID_LEN]) -> Self {
        SessionId(bytes)
    }

    /// The raw 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; SESSION_ID_LEN] {
        &self.0
    }

    /// Parses the 22-character URL-safe base64 form produced by `Display`.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        if text.is_empty() {
            return Err(TokenError::Empty);
        }
        if text.len() != 22 {
            return Err(TokenError::Malformed);
        }
        let mut bytes = [0u8; SESSION_ID_LEN];
        let n = URL_SAFE_NO_PAD
            .decode_slice(text, &mut bytes)
            .map_err(|_| TokenError::NotBase64)?;
        if n != SESSION_ID_LEN {
            return Err(TokenError::Truncated);
        }
        Ok(SessionId(bytes))
    }

    /// A short salted hash of the id, safe to log: the same value for the same id within one
    /// process, and across processes that share `SESSION_LOG_SALT` (set it to the same value on
    /// every node to follow one session through the whole cluster's logs).
    pub fn log_hash(&self) -> String {
        hash_with(log_salt(), &self.0)
    }

    /// The [`log_hash`](SessionId::log_hash) this id has on processes whose
    /// `SESSION_LOG_SALT` is `salt` (for tools that correlate logs).
    pub fn log_hash_with(&self, salt: &str) -> String {
        hash_with(&salt_of(salt), &self.0)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 24];
        let n = URL_SAFE_NO_PAD
            .encode_slice(self.0, &mut buf)
            .map_err(|_| fmt::Error)?;
        // Base64 output is ASCII.
        f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId(#{})", self.log_hash())
    }
}

/// Fills `buf` from the OS CSPRNG.
///
/// # Panics
/// Panics if the operating system has no working random source; no secure session (or nonce)
/// can be made without one.
pub fn fill_random(buf: &mut [u8]) {
    #[allow(clippy::expect_used)]
    getrandom::fill(buf).expect("the operating system's random source failed");
}

fn hash_with(salt: &[u8; 16], id: &[u8; SESSION_ID_LEN]) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(id);
    let d = h.finalize();
    d[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn salt_of(text: &str) -> [u8; 16] {
    let d = Sha256::digest(text.as_bytes());
    let mut s = [0u8; 16];
    s.copy_from_slice(&d[..16]);
    s
}

/// The salt of logged session hashes: from `SESSION_LOG_SALT` when set, else random per
/// process.
fn log_salt() -> &'static [u8; 16] {
    static SALT: OnceLock<[u8; 16]> = OnceLock::new();
    SALT.get_or_init(|| match std::env::var("SESSION_LOG_SALT") {
        Ok(v) if !v.is_empty() => salt_of(&v),
        _ => {
            let mut s = [0u8; 16];
            fill_random(&mut s);
            s
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_round_trip() {
        let a = SessionId::random();
        let b = SessionId::random();
        assert_ne!(a, b);
        assert_eq!(SessionId::parse(&a.to_string()).unwrap(), a);
    }

    #[test]
    fn debug_hides_the_id() {
        let a = SessionId::random();
        let dbg = format!("{a:?}");
        assert!(!dbg.contains(&a.to_string()));
        assert_eq!(dbg, format!("{a:?}"), "stable within a process");
    }

    #[test]
    fn parse_rejects_garbage() {
        assert_eq!(SessionId::parse(""), Err(TokenError::Empty));
        assert_eq!(SessionId::parse("abc"), Err(TokenError::Malformed));
        assert_eq!(
            SessionId::parse("!!!!!!!!!!!!!!!!!!!!!!"),
            Err(TokenError::NotBase64)
        );
    }
}
