//! The sealed-cookie format: AES-256-GCM over a postcard-encoded session, optionally deflated.
//!
//! Layout (format version 1), before URL-safe base64 without padding:
//!
//! ```text
//! +---------+--------+-------+-----------------+-------------------------+-------------+
//! | version | key id | flags | nonce           | ciphertext              | GCM tag     |
//! | 0x01    | 1 byte | 1 byte| 12 random bytes | n bytes (= payload len) | 16 bytes    |
//! +---------+--------+-------+-----------------+-------------------------+-------------+
//!  \___ header (3 bytes) __/
//! associated data = header ‖ cookie name
//! ```
//!
//! * **version** is [`FORMAT_VERSION`]; any other value is rejected before decryption.
//! * **key id** is one byte derived (HKDF, purpose `cookie/key-id/v1`) from the secret that
//!   sealed the cookie, so opening tries only the ring key(s) with that id instead of every key.
//!   It reveals nothing about the key. Two keys of a ring share an id with probability 1/256; then
//!   both are tried, in ring order.
//! * **flags**: bit 0 = the payload is raw-deflated (level 6; only attempted for payloads of
//!   at least [`MIN_COMPRESS_LEN`] bytes, and kept only when smaller). Unknown bits are rejected.
//! * **nonce**: 96 fresh bits from the OS CSPRNG for every seal.
//! * The **payload** is the postcard encoding of the revocation epoch, the session id, the four
//!   timestamps (ms since the epoch), the version and the values (a map of key to JSON text).
//!
//! The associated data binds the header (so the version, key id and compression flag cannot be
//! altered) and the cookie name (so a cookie cannot be moved to a different cookie name keyed by
//! the same secret). Everything else is encrypted and authenticated.
//!
//! Overhead: [`OVERHEAD`] = 31 bytes before base64, so a sealed cookie is
//! `ceil((31 + payload) * 4 / 3)` characters.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit, Nonce, Tag};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use session_core::{
    KeyRing, MAX_SEALED_TOKEN_LEN, SESSION_ID_LEN, SessionData, SessionError, SessionId,
    SessionRecord, TokenError, fill_random,
};

/// Format version written into every new cookie.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes of header (version, key id, flags).
pub const HEADER_LEN: usize = 3;
/// Bytes of nonce (96 bits, the size AES-GCM is specified for).
pub const NONCE_LEN: usize = 12;
/// Bytes of GCM authentication tag.
pub const GCM_TAG_LEN: usize = 16;
/// Bytes a seal adds to the payload before base64: header, nonce and tag.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + GCM_TAG_LEN;
/// The browser's limit on one cookie, and the longest token [`Sealer::open`] reads.
pub const BROWSER_COOKIE_LIMIT: usize = MAX_SEALED_TOKEN_LEN;
/// The smallest `max_cookie_bytes` accepted (an empty session seals to about 100 bytes).
pub const MIN_COOKIE_LIMIT: usize = 256;
/// Largest payload before compression. Opening inflates at most this much, so a valid cookie
/// cannot be a decompression bomb; sealing refuses a session whose payload is larger.
pub const MAX_PAYLOAD_LEN: usize = 64 * 1024;

/// Flag bit: the payload is raw deflate.
const FLAG_DEFLATE: u8 = 0b0000_0001;
/// Deflate level: zlib's default. Measured on 1–3 KiB JSON sessions, level 1 seals about twice
/// as fast but its cookies are about 10% larger, and a cookie is sent with every request.
const DEFLATE_LEVEL: u8 = 6;
/// Payloads shorter than this are not worth deflating: setting up the compressor costs more
/// (tens of µs) than the few bytes it could save.
pub const MIN_COMPRESS_LEN: usize = 256;

/// What a sealed cookie holds: the session record and the revocation epoch it was sealed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The session.
    pub record: SessionRecord,
    /// The revocation epoch in force when it was sealed.
    pub epoch: u32,
}

/// A successful seal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The cookie value (URL-safe base64, no padding; cookie- and header-safe).
    pub token: String,
    /// Whether the payload was deflated.
    pub compressed: bool,
    /// Bytes of the encoded payload before compression.
    pub payload_len: usize,
}

/// A successfully opened cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The session and its epoch. Deadlines are *not* checked here: the backend does that.
    pub payload: Payload,
    /// Position in the ring of the key that opened it (0 = the current sealing key).
    pub key_index: usize,
    /// Whether the payload was deflated.
    pub compressed: bool,
}

/// Why a cookie did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The cookie was rejected before or by authentication: malformed, forged, tampered,
    /// truncated, sealed for another name or with a key the ring no longer holds.
    #[error(transparent)]
    Rejected(#[from] TokenError),
    /// The cookie authenticated, so this build's own key sealed it, but its payload does not
    /// decode. Only a bug or an incompatible change of the payload encoding can cause this.
    #[error("the cookie authenticated but its payload does not decode: {0}")]
    Undecodable(&'static str),
}

impl From<OpenError> for TokenError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Rejected(t) => t,
            OpenError::Undecodable(_) => TokenError::Malformed,
        }
    }
}

/// Wire form of a payload, borrowed for sealing. Field order is the format: change it only
/// together with [`FORMAT_VERSION`].
#[derive(Serialize)]
struct WireRef<'a> {
    epoch: u32,
    id: &'a [u8; SESSION_ID_LEN],
    created_at: u64,
    last_access: u64,
    idle_deadline: u64,
    absolute_deadline: u64,
    version: u64,
    data: &'a SessionData,
}

/// Wire form of a payload, owned for opening (same fields, same order as [`WireRef`]).
#[derive(Deserialize)]
struct WireOwned {
    epoch: u32,
    id: [u8; SESSION_ID_LEN],
    created_at: u64,
    last_access: u64,
    idle_deadline: u64,
    absolute_deadline: u64,
    version: u64,
    data: SessionData,
}

/// Seals sessions into cookie values and opens them again, with a key ring.
///
/// The first key of the ring seals; every key opens, so a secret is rotated by putting the new
/// one first (cookies sealed with the old one still open) and removing the old one once every
/// cookie it sealed has expired.
///
/// ```
/// use backend_cookie::{Sealer, Payload};
/// use session_core::{ExpiryPolicy, KeyRing, RawJson, SessionId};
///
/// let sealer = Sealer::new(&KeyRing::generate(), "sid");
/// let mut record = ExpiryPolicy::default().new_record(SessionId::random(), 1_700_000_000_000);
/// record.data.insert("user", RawJson::from_value("alice").unwrap());
/// let sealed = sealer.seal(&record, 0).unwrap();
/// let opened = sealer.open(&sealed.token).unwrap();
/// assert_eq!(opened.payload, Payload { record, epoch: 0 });
/// // Sealed for "sid", it does not open as another cookie.
/// assert!(Sealer::new(&KeyRing::generate(), "other").open(&sealed.token).is_err());
/// ```
#[derive(Clone)]
pub struct Sealer {
    /// (key id, cipher) in ring order; the first seals.
    keys: Vec<(u8, Aes256Gcm)>,
    name: Box<[u8]>,
    compress: bool,
    max_len: usize,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("keys", &format_args!("{} keys, redacted", self.keys.len()))
            .field("cookie_name", &String::from_utf8_lossy(&self.name))
            .field("compress", &self.compress)
            .field("max_len", &self.max_len)
            .finish()
    }
}

impl Sealer {
    /// A sealer for cookies named `cookie_name`, keyed from `keys` (HKDF purpose
    /// `cookie/aes-256-gcm/v1`), without compression, limited to 4096-byte cookies.
    pub fn new(keys: &KeyRing, cookie_name: &str) -> Self {
        let aes = keys.derive("cookie/aes-256-gcm/v1");
        let ids = keys.derive("cookie/key-id/v1");
        let keys = aes
            .keys()
            .iter()
            .zip(ids.keys())
            .map(|(k, id)| (id[0], Aes256Gcm::new(&(*k).into())))
            .collect();
        Sealer {
            keys,
            name: cookie_name.as_bytes().into(),
            compress: false,
            max_len: BROWSER_COOKIE_LIMIT,
        }
    }

    /// Deflates payloads of at least [`MIN_COMPRESS_LEN`] bytes when that makes the cookie
    /// smaller.
    pub fn with_compression(mut self, compress: bool) -> Self {
        self.compress = compress;
        self
    }

    /// Sets the largest cookie [`seal`](Sealer::seal) produces, capped at 4096 (a longer
    /// cookie would not be stored by browsers, nor read by [`open`](Sealer::open)).
    pub fn with_max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len.min(BROWSER_COOKIE_LIMIT);
        self
    }

    /// The largest cookie this sealer produces.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Whether this sealer compresses.
    pub fn compresses(&self) -> bool {
        self.compress
    }

    /// Number of keys in the ring.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    fn aad(&self, header: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(HEADER_LEN + self.name.len());
        aad.extend_from_slice(header);
        aad.extend_from_slice(&self.name);
        aad
    }

    /// Seals `record` under revocation epoch `epoch` with the ring's first key and a fresh
    /// random nonce.
    ///
    /// Fails with [`SessionError::TooLarge`] when the cookie would be longer than
    /// [`max_len`](Sealer::max_len) (the size in the error is the cookie value's length in
    /// bytes), or when the payload before compression exceeds [`MAX_PAYLOAD_LEN`]. Nothing is
    /// truncated or dropped silently.
    pub fn seal(&self, record: &SessionRecord, epoch: u32) -> Result<Sealed, SessionError> {
        let wire = WireRef {
            epoch,
            id: record.id.as_bytes(),
            created_at: record.created_at,
            last_access: record.last_access,
            idle_deadline: record.idle_deadline,
            absolute_deadline: record.absolute_deadline,
            version: record.version,
            data: &record.data,
        };
        let payload = postcard::to_allocvec(&wire)
            .map_err(|e| SessionError::backend("cookie", "encoding the session payload", e))?;
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(SessionError::TooLarge {
                size: payload.len(),
                limit: MAX_PAYLOAD_LEN,
                what: "a cookie session's uncompressed payload",
            });
        }
        let mut flags = 0u8;
        let deflated = self.maybe_deflate(&payload);
        if deflated.is_some() {
            flags |= FLAG_DEFLATE;
        }
        let body = deflated.as_deref().unwrap_or(&payload);
        self.seal_body(body, flags).map(|token| Sealed {
            token,
            compressed: flags & FLAG_DEFLATE != 0,
            payload_len: payload.len(),
        })
    }

    /// The deflated payload, if compression is on, the payload is long enough to be worth it,
    /// and the result is smaller.
    fn maybe_deflate(&self, payload: &[u8]) -> Option<Vec<u8>> {
        if !self.compress || payload.len() < MIN_COMPRESS_LEN {
            return None;
        }
        Some(miniz_oxide::deflate::compress_to_vec(
            payload,
            DEFLATE_LEVEL,
        ))
        .filter(|d| d.len() < payload.len())
    }

    /// Encrypts an already-encoded body with the sealing key; checks the size first.
    fn seal_body(&self, body: &[u8], flags: u8) -> Result<String, SessionError> {
        let raw_len = OVERHEAD + body.len();
        let size = base64::encoded_len(raw_len, false).unwrap_or(usize::MAX);
        if size > self.max_len {
            return Err(SessionError::TooLarge {
                size,
                limit: self.max_len,
                what: "a browser cookie",
            });
        }
        let (key_id, cipher) = &self.keys[0];
        let mut raw = Vec::with_capacity(raw_len);
        raw.extend_from_slice(&[FORMAT_VERSION, *key_id, flags]);
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(body);
        let aad = self.aad(&raw[..HEADER_LEN]);
        let tag = cipher
            .encrypt_inout_detached(
                &Nonce::<Aes256Gcm>::from(nonce),
                &aad,
                (&mut raw[HEADER_LEN + NONCE_LEN..]).into(),
            )
            .map_err(|_| SessionError::backend_msg("cookie", "AES-GCM refused to seal"))?;
        raw.extend_from_slice(&tag);
        Ok(URL_SAFE_NO_PAD.encode(&raw))
    }

    /// Opens a cookie: checks its length, encoding, version and flags, authenticates and
    /// decrypts it with the ring key(s) whose id it names, then decodes the payload.
    ///
    /// Pure computation: no I/O, no panic on any input. Deadlines and the revocation epoch are
    /// left to the caller (the backend), which knows the policy and the clock.
    pub fn open(&self, token: &str) -> Result<Opened, OpenError> {
        if token.is_empty() {
            return Err(TokenError::Empty.into());
        }
        if token.len() > BROWSER_COOKIE_LIMIT {
            return Err(TokenError::TooLong {
                len: token.len(),
                max: BROWSER_COOKIE_LIMIT,
            }
            .into());
        }
        let mut raw = URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .map_err(|_| TokenError::NotBase64)?;
        if raw.len() < OVERHEAD {
            return Err(TokenError::Truncated.into());
        }
        let (version, key_id, flags) = (raw[0], raw[1], raw[2]);
        if version != FORMAT_VERSION {
            return Err(TokenError::UnsupportedVersion(version).into());
        }
        if flags & !FLAG_DEFLATE != 0 {
            return Err(TokenError::Malformed.into());
        }
        let aad = self.aad(&raw[..HEADER_LEN]);
        let tag_at = raw.len() - GCM_TAG_LEN;
        let (head, tag) = raw.split_at_mut(tag_at);
        let tag = Tag::<Aes256Gcm>::try_from(&*tag).map_err(|_| TokenError::Truncated)?;
        let (header_nonce, body) = head.split_at_mut(HEADER_LEN + NONCE_LEN);
        let nonce = Nonce::<Aes256Gcm>::try_from(&header_nonce[HEADER_LEN..])
            .map_err(|_| TokenError::Truncated)?;
        // GCM checks the tag before decrypting and leaves the buffer untouched on failure, so
        // trying the next candidate key on the same buffer is sound.
        let key_index = self
            .keys
            .iter()
            .enumerate()
            .filter(|(_, (id, _))| *id == key_id)
            .find_map(|(i, (_, cipher))| {
                cipher
                    .decrypt_inout_detached(&nonce, &aad, (&mut *body).into(), &tag)
                    .ok()
                    .map(|()| i)
            })
            .ok_or(TokenError::BadSignature)?;
        let compressed = flags & FLAG_DEFLATE != 0;
        Ok(Opened {
            payload: decode_payload(body, compressed)?,
            key_index,
            compressed,
        })
    }
}

/// Decodes a decrypted body: inflates it (at most [`MAX_PAYLOAD_LEN`] bytes) when `compressed`,
/// then reads the version-1 payload, refusing trailing bytes.
///
/// [`Sealer::open`] calls it only on bytes that authenticated; it is public so fuzzers can reach
/// the decoder without the key. It never panics.
pub fn decode_payload(body: &[u8], compressed: bool) -> Result<Payload, OpenError> {
    let inflated;
    let payload: &[u8] = if compressed {
        inflated = miniz_oxide::inflate::decompress_to_vec_with_limit(body, MAX_PAYLOAD_LEN)
            .map_err(|_| OpenError::Undecodable("the deflate stream is invalid or too large"))?;
        &inflated
    } else {
        body
    };
    let (wire, rest) = postcard::take_from_bytes::<WireOwned>(payload)
        .map_err(|_| OpenError::Undecodable("the payload is not a version-1 session"))?;
    if !rest.is_empty() {
        return Err(OpenError::Undecodable("bytes follow the payload"));
    }
    Ok(Payload {
        record: SessionRecord {
            id: SessionId::from_bytes(wire.id),
            data: wire.data,
            created_at: wire.created_at,
            last_access: wire.last_access,
            idle_deadline: wire.idle_deadline,
            absolute_deadline: wire.absolute_deadline,
            version: wire.version,
        },
        epoch: wire.epoch,
    })
}

/// The length of the cookie value a payload of `payload_len` bytes (after any compression)
/// seals to: `ceil((31 + payload_len) * 4 / 3)`.
pub fn sealed_len(payload_len: usize) -> usize {
    base64::encoded_len(OVERHEAD + payload_len, false).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::{ExpiryPolicy, RawJson, Secret};

    fn ring(s: &str) -> KeyRing {
        KeyRing::new([Secret::new(s.as_bytes().to_vec()).unwrap()]).unwrap()
    }

    fn record() -> SessionRecord {
        let mut r = ExpiryPolicy::default().new_record(SessionId::random(), 1_700_000_000_000);
        r.data.insert("user", RawJson::from_value("alice").unwrap());
        r.data.insert("n", RawJson::from_value(&42).unwrap());
        r
    }

    #[test]
    fn round_trips_and_reports_the_layout() {
        let s = Sealer::new(&ring("a secret for the format unit tests!!"), "sid");
        let r = record();
        let sealed = s.seal(&r, 7).unwrap();
        assert!(!sealed.compressed);
        assert_eq!(sealed.token.len(), sealed_len(sealed.payload_len));
        let raw = URL_SAFE_NO_PAD.decode(&sealed.token).unwrap();
        assert_eq!(raw.len(), OVERHEAD + sealed.payload_len);
        assert_eq!(raw[0], FORMAT_VERSION);
        assert_eq!(raw[2], 0, "no flags");
        let o = s.open(&sealed.token).unwrap();
        assert_eq!(
            o.payload,
            Payload {
                record: r,
                epoch: 7
            }
        );
        assert_eq!(o.key_index, 0);
        assert!(
            sealed
                .token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn nonces_are_fresh_and_values_are_not_readable() {
        let s = Sealer::new(&ring("a secret for the format unit tests!!"), "sid");
        let r = record();
        let a = s.seal(&r, 0).unwrap().token;
        let b = s.seal(&r, 0).unwrap().token;
        assert_ne!(a, b, "same session, same key: different cookies");
        let raw = URL_SAFE_NO_PAD.decode(&a).unwrap();
        assert!(
            !raw.windows(5).any(|w| w == b"alice"),
            "plaintext visible in the cookie"
        );
    }

    #[test]
    fn compression_only_when_smaller_and_flagged() {
        let s = Sealer::new(&ring("a secret for the format unit tests!!"), "sid")
            .with_compression(true);
        let tiny = record();
        let sealed = s.seal(&tiny, 0).unwrap();
        assert!(
            !sealed.compressed,
            "a tiny session is not worth compressing"
        );
        // Incompressible bytes are left as they are (deflate would only grow them).
        let mut noise = vec![0u8; 1024];
        fill_random(&mut noise);
        assert_eq!(s.maybe_deflate(&noise), None);
        assert!(s.maybe_deflate(&[b'a'; MIN_COMPRESS_LEN]).is_some());
        assert_eq!(s.maybe_deflate(&[b'a'; MIN_COMPRESS_LEN - 1]), None);
        let off = Sealer::new(&ring("a secret for the format unit tests!!"), "sid");
        assert_eq!(off.maybe_deflate(&[b'a'; 4096]), None);
        let mut big = record();
        big.data
            .insert("text", RawJson::from_value(&"abc ".repeat(500)).unwrap());
        let sealed = s.seal(&big, 0).unwrap();
        assert!(sealed.compressed);
        assert!(sealed.token.len() < sealed_len(sealed.payload_len));
        let raw = URL_SAFE_NO_PAD.decode(&sealed.token).unwrap();
        assert_eq!(raw[2], FLAG_DEFLATE);
        let o = s.open(&sealed.token).unwrap();
        assert!(o.compressed);
        assert_eq!(o.payload.record, big);
        // Clearing the flag (the header is associated data) breaks authentication.
        let mut forged = raw.clone();
        forged[2] = 0;
        assert_eq!(
            s.open(&URL_SAFE_NO_PAD.encode(&forged)),
            Err(OpenError::Rejected(TokenError::BadSignature))
        );
        // Unknown flag bits are refused before decryption.
        let mut forged = raw;
        forged[2] |= 0b10;
        assert_eq!(
            s.open(&URL_SAFE_NO_PAD.encode(&forged)),
            Err(OpenError::Rejected(TokenError::Malformed))
        );
    }

    #[test]
    fn oversized_payloads_are_refused_before_compression_can_hide_them() {
        let s = Sealer::new(&ring("a secret for the format unit tests!!"), "sid")
            .with_compression(true);
        let mut r = record();
        r.data.insert(
            "zeros",
            RawJson::from_value(&"0".repeat(MAX_PAYLOAD_LEN)).unwrap(),
        );
        match s.seal(&r, 0) {
            Err(SessionError::TooLarge { size, limit, .. }) => {
                assert!(size > MAX_PAYLOAD_LEN);
                assert_eq!(limit, MAX_PAYLOAD_LEN);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn authenticated_garbage_is_undecodable_not_a_panic() {
        let s = Sealer::new(&ring("a secret for the format unit tests!!"), "sid");
        // Sealed with the real key, but the body is not a payload.
        let t = s.seal_body(b"\xff\xff\xff\xff\xff", 0).unwrap();
        assert!(matches!(s.open(&t), Err(OpenError::Undecodable(_))));
        // A valid payload followed by extra bytes.
        let mut body = postcard::to_allocvec(&WireRef {
            epoch: 0,
            id: &[1; 16],
            created_at: 1,
            last_access: 1,
            idle_deadline: 2,
            absolute_deadline: 3,
            version: 1,
            data: &SessionData::new(),
        })
        .unwrap();
        body.push(0);
        let t = s.seal_body(&body, 0).unwrap();
        assert_eq!(
            s.open(&t),
            Err(OpenError::Undecodable("bytes follow the payload"))
        );
        // A "compressed" body that is not deflate.
        let t = s.seal_body(b"not deflate at all", FLAG_DEFLATE).unwrap();
        assert!(matches!(s.open(&t), Err(OpenError::Undecodable(_))));
        // A deflate bomb sealed with the real key inflates to at most MAX_PAYLOAD_LEN.
        let bomb = miniz_oxide::deflate::compress_to_vec(&vec![0u8; MAX_PAYLOAD_LEN * 4], 9);
        let t = s.seal_body(&bomb, FLAG_DEFLATE).unwrap();
        assert!(matches!(s.open(&t), Err(OpenError::Undecodable(_))));
        assert_eq!(
            TokenError::from(OpenError::Undecodable("x")),
            TokenError::Malformed
        );
    }

    #[test]
    fn key_ids_pick_the_key_and_collisions_still_open() {
        let old = ring("the old secret, thirty-two bytes or more");
        let s_old = Sealer::new(&old, "sid");
        let t = s_old.seal(&record(), 0).unwrap().token;
        // Rebuild a two-key sealer whose keys share an id: both are tried in order.
        let mut both = Sealer::new(&ring("a new secret, thirty-two bytes or more!!"), "sid");
        let old_key = s_old.keys[0].clone();
        let new_cipher = both.keys[0].1.clone();
        both.keys = vec![(old_key.0, new_cipher), old_key];
        let o = both.open(&t).unwrap();
        assert_eq!(o.key_index, 1);
    }

    #[test]
    fn debug_redacts_keys() {
        let s = Sealer::new(&KeyRing::generate(), "sid");
        let d = format!("{s:?}");
        assert!(d.contains("redacted") && d.contains("sid"), "{d}");
    }
}
