//! The one error type every backend returns, and the token parser's typed errors.

use std::error::Error as StdError;

/// A boxed error from a backend's own driver (sqlx, redis, reqwest, ...), kept as the cause.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a token string was rejected.
///
/// Every variant is produced by pure parsing, before any I/O: a rejected token is "no session",
/// never a panic, never a 500 and never an outbound call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is the empty string.
    #[error("the token is empty")]
    Empty,
    /// The token is longer than the backend accepts.
    #[error("the token is {len} bytes, over the {max}-byte limit")]
    TooLong {
        /// Length of the rejected token.
        len: usize,
        /// The limit that applied.
        max: usize,
    },
    /// The token is not URL-safe base64 (or has non-canonical trailing bits).
    #[error("the token is not URL-safe base64")]
    NotBase64,
    /// The decoded token is shorter than its format requires.
    #[error("the token is truncated")]
    Truncated,
    /// The token names a format version this build does not read.
    #[error("the token has unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// The token's length fields disagree with its size.
    #[error("the token's layout is malformed")]
    Malformed,
    /// No key of the ring verifies the token's MAC (forged, tampered, or signed with a retired key).
    #[error("the token's signature does not verify")]
    BadSignature,
    /// The token's routing data names something outside the cluster's membership.
    #[error("the token's routing data is not valid here: {0}")]
    BadRouting(&'static str),
}

/// Everything a [`SessionBackend`](crate::SessionBackend) operation can fail with.
///
/// The axum layer maps these to responses: an [`InvalidToken`](SessionError::InvalidToken) is
/// never surfaced (the request simply has no session), [`TooLarge`](SessionError::TooLarge) and
/// [`Gone`](SessionError::Gone) get a clear message, and the rest an opaque 500 whose cause is
/// logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The client's token was rejected before any I/O.
    #[error("invalid session token: {0}")]
    InvalidToken(#[from] TokenError),
    /// A write lost a race that the backend cannot merge (for example, a compare-and-set on a
    /// version that moved).
    #[error("conflicting session write: {0}")]
    Conflict(String),
    /// The session no longer exists on the backend (it expired or was destroyed while the
    /// request ran); the write was not applied and nothing was recreated.
    #[error("the session expired or was destroyed during the request")]
    Gone,
    /// The session (or one value) exceeds what the backend can store or send.
    #[error("the session is too large: {size} bytes, over the {limit}-byte limit of {what}")]
    TooLarge {
        /// Size of the rejected encoding in bytes.
        size: usize,
        /// The limit that applied.
        limit: usize,
        /// What imposes the limit ("a browser cookie", "a peer message", ...).
        what: &'static str,
    },
    /// A value could not be converted to or from JSON.
    #[error("session value for key {key:?} could not be (de)serialized: {source}")]
    Serde {
        /// The key involved.
        key: String,
        /// The serde_json error.
        #[source]
        source: serde_json::Error,
    },
    /// The backend's store or peers cannot be reached (database down, cache down, no live node).
    #[error("session backend {backend} is unavailable: {context}")]
    Unavailable {
        /// The backend scheme name.
        backend: &'static str,
        /// What was being attempted.
        context: String,
        /// The driver's error.
        #[source]
        source: Option<BoxError>,
    },
    /// Any other backend failure, with context.
    #[error("session backend {backend} failed: {context}")]
    Backend {
        /// The backend scheme name.
        backend: &'static str,
        /// What was being attempted.
        context: String,
        /// The driver's error.
        #[source]
        source: Option<BoxError>,
    },
}

impl SessionError {
    /// Builds an [`Unavailable`](SessionError::Unavailable) error with a cause.
    pub fn unavailable(
        backend: &'static str,
        context: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        SessionError::Unavailable {
            backend,
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// Builds a [`Backend`](SessionError::Backend) error with a cause.
    pub fn backend(
        backend: &'static str,
        context: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        SessionError::Backend {
            backend,
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// Builds a [`Backend`](SessionError::Backend) error without an underlying cause.
    pub fn backend_msg(backend: &'static str, context: impl Into<String>) -> Self {
        SessionError::Backend {
            backend,
            context: context.into(),
            source: None,
        }
    }

    /// True when the error means "this request has no valid session" rather than a failure.
    pub fn is_invalid_token(&self) -> bool {
        matches!(self, SessionError::InvalidToken(_))
    }
}
