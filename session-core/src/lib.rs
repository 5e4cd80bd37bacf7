//! # session-core
//!
//! The contract of the session-sync workspace: one async trait, [`SessionBackend`], that every
//! session scheme implements (instant copy between cluster nodes, sealed cookie, SQL, Redis),
//! plus everything the schemes share:
//!
//! * [`SessionId`]: 128 random bits from the OS CSPRNG; `Debug` logs a salted hash, never the id.
//! * [`TokenSigner`] and [`KeyRing`]: the versioned, HMAC-SHA256-signed token the client
//!   carries, with key rotation (first key signs, all verify). Bad tokens are rejected with a
//!   typed [`TokenError`] before any I/O.
//! * [`SessionRecord`], [`SessionData`], [`Delta`]: the session model. A request's writes are a
//!   delta (keys set, keys removed), never a snapshot, so concurrent requests that change
//!   different keys both survive.
//! * [`ExpiryPolicy`]: sliding idle timeout, absolute timeout, throttled touches so reads do
//!   not become writes.
//! * [`clock`]: what time it is for session deadlines ([`now_millis`]); tests can run a task on
//!   a [`clock::TestClock`] that follows tokio's (pausable) time.
//! * [`Session`] and [`SessionLayer`]: the per-request handle (lazy load, write back only what
//!   changed) and the axum/tower layer around it.
//! * [`serve`](mod@serve): serving a `Router` with a header-read timeout, a request timeout, an
//!   inactivity timeout and a connection cap ([`serve::ServeLimits`]), for the app port and the
//!   cluster port alike.
//! * [`cost`]: each request's N and D, attributed by the layer and summed per read and per
//!   write ([`cost::RequestCosts`]).
//! * [`testing`] (feature `testing`): the conformance suite every backend runs.
//!
//! ## An axum app with sessions
//!
//! Any backend plugs in the same way; this example uses the in-process [`MemoryBackend`].
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Json, Router, routing::{get, post}};
//! use session_core::{MemoryBackend, Session, SessionBackend, SessionConfig, SessionError, SessionLayer};
//!
//! async fn login(session: Session, Json(user): Json<String>) -> Result<&'static str, SessionError> {
//!     session.insert("user", &user)?;
//!     session.cycle_id(); // new id on privilege change: defeats session fixation
//!     Ok("welcome")
//! }
//!
//! async fn whoami(session: Session) -> Result<String, SessionError> {
//!     Ok(session.get::<String>("user").await?.unwrap_or_else(|| "nobody".into()))
//! }
//!
//! # fn main() {
//! let backend: Arc<dyn SessionBackend> = Arc::new(MemoryBackend::default());
//! let app: Router = Router::new()
//!     .route("/login", post(login))
//!     .route("/whoami", get(whoami))
//!     .layer(SessionLayer::with_config(backend, SessionConfig::default().with_secure(false)));
//! # let _ = app;
//! # }
//! ```
//!
//! ## What the layer guarantees
//!
//! * A handler that never touches the session causes no backend call.
//! * A request that changes nothing writes nothing (apart from a throttled touch).
//! * A 5xx response is never followed by a save.
//! * A forged, expired or garbage token gives the handler a fresh empty session; it never
//!   produces an error response.
//! * A new session that failed to save never sets a cookie.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
pub mod clock;
mod config_error;
pub mod cost;
mod error;
mod expiry;
mod histogram;
mod id;
mod keys;
#[cfg(feature = "axum")]
mod layer;
mod memory;
mod record;
#[cfg(feature = "axum")]
pub mod serve;
mod session;
#[cfg(feature = "metrics")]
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
mod token;

pub use backend::{
    CLIENT_BYTES_BUCKETS, CoreCounters, Counters, Metric, MetricKind, SessionBackend,
};
pub use config_error::ConfigError;
/// The `SameSite` cookie attribute values, for [`SessionConfig::same_site`].
#[cfg(feature = "axum")]
pub use cookie::SameSite;
pub use error::{BoxError, SessionError, TokenError};
pub use expiry::ExpiryPolicy;
pub use histogram::{Histogram, HistogramSnapshot};
pub use id::{SESSION_ID_LEN, SessionId, fill_random};
pub use keys::{KeyError, KeyRing, MIN_SECRET_LEN, Secret};
#[cfg(feature = "axum")]
pub use layer::{
    MAX_SET_COOKIE_LEN, MissingSessionLayer, OriginCheck, RETRY_AFTER_SECS, STALE_HEADER,
    SessionConfig, SessionLayer, SessionService, TokenTransport,
};
pub use memory::MemoryBackend;
pub use record::{
    Delta, Loaded, MAX_PAYLOAD_LEN, PayloadTooLarge, RawJson, RawJsonStr, Saved, SessionData,
    SessionRecord, now_millis,
};
pub use session::{Commit, Session, SessionLimits};
pub use token::{
    MAX_ID_TOKEN_LEN, MAX_ROUTING_LEN, MAX_SEALED_TOKEN_LEN, TAG_LEN, TOKEN_VERSION, TokenSigner,
    VerifiedToken, unverified_session_id,
};

/// Re-exported so backend crates implement the trait with the same macro version.
pub use async_trait::async_trait;
