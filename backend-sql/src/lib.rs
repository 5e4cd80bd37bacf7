//! # backend-sql
//!
//! The paper's *database* scheme for session-sync: every session is one row in PostgreSQL (the
//! production target) or SQLite (a server-less run), reached through [sqlx]. Reads cost one
//! statement (the paper's N = 0, D = 1); writes send only what the request changed.
//!
//! ```no_run
//! use std::sync::Arc;
//! use backend_sql::{SqlBackend, SqlConfig};
//! use session_core::{ExpiryPolicy, KeyRing, Secret, SessionBackend};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let secret: Secret = std::env::var("SESSION_SECRET")?.parse()?;
//! let config = SqlConfig::new(std::env::var("DATABASE_URL")?).with_schema("web");
//! let backend: Arc<dyn SessionBackend> = Arc::new(
//!     SqlBackend::connect(config, ExpiryPolicy::default(), &KeyRing::new([secret])?).await?,
//! );
//! // hand `backend` to session_core::SessionLayer::new(backend) ...
//! # backend.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## The table
//!
//! | column | PostgreSQL | SQLite | meaning |
//! |---|---|---|---|
//! | `id` | `BYTEA` primary key | `BLOB` primary key | the 128-bit random session id |
//! | `data` | `JSONB` object | `TEXT` (see below) | the session's values by key |
//! | `version` | `BIGINT` | `INTEGER` | +1 on every applied delta |
//! | `created_at`, `last_access` | `BIGINT` | `INTEGER` | ms since the Unix epoch |
//! | `expires_at` | `BIGINT`, **indexed** | `INTEGER`, **indexed** | the sliding deadline, never past the absolute one |
//! | `absolute_deadline` | `BIGINT` | `INTEGER` | creation + absolute timeout |
//!
//! The schema and table names are configurable ([`SqlConfig::schema`], [`SqlConfig::table`]);
//! they are validated as plain identifiers before they are put into any SQL. The backend creates
//! and migrates the table itself with sqlx's migrator (bookkeeping in `<table>_migrations`, an
//! advisory lock on PostgreSQL so nodes starting together do not race); [`schema_sql`] prints
//! the DDL for deployments that apply it by hand (`migrate = false`).
//!
//! On SQLite each value is stored as a JSON *string holding the value's JSON text*, because
//! rebuilding the object with SQLite's JSON functions would otherwise re-encode values (booleans
//! as `1`/`0`, long numbers rounded) and SQLite's JSON paths cannot address every possible key.
//!
//! ## What each operation does
//!
//! * **load**: the token's HMAC is checked first; a forged, foreign or garbage token costs no
//!   statement. Then one `SELECT … WHERE id = $1 AND expires_at > $now`: an expired row is never
//!   returned, whether or not the cleanup has run yet.
//! * **save**: the delta is applied **in one statement** on the server: on PostgreSQL
//!   `data = (data - $removed::text[]) || $set::jsonb`, on SQLite a `json_each` rebuild; in the
//!   same `UPDATE` the version is bumped and the idle deadline refreshed (never moved backwards,
//!   never past the absolute deadline). Two requests changing different keys of one session
//!   therefore both survive, unlike stores that write back the whole blob. The `UPDATE` only
//!   matches a live row: a save to a session that expired or was destroyed meanwhile is
//!   [`SessionError::Gone`](session_core::SessionError::Gone), never a resurrection.
//! * **touch** (a read-only request whose idle window is due, per
//!   [`ExpiryPolicy`](session_core::ExpiryPolicy)): one `UPDATE` of the two time columns. Reads
//!   that are not due write nothing.
//! * **cycle_id**: one transaction: `INSERT … SELECT … FOR UPDATE` copies the row to a fresh id
//!   with the delta applied, then the old row is deleted. The new row exists before the old one
//!   goes, and a concurrent save either lands before the copy or gets `Gone`.
//! * **destroy**: one `DELETE`.
//! * **cleanup**: a background task deletes expired rows every `cleanup_interval` (± jitter) in
//!   batches of `cleanup_batch_size` (`… LIMIT n FOR UPDATE SKIP LOCKED` on PostgreSQL, so
//!   several nodes cleaning at once take disjoint rows). Stopped by
//!   [`shutdown`](session_core::SessionBackend::shutdown) or by dropping the backend.
//!
//! ## Failures
//!
//! * Database unreachable, pool exhausted past `acquire_timeout`, statement timeout, SQLite busy:
//!   [`SessionError::Unavailable`](session_core::SessionError::Unavailable). The axum layer then
//!   answers 500 and, for a new session, sets no cookie. Every operation is bounded on the
//!   client side too (`acquire_timeout + statement_timeout`).
//! * A statement whose connection was lost (server restart, `pg_terminate_backend`, a reset) is
//!   repeated on another connection (a dead pooled connection fails at once without running
//!   anything and is discarded, so at most `max_connections + 1` attempts reach a fresh one);
//!   all the statements are safe to repeat (an id cycle is not repeated once its `COMMIT` was
//!   sent). The pool reconnects by itself when the database returns.
//! * A row whose data cannot be decoded is deleted and logged once (with a salted hash of the
//!   id, never the id), and loads as no session.
//!
//! ## Trade-offs
//!
//! * Every read is a database round trip; the database is the shared bottleneck the paper
//!   describes. In exchange sessions survive restarts of every app node, and need no extra
//!   server when the app already has a database.
//! * Every write changes the indexed `expires_at`, so PostgreSQL cannot use HOT updates for
//!   session rows; autovacuum keeps up at normal rates, and throttled touches keep writes rare.
//! * Writes wait for PostgreSQL's WAL flush by default; [`SqlConfig::synchronous_commit`]
//!   `= false` trades the last few hundred milliseconds of session writes on a *database* crash
//!   for much faster writes.
//! * SQLite serialises writers (one write lock per file) and runs in WAL mode with
//!   `synchronous = NORMAL`: durable across app crashes, may lose the last commits on power
//!   loss. It suits one app node (or a few processes on one host), not a cluster.
//! * Deadlines are computed from the app nodes' clocks: keep them NTP-synchronised.
//! * PostgreSQL's JSONB cannot hold the character U+0000; such a value is refused with a clear
//!   error. JSONB also normalises number spelling (`1E2` reads back as `100`).
//!
//! ## Counters
//!
//! [`counters`](session_core::SessionBackend::counters) reports D (statements sent) overall and
//! per operation (`db_calls_by_operation{op=…}`), plus retries, `Unavailable` errors, saves that
//! found the session gone, corrupt rows removed, cleanup runs/batches/rows/errors and the pool's
//! size.
//!
//! ## Features
//!
//! `postgres` and `sqlite` (both default) select the drivers; `tls-rustls` adds TLS to
//! PostgreSQL; `testing` exposes the [`testing`] module with conformance-suite factories.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
compile_error!("backend-sql needs at least one driver feature: `postgres` or `sqlite`");

mod backend;
mod codec;
mod config;
mod errors;
#[cfg(feature = "postgres")]
mod pg;
mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;
mod statements;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::{SqlBackend, SqlPool};
pub use config::{ConfigError, Driver, MAX_IDENT_LEN, SqlConfig, validate_identifier};
pub use schema::schema_sql;

/// Longest a migration run may take (including waiting for another node's migration lock).
pub const MIGRATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
