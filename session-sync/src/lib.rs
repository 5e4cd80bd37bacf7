//! # session-sync
//!
//! Sessions for Rust web services that run on more than one node, in one dependency: the
//! session layer, the axum [`Session`] extractor and the [`SessionBackend`] trait of
//! `session-core`, re-exported at the top of this crate, and one module per backend, each
//! behind a feature:
//!
//! | feature | module | sessions live |
//! |---|---|---|
//! | `instantcopy` (default) | [`instantcopy`] | in the app nodes' own memory, copied between them (no database, no cache server) |
//! | `cookie` | `cookie` | sealed (AES-256-GCM) in the client's cookie |
//! | `sql` | `sql` | a row per session in PostgreSQL or SQLite |
//! | `redis` | `redis` | a hash per session in Redis or Redis Cluster |
//! | `tower-sessions` | `tower_sessions_store` | (any of the server-side backends above as a tower-sessions `SessionStore`, for tower-sessions and axum-login apps) |
//! | `actix` | `actix_store` | (the same as an actix-session `SessionStore`, for actix-web apps) |
//! | `full` | all of them | |
//!
//! Every backend implements the same trait, so switching is one line where the backend is
//! built; handlers do not change. The crates it re-exports (`session-core`,
//! `backend-instantcopy`, `backend-cookie`, `backend-sql`, `backend-redis`) are versioned
//! together: depending on this crate alone keeps them in step.
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use session_sync::instantcopy::{Config, InstantCopyNode};
//! use session_sync::{ExpiryPolicy, KeyRing, Secret, Session, SessionBackend, SessionError, SessionLayer};
//!
//! async fn visits(session: Session) -> Result<String, SessionError> {
//!     let n = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
//!     session.insert("visits", &n)?;
//!     Ok(format!("visit {n}"))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One instant-copy node; a real cluster gives each node its own `node_id` and some `seeds`.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let mut config = Config::default();
//! config.cluster_addr = listener.local_addr()?;
//! let cluster_key = KeyRing::new([Secret::new(b"the cluster secret, from env or a file".to_vec())?])?;
//! let node = InstantCopyNode::start_with_listener(config, ExpiryPolicy::default(), &cluster_key, listener).await?;
//! let backend: Arc<dyn SessionBackend> = Arc::new(node.clone());
//! let app: Router = Router::new()
//!     .route("/", get(visits))
//!     .layer(SessionLayer::new(backend));
//! # let _ = app;
//! node.shutdown().await;
//! # Ok(()) }
//! ```

pub use session_core::*;

/// The session contract itself (`session-core`), for paths that name it.
pub use session_core as core;

/// Instant copy between cluster nodes (`backend-instantcopy`).
#[cfg(feature = "instantcopy")]
pub use backend_instantcopy as instantcopy;

/// The sealed-cookie backend (`backend-cookie`).
#[cfg(feature = "cookie")]
pub use backend_cookie as cookie;

/// The SQL backend (`backend-sql`).
#[cfg(feature = "sql")]
pub use backend_sql as sql;

/// The Redis backend (`backend-redis`).
#[cfg(feature = "redis")]
pub use backend_redis as redis;

/// Our server-side backends as a tower-sessions `SessionStore` (`session-tower`).
#[cfg(feature = "tower-sessions")]
pub use session_tower as tower_sessions_store;

/// Our server-side backends as an actix-session `SessionStore` (`session-actix`).
#[cfg(feature = "actix")]
pub use session_actix as actix_store;
