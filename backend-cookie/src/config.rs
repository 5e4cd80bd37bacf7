//! The backend's configuration (everything but the secrets, which come as a
//! [`KeyRing`](session_core::KeyRing)).

use serde::Deserialize;

use crate::format::{BROWSER_COOKIE_LIMIT, MIN_COOKIE_LIMIT};

/// Configuration of the sealed-cookie backend, embeddable in an application's TOML config.
///
/// Secrets are deliberately not part of it: the constructor takes a
/// [`KeyRing`](session_core::KeyRing) that the application builds from its environment or a
/// secrets file. Expiry is the [`ExpiryPolicy`](session_core::ExpiryPolicy) shared by every
/// backend.
///
/// ```
/// use backend_cookie::CookieConfig;
/// let config: CookieConfig = serde_json::from_str(r#"{ "compress": true }"#).unwrap();
/// assert_eq!(config.cookie_name, "sid");
/// assert_eq!(config.max_cookie_bytes, 4096);
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct CookieConfig {
    /// The cookie's name, bound into every seal as associated data: a cookie sealed for one
    /// name does not open under another, even with the same secret. Keep it equal to the
    /// layer's `SessionConfig::cookie_name` (default `sid`).
    pub cookie_name: String,
    /// Deflate the payload before sealing when that makes the cookie smaller. Off by default:
    /// compressing secrets next to attacker-chosen data makes the cookie's *length* leak
    /// information (the CRIME/BREACH family). See the crate docs.
    pub compress: bool,
    /// Largest sealed cookie value, in bytes (characters of the base64 token). Sealing a
    /// larger session fails with [`SessionError::TooLarge`](session_core::SessionError::TooLarge).
    /// At most 4096, the browser limit; lower it to leave room for the cookie's name (Chrome
    /// and Firefox count name plus value against 4096).
    pub max_cookie_bytes: usize,
    /// Cookies sealed with a lower epoch no longer open. Bump it (on every node) to invalidate
    /// every outstanding cookie at once, the only revocation a stateless cookie allows.
    pub revocation_epoch: u32,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            cookie_name: "sid".into(),
            compress: false,
            max_cookie_bytes: BROWSER_COOKIE_LIMIT,
            revocation_epoch: 0,
        }
    }
}

pub use session_core::ConfigError;

/// Longest accepted cookie name.
const MAX_NAME_LEN: usize = 256;

impl CookieConfig {
    /// Sets the cookie name.
    pub fn with_cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// Turns compression on or off.
    pub fn with_compression(mut self, compress: bool) -> Self {
        self.compress = compress;
        self
    }

    /// Sets the largest sealed cookie value.
    pub fn with_max_cookie_bytes(mut self, max: usize) -> Self {
        self.max_cookie_bytes = max;
        self
    }

    /// Sets the revocation epoch.
    pub fn with_revocation_epoch(mut self, epoch: u32) -> Self {
        self.revocation_epoch = epoch;
        self
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.cookie_name;
        let bad = |reason: &str| {
            ConfigError::new(
                "cookie",
                "cookie_name",
                format!("{name:?} is invalid: {reason}"),
            )
        };
        if self.cookie_name.is_empty() {
            return Err(bad("it is empty"));
        }
        if self.cookie_name.len() > MAX_NAME_LEN {
            return Err(bad("it is longer than 256 bytes"));
        }
        // RFC 6265 section 4.1.1: a cookie name is an RFC 2616 token.
        if !self.cookie_name.bytes().all(is_token_byte) {
            return Err(bad(
                "only visible ASCII without spaces or the separators ()<>@,;:\\\"/[]?={} is allowed",
            ));
        }
        if !(MIN_COOKIE_LIMIT..=BROWSER_COOKIE_LIMIT).contains(&self.max_cookie_bytes) {
            return Err(ConfigError::new(
                "cookie",
                "max_cookie_bytes",
                format!(
                    "must be between {MIN_COOKIE_LIMIT} and {BROWSER_COOKIE_LIMIT}, got {}",
                    self.max_cookie_bytes
                ),
            ));
        }
        Ok(())
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_layer() {
        let c = CookieConfig::default();
        c.validate().unwrap();
        assert_eq!(c.cookie_name, "sid");
        assert!(!c.compress);
        assert_eq!(c.max_cookie_bytes, 4096);
        assert_eq!(c.revocation_epoch, 0);
    }

    #[test]
    fn rejects_bad_fields_by_name() {
        for name in ["", "a b", "a;b", "sid=", "ключ", "tab\t"] {
            let err = CookieConfig::default()
                .with_cookie_name(name)
                .validate()
                .unwrap_err();
            assert_eq!(err.field, "cookie_name", "{err}");
        }
        let long = "a".repeat(257);
        assert!(
            CookieConfig::default()
                .with_cookie_name(long)
                .validate()
                .is_err()
        );
        for max in [0, 100, 4097, 10_000] {
            let err = CookieConfig::default()
                .with_max_cookie_bytes(max)
                .validate()
                .unwrap_err();
            assert_eq!(err.field, "max_cookie_bytes");
            assert_eq!(
                err.problem,
                format!("must be between {MIN_COOKIE_LIMIT} and 4096, got {max}")
            );
        }
        CookieConfig::default()
            .with_cookie_name("__Host-app_sid.v2")
            .with_max_cookie_bytes(4000)
            .validate()
            .unwrap();
    }

    #[test]
    fn deserializes_with_defaults_and_refuses_unknown_fields() {
        let c: CookieConfig =
            serde_json::from_str(r#"{"revocation_epoch": 3, "compress": true}"#).unwrap();
        assert_eq!(c.revocation_epoch, 3);
        assert!(c.compress);
        assert_eq!(c.cookie_name, "sid");
        let err = serde_json::from_str::<CookieConfig>(r#"{"secret": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
