//! Secrets and key rings: the first key signs, every key verifies, so secrets rotate without
//! logging everyone out.

use std::fmt;

use base64::Engine as _;
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

type HmacSha256 = Hmac<Sha256>;

/// Minimum length of a configured secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// Why a secret or key ring was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("a secret must be at least {MIN_SECRET_LEN} bytes, this one has {0}")]
    TooShort(usize),
    /// The secret is a single byte repeated (for example all zeros or `aaaa...`).
    #[error("the secret is one repeated byte, which is not a secret")]
    Degenerate,
    /// The key ring has no key.
    #[error("a key ring needs at least one secret")]
    Empty,
    /// A configured secret is neither hex nor base64.
    #[error(
        "a secret must be at least 32 random bytes given as hex (64+ hex digits) or base64 (43+ \
         characters), for example the output of `openssl rand -hex 32`"
    )]
    NotEncoded,
}

/// A configured secret (cluster secret, cookie key). Its `Debug` never prints the bytes, and
/// its bytes are overwritten with zeros when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<[u8]>);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Secret {
    /// Wraps secret bytes, refusing short or degenerate ones.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, KeyError> {
        let mut bytes: Vec<u8> = bytes.into();
        if bytes.len() < MIN_SECRET_LEN {
            let n = bytes.len();
            bytes.zeroize();
            return Err(KeyError::TooShort(n));
        }
        if bytes.iter().all(|b| *b == bytes[0]) {
            bytes.zeroize();
            return Err(KeyError::Degenerate);
        }
        Ok(Secret(bytes.into_boxed_slice()))
    }

    /// Decodes a configured secret: hex (an even number of hex digits) or base64 (standard or
    /// URL-safe, padded or not), at least [`MIN_SECRET_LEN`] bytes once decoded. A passphrase
    /// or any other text is refused with [`KeyError::NotEncoded`]: a secret is random bytes.
    ///
    /// ```
    /// use session_core::{KeyError, Secret};
    /// let hex = "9f".repeat(16) + &"3c".repeat(16);
    /// assert_eq!(Secret::from_encoded(&hex).unwrap().expose().len(), 32);
    /// assert!(Secret::from_encoded("n0t3v3nB4se64!?n0t3v3nB4se64!?n0t3v3nB4se64!?").is_err());
    /// assert_eq!(Secret::from_encoded("abcd"), Err(KeyError::TooShort(2)));
    /// ```
    pub fn from_encoded(text: &str) -> Result<Self, KeyError> {
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        let text = text.trim();
        if text.len() % 2 == 0 && !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            let bytes: Vec<u8> = text
                .as_bytes()
                .chunks(2)
                .map(|p| {
                    let d = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                    d(p[0]) << 4 | d(p[1])
                })
                .collect();
            return Secret::new(bytes);
        }
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            if let Ok(bytes) = engine.decode(text) {
                return Secret::new(bytes);
            }
        }
        Err(KeyError::NotEncoded)
    }

    /// A fresh random 32-byte secret (for tests and single-process development only: other
    /// nodes, and this node after a restart, will not know it).
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        crate::id::fill_random(&mut b);
        Secret(Box::new(b))
    }

    /// The raw secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = KeyError;
    /// [`Secret::from_encoded`]: hex or base64 of 32+ bytes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Secret::from_encoded(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes, redacted)", self.0.len())
    }
}

/// An ordered list of 256-bit keys: the first signs, every key verifies.
///
/// Keys are derived from the configured [`Secret`]s with HKDF-SHA256 and a *purpose* label, so
/// one cluster secret can safely key several protocols (session tokens, peer requests, cookie
/// sealing) without a tag from one ever being valid in another.
///
/// Rotation across a cluster is two-phase, so no node ever sees a token or peer message signed
/// with a key it does not know: (1) add the new secret as a verify-only key (after the signing
/// one) on every node; (2) make it the signing key (first), keeping the old one verify-only;
/// (3) once the longest session lifetime has passed, drop the old one.
///
/// The key bytes are zeroed when the ring is dropped.
///
/// ```
/// use session_core::{KeyRing, Secret};
/// let old = Secret::new(b"an old secret that is at least 32 bytes long".to_vec()).unwrap();
/// let new = Secret::new(b"a new secret that is also at least 32 bytes!".to_vec()).unwrap();
/// let before = KeyRing::new([old.clone()]).unwrap().derive("example");
/// let after = KeyRing::new([new, old]).unwrap().derive("example");
/// let tag = before.sign(&[b"message"]);
/// assert!(after.verify(&[b"message"], &tag).is_some()); // still valid after rotation
/// ```
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<[u8; 32]>,
    /// One HMAC per key with the key already absorbed (its inner and outer pads hashed): a MAC
    /// starts from a copy of this state instead of re-keying, which saves two of the five or six
    /// SHA-256 blocks a short message costs — this runs on every request that carries a token.
    keyed: Vec<HmacSha256>,
}

impl KeyRing {
    /// Builds a ring from secrets, first one signing. The raw ring is only an input to
    /// [`derive`](KeyRing::derive); sign and verify with a derived ring.
    pub fn new(secrets: impl IntoIterator<Item = Secret>) -> Result<Self, KeyError> {
        let keys: Vec<[u8; 32]> = secrets
            .into_iter()
            .map(|s| {
                // Condense a secret of any length into a 32-byte root key.
                let (prk, _) = Hkdf::<Sha256>::extract(Some(b"session-sync root"), s.expose());
                let mut k = [0u8; 32];
                k.copy_from_slice(&prk);
                k
            })
            .collect();
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(KeyRing::from_keys(keys))
    }

    fn from_keys(keys: Vec<[u8; 32]>) -> Self {
        let keyed = keys
            .iter()
            .map(|key| match <HmacSha256 as KeyInit>::new_from_slice(key) {
                Ok(m) => m,
                // HMAC accepts keys of any length; a 32-byte key cannot fail.
                Err(_) => unreachable!("HMAC takes keys of any length"),
            })
            .collect();
        KeyRing { keys, keyed }
    }

    /// A ring with one fresh random key (tests and development).
    pub fn generate() -> Self {
        KeyRing::from_keys(vec![{
            let mut k = [0u8; 32];
            crate::id::fill_random(&mut k);
            k
        }])
    }

    /// Derives a ring for one purpose (HKDF-Expand with `session-sync/<purpose>` as info), key by
    /// key, preserving order.
    pub fn derive(&self, purpose: &str) -> KeyRing {
        let info = format!("session-sync/{purpose}");
        let keys = self
            .keys
            .iter()
            .map(|root| {
                let mut out = [0u8; 32];
                // A 32-byte PRK is always valid and 32 bytes of output is far below HKDF's limit.
                if let Ok(hk) = Hkdf::<Sha256>::from_prk(root) {
                    let _ = hk.expand(info.as_bytes(), &mut out);
                }
                out
            })
            .collect();
        KeyRing::from_keys(keys)
    }

    /// The ring bound to one application (HKDF info `session-sync/app/<name>`, for example the
    /// cookie name): two applications that share a secret, and even a store, then never accept
    /// each other's tokens.
    pub fn for_application(&self, name: &str) -> KeyRing {
        self.derive(&format!("app/{name}"))
    }

    /// Number of keys in the ring.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a ring cannot be built empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The raw 256-bit keys, signing key first (for backends that key their own primitive, such
    /// as AES-GCM in the cookie backend).
    pub fn keys(&self) -> &[[u8; 32]] {
        &self.keys
    }

    fn mac(keyed: &HmacSha256, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = keyed.clone();
        for p in parts {
            // Length-prefix every part so ("ab","c") and ("a","bc") differ.
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac
    }

    /// HMAC-SHA256 of the parts with the signing (first) key.
    pub fn sign(&self, parts: &[&[u8]]) -> [u8; 32] {
        let out = Self::mac(&self.keyed[0], parts).finalize().into_bytes();
        let mut tag = [0u8; 32];
        tag.copy_from_slice(&out);
        tag
    }

    /// Verifies a tag (full, or truncated to its leftmost bytes, at least 16) against every key,
    /// in constant time per key. Returns the index of the key that matched.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> Option<usize> {
        if tag.len() < 16 || tag.len() > 32 {
            return None;
        }
        self.keyed
            .iter()
            .position(|k| Self::mac(k, parts).verify_truncated_left(tag).is_ok())
    }
}

impl Drop for KeyRing {
    fn drop(&mut self) {
        for k in &mut self.keys {
            k.zeroize();
        }
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRing({} keys, redacted)", self.keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn refuses_weak_secrets() {
        assert_eq!(Secret::new(b"short".to_vec()), Err(KeyError::TooShort(5)));
        assert_eq!(Secret::new(vec![0u8; 64]), Err(KeyError::Degenerate));
        assert!(KeyRing::new(Vec::<Secret>::new()).is_err());
        assert!(!format!("{:?}", secret("0123456789abcdef0123456789abcdef")).contains("0123"));
    }

    #[test]
    fn secrets_are_hex_or_base64_of_32_bytes() {
        let raw: Vec<u8> = (1..=40).collect();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
        for text in [
            &hex,
            &hex.to_uppercase(),
            &b64,
            &b64url,
            &format!(" {hex}\n"),
        ] {
            assert_eq!(
                Secret::from_encoded(text).unwrap().expose(),
                &raw[..],
                "{text}"
            );
        }
        assert_eq!(
            Secret::from_encoded(&hex[..62]),
            Err(KeyError::TooShort(31))
        );
        assert_eq!(
            Secret::from_encoded("correct horse battery staple, a long passphrase!"),
            Err(KeyError::NotEncoded)
        );
        assert_eq!(
            Secret::from_encoded(&"00".repeat(32)),
            Err(KeyError::Degenerate)
        );
        let e = "not a secret".parse::<Secret>().unwrap_err().to_string();
        assert!(e.contains("hex") && e.contains("base64"), "{e}");
    }

    #[test]
    fn applications_sharing_a_secret_do_not_share_tokens() {
        let ring = KeyRing::new([secret("0123456789abcdef0123456789abcdef")]).unwrap();
        let a = ring.for_application("sid").derive("token/v1");
        let b = ring.for_application("shop_sid").derive("token/v1");
        let tag = a.sign(&[b"id"]);
        assert_eq!(a.verify(&[b"id"], &tag), Some(0));
        assert_eq!(b.verify(&[b"id"], &tag), None);
    }

    #[test]
    fn purposes_are_separated() {
        let ring = KeyRing::new([secret("0123456789abcdef0123456789abcdef")]).unwrap();
        let a = ring.derive("a");
        let b = ring.derive("b");
        let tag = a.sign(&[b"x"]);
        assert_eq!(a.verify(&[b"x"], &tag), Some(0));
        assert_eq!(b.verify(&[b"x"], &tag), None);
        assert_eq!(a.verify(&[b"y"], &tag), None);
        assert_eq!(a.verify(&[b"x"], &tag[..16]), Some(0), "truncated tag");
        assert_eq!(a.verify(&[b"x"], &tag[..8]), None, "too short a tag");
        assert_eq!(a.verify(&[b"", b"x"], &tag), None, "parts are framed");
    }

    #[test]
    fn rotation_first_signs_all_verify() {
        let old = secret("the old secret, 32 bytes or more....");
        let new = secret("the new secret, 32 bytes or more....");
        let r_old = KeyRing::new([old.clone()]).unwrap().derive("t");
        let r_both = KeyRing::new([new.clone(), old]).unwrap().derive("t");
        let r_new = KeyRing::new([new]).unwrap().derive("t");
        let t_old = r_old.sign(&[b"m"]);
        assert_eq!(r_both.verify(&[b"m"], &t_old), Some(1));
        assert_eq!(r_new.verify(&[b"m"], &t_old), None);
        assert_eq!(r_new.verify(&[b"m"], &r_both.sign(&[b"m"])), Some(0));
    }
}
