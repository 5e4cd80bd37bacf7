//! The signed id token the client carries.
//!
//! Layout (version 1), before URL-safe base64 without padding:
//!
//! ```text
//! +---------+----------------+-------------+------------------+-----------------------------+
//! | 0x01    | session id     | routing len | routing bytes    | HMAC-SHA256 tag, leftmost   |
//! | 1 byte  | 16 bytes       | 1 byte (<=64)| 0..=64 bytes    | 16 bytes, over all before   |
//! +---------+----------------+-------------+------------------+-----------------------------+
//! ```
//!
//! The tag is computed with the first key of a [`KeyRing`] derived for the purpose `token/v1`
//! and verified against every key of the ring. Routing bytes are opaque to the core: the
//! instant-copy backend stores the owner and backup **node ids** there (small integers resolved
//! only through the configured membership), never an address. Parsing does no I/O and never
//! panics; every rejection is a typed [`TokenError`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::TokenError;
use crate::id::{SESSION_ID_LEN, SessionId};
use crate::keys::KeyRing;

/// Format version written into every new token.
pub const TOKEN_VERSION: u8 = 1;
/// Longest id token (in characters) any parser accepts; longer input is rejected unread.
pub const MAX_ID_TOKEN_LEN: usize = 256;
/// Longest sealed-session token (the cookie backend) in characters: the browser cookie limit.
pub const MAX_SEALED_TOKEN_LEN: usize = 4096;
/// Longest routing payload a token can carry, in bytes.
pub const MAX_ROUTING_LEN: usize = 64;
/// Length of the truncated HMAC tag in bytes (128 bits).
pub const TAG_LEN: usize = 16;

const HEADER_LEN: usize = 1 + SESSION_ID_LEN + 1;

/// A token whose signature verified: the session id and the backend's routing bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The session id.
    pub id: SessionId,
    /// Opaque routing data the issuing backend put in the token.
    pub routing: Vec<u8>,
    /// Index in the key ring of the key that verified (0 = current signing key). A token signed
    /// with an older key can be re-issued so rotation completes without logging anyone out.
    pub key_index: usize,
}

/// The session id an id token names, **without verifying it**: for tools that follow one
/// session through logs (with [`SessionId::log_hash_with`]), never for deciding anything.
/// `None` for anything that is not a version-1 id token.
pub fn unverified_session_id(token: &str) -> Option<SessionId> {
    if token.len() > MAX_ID_TOKEN_LEN {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    if raw.len() < HEADER_LEN || raw[0] != TOKEN_VERSION {
        return None;
    }
    let mut id = [0u8; SESSION_ID_LEN];
    id.copy_from_slice(&raw[1..1 + SESSION_ID_LEN]);
    Some(SessionId::from_bytes(id))
}

/// Signs and verifies id tokens with a key ring.
///
/// ```
/// use session_core::{KeyRing, SessionId, TokenSigner, TokenError};
/// let signer = TokenSigner::new(&KeyRing::generate());
/// let id = SessionId::random();
/// let token = signer.sign(&id, &[1, 2]).unwrap();
/// let parsed = signer.verify(&token).unwrap();
/// assert_eq!((parsed.id, parsed.routing), (id, vec![1, 2]));
/// assert_eq!(signer.verify("garbage!"), Err(TokenError::NotBase64));
/// ```
#[derive(Clone, Debug)]
pub struct TokenSigner {
    ring: KeyRing,
}

impl TokenSigner {
    /// A signer keyed by `ring` (derived internally for the purpose `token/v1`).
    pub fn new(ring: &KeyRing) -> Self {
        TokenSigner {
            ring: ring.derive("token/v1"),
        }
    }

    /// Encodes and signs a token. Fails only if `routing` is longer than [`MAX_ROUTING_LEN`].
    pub fn sign(&self, id: &SessionId, routing: &[u8]) -> Result<String, TokenError> {
        if routing.len() > MAX_ROUTING_LEN {
            return Err(TokenError::BadRouting("routing data over 64 bytes"));
        }
        let mut raw = Vec::with_capacity(HEADER_LEN + routing.len() + TAG_LEN);
        raw.push(TOKEN_VERSION);
        raw.extend_from_slice(id.as_bytes());
        raw.push(routing.len() as u8);
        raw.extend_from_slice(routing);
        let tag = self.ring.sign(&[&raw]);
        raw.extend_from_slice(&tag[..TAG_LEN]);
        Ok(URL_SAFE_NO_PAD.encode(&raw))
    }

    /// Parses and verifies a token, rejecting anything malformed, oversized or forged.
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if token.len() > MAX_ID_TOKEN_LEN {
            return Err(TokenError::TooLong {
                len: token.len(),
                max: MAX_ID_TOKEN_LEN,
            });
        }
        let mut raw = [0u8; MAX_ID_TOKEN_LEN];
        let n = URL_SAFE_NO_PAD
            .decode_slice(token.as_bytes(), &mut raw)
            .map_err(|_| TokenError::NotBase64)?;
        let raw = &raw[..n];
        if raw.len() < HEADER_LEN + TAG_LEN {
            return Err(TokenError::Truncated);
        }
        if raw[0] != TOKEN_VERSION {
            return Err(TokenError::UnsupportedVersion(raw[0]));
        }
        let routing_len = raw[HEADER_LEN - 1] as usize;
        if routing_len > MAX_ROUTING_LEN {
            return Err(TokenError::Malformed);
        }
        let body_len = HEADER_LEN + routing_len;
        if raw.len() < body_len + TAG_LEN {
            return Err(TokenError::Truncated);
        }
        if raw.len() > body_len + TAG_LEN {
            return Err(TokenError::Malformed);
        }
        let (body, tag) = raw.split_at(body_len);
        let key_index = self
            .ring
            .verify(&[body], tag)
            .ok_or(TokenError::BadSignature)?;
        let mut id = [0u8; SESSION_ID_LEN];
        id.copy_from_slice(&body[1..1 + SESSION_ID_LEN]);
        Ok(VerifiedToken {
            id: SessionId::from_bytes(id),
            routing: body[HEADER_LEN..].to_vec(),
            key_index,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Secret;
    use proptest::prelude::*;

    fn signer() -> TokenSigner {
        TokenSigner::new(
            &KeyRing::new([Secret::new(b"test secret for the token unit tests".to_vec()).unwrap()])
                .unwrap(),
        )
    }

    #[test]
    fn rejects_each_kind_of_bad_input() {
        let s = signer();
        let id = SessionId::random();
        let good = s.sign(&id, &[7]).unwrap();
        assert_eq!(s.verify(""), Err(TokenError::Empty));
        assert!(matches!(
            s.verify(&"A".repeat(MAX_ID_TOKEN_LEN + 1)),
            Err(TokenError::TooLong { .. })
        ));
        assert_eq!(s.verify("not base64 at all"), Err(TokenError::NotBase64));
        let raw = URL_SAFE_NO_PAD.decode(&good).unwrap();
        assert_eq!(
            s.verify(&URL_SAFE_NO_PAD.encode(&raw[..raw.len() - 3])),
            Err(TokenError::Truncated)
        );
        assert_eq!(s.verify("AAAA"), Err(TokenError::Truncated));
        // Wrong version: re-encode with version 2.
        let mut raw = URL_SAFE_NO_PAD.decode(&good).unwrap();
        raw[0] = 2;
        assert_eq!(
            s.verify(&URL_SAFE_NO_PAD.encode(&raw)),
            Err(TokenError::UnsupportedVersion(2))
        );
        // Trailing garbage after the tag.
        let mut raw = URL_SAFE_NO_PAD.decode(&good).unwrap();
        raw.push(0);
        assert_eq!(
            s.verify(&URL_SAFE_NO_PAD.encode(&raw)),
            Err(TokenError::Malformed)
        );
        // Another cluster's key.
        assert_eq!(
            TokenSigner::new(&KeyRing::generate()).verify(&good),
            Err(TokenError::BadSignature)
        );
        assert!(s.sign(&id, &[0; MAX_ROUTING_LEN + 1]).is_err());
    }

    #[test]
    fn token_is_short_and_cookie_safe() {
        let t = signer().sign(&SessionId::random(), &[1, 0, 2, 0]).unwrap();
        assert!(t.len() <= 60, "{}", t.len());
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    proptest! {
        #[test]
        fn round_trips(id in any::<[u8; 16]>(), routing in proptest::collection::vec(any::<u8>(), 0..=MAX_ROUTING_LEN)) {
            let s = signer();
            let id = SessionId::from_bytes(id);
            let t = s.sign(&id, &routing).unwrap();
            let v = s.verify(&t).unwrap();
            prop_assert_eq!(v.id, id);
            prop_assert_eq!(v.routing, routing);
        }

        #[test]
        fn any_single_character_change_is_rejected(routing in proptest::collection::vec(any::<u8>(), 0..8), pos in any::<prop::sample::Index>(), ch in "[A-Za-z0-9_-]") {
            let s = signer();
            let t = s.sign(&SessionId::random(), &routing).unwrap();
            let i = pos.index(t.len());
            let c = ch.chars().next().unwrap();
            prop_assume!(t.as_bytes()[i] as char != c);
            let mut forged = t.clone();
            forged.replace_range(i..i + 1, &c.to_string());
            prop_assert!(s.verify(&forged).is_err());
        }

        #[test]
        fn arbitrary_input_never_panics(input in ".{0,400}") {
            let _ = signer().verify(&input);
        }
    }
}
