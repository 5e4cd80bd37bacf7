//! [`SqlBackend`]: the [`SessionBackend`] implementation over a [`Store`], with retries,
//! timeouts, counters, corrupt-row handling and the cleanup task.
//!
//! Past 600 lines because the retry and timeout wrapper, the call counters, corrupt-row handling
//! and the cleanup task all serve this one `SessionBackend` implementation.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use session_core::{
    CoreCounters, Counters, Delta, ExpiryPolicy, KeyRing, Loaded, Metric, Saved, SessionBackend,
    SessionData, SessionError, SessionId, SessionRecord, TokenError, TokenSigner, async_trait,
    now_millis,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::codec::CorruptData;
use crate::config::{ConfigError, Driver, SqlConfig};
use crate::errors::{self, Class, SCHEME};
use crate::schema::Names;
use crate::store::{Calls, CycleError, Row, Stamp, Store, Written};

/// A connection pool handed to [`SqlBackend::from_pool`], for applications that already have one.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SqlPool {
    /// A PostgreSQL pool.
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    /// A SQLite pool.
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
}

#[cfg(feature = "postgres")]
impl From<sqlx::PgPool> for SqlPool {
    fn from(p: sqlx::PgPool) -> Self {
        SqlPool::Postgres(p)
    }
}

#[cfg(feature = "sqlite")]
impl From<sqlx::SqlitePool> for SqlPool {
    fn from(p: sqlx::SqlitePool) -> Self {
        SqlPool::Sqlite(p)
    }
}

/// Statements sent, by operation (the paper's D, broken down).
#[derive(Default)]
struct OpCalls {
    load: AtomicU64,
    create: AtomicU64,
    save: AtomicU64,
    touch: AtomicU64,
    cycle: AtomicU64,
    destroy: AtomicU64,
    cleanup: AtomicU64,
    corrupt: AtomicU64,
}

#[derive(Default)]
struct Stats {
    calls: OpCalls,
    retries: AtomicU64,
    unavailable: AtomicU64,
    gone: AtomicU64,
    corrupt_removed: AtomicU64,
    id_collisions: AtomicU64,
    cleanup_runs: AtomicU64,
    cleanup_batches: AtomicU64,
    cleanup_deleted: AtomicU64,
    cleanup_errors: AtomicU64,
}

fn inc(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// How many corrupt session ids are remembered (so each is logged once).
const CORRUPT_MEMORY: usize = 4096;

/// A failed store call: can it be retried on a fresh connection, and what error is it.
trait Failure {
    fn retryable(&self) -> bool;
    fn into_error(self, context: &str) -> SessionError;
}

impl Failure for sqlx::Error {
    fn retryable(&self) -> bool {
        errors::classify(self) == Class::ConnectionLost
    }
    fn into_error(self, context: &str) -> SessionError {
        errors::to_session_error(context, self)
    }
}

impl Failure for CycleError {
    fn retryable(&self) -> bool {
        // A lost connection before COMMIT rolled the transaction back; at COMMIT it may have
        // committed, and retrying would find the old id gone.
        !self.at_commit && errors::classify(&self.error) == Class::ConnectionLost
    }
    fn into_error(self, context: &str) -> SessionError {
        errors::to_session_error(context, self.error)
    }
}

fn to_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn to_u64(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

fn config_error(e: ConfigError) -> SessionError {
    SessionError::backend(SCHEME, "invalid configuration", e)
}

/// The shared state of a backend and its cleanup task.
struct Inner {
    store: Store,
    signer: TokenSigner,
    policy: ExpiryPolicy,
    config: SqlConfig,
    driver: Driver,
    names: Names,
    counters: CoreCounters,
    stats: Stats,
    corrupt_seen: Mutex<HashSet<SessionId>>,
    owns_pool: bool,
}

impl Inner {
    fn calls<'a>(&'a self, op: &'a AtomicU64) -> Calls<'a> {
        Calls {
            core: &self.counters,
            op,
        }
    }

    fn stamp(&self, now: u64) -> Stamp {
        let idle = u64::try_from(self.policy.idle_timeout().as_millis()).unwrap_or(u64::MAX);
        Stamp {
            now: to_i64(now),
            // Capped so that `now + idle` cannot overflow a BIGINT.
            idle_ms: to_i64(idle).min(i64::MAX / 4),
        }
    }

    /// Runs a store call within the operation time limit. A call that failed because its
    /// connection was lost is repeated on another connection: a pool whose connections were all
    /// cut (server restart, `pg_terminate_backend`) holds up to `max_connections` dead ones, each
    /// failing at once without running anything and then being discarded, so up to
    /// `max_connections + 1` attempts reach a fresh one. Every call the backend makes is safe to
    /// repeat (see the trait impl).
    async fn run<T, E, F, Fut>(&self, context: &'static str, mut call: F) -> Result<T, SessionError>
    where
        E: Failure,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let limit = self.config.operation_timeout();
        let attempts = self.config.max_connections.clamp(1, 64) + 1;
        let work = async {
            let mut attempt = 1;
            loop {
                match call().await {
                    Ok(v) => return Ok(v),
                    Err(e) if e.retryable() && attempt < attempts => {
                        attempt += 1;
                        inc(&self.stats.retries, 1);
                        let lost = e.into_error(context);
                        tracing::debug!(error = %lost, attempt, "database connection lost; retrying on another connection");
                    }
                    Err(e) => return Err(e.into_error(context)),
                }
            }
        };
        let result = match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => Err(errors::timed_out(context, limit)),
        };
        if let Err(SessionError::Unavailable { .. }) = &result {
            inc(&self.stats.unavailable, 1);
        }
        result
    }

    fn record(&self, id: SessionId, row: &Row) -> Result<SessionRecord, CorruptData> {
        let data = self.store.decode(&row.data)?;
        let times = [
            row.created_at,
            row.last_access,
            row.expires_at,
            row.absolute_deadline,
            row.version,
        ];
        if times.iter().any(|t| *t < 0) {
            return Err(CorruptData::new("negative time or version"));
        }
        Ok(SessionRecord {
            id,
            data,
            created_at: to_u64(row.created_at),
            last_access: to_u64(row.last_access),
            idle_deadline: to_u64(row.expires_at),
            absolute_deadline: to_u64(row.absolute_deadline),
            version: to_u64(row.version),
        })
    }

    /// Deletes a row whose data cannot be decoded, logging each such session once.
    async fn remove_corrupt(&self, id: SessionId, version: i64, why: &CorruptData) {
        let first = {
            let mut seen = self.corrupt_seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() >= CORRUPT_MEMORY {
                seen.clear();
            }
            seen.insert(id)
        };
        if first {
            tracing::warn!(
                session = %id.log_hash(),
                table = %self.names.table,
                error = %why,
                "removing a stored session whose data cannot be decoded"
            );
        }
        let calls = self.calls(&self.stats.calls.corrupt);
        match self
            .run("removing a corrupt session", || {
                self.store.delete_version(&id, version, calls)
            })
            .await
        {
            Ok(n) => inc(&self.stats.corrupt_removed, n),
            Err(e) if first => {
                tracing::warn!(session = %id.log_hash(), error = %e, "could not remove a corrupt session");
            }
            Err(_) => {}
        }
    }

    /// One cleanup run: batches of at most `cleanup_batch_size` rows until a batch comes back
    /// short, at most `cleanup_max_batches`, stopping early when `stop` says so.
    async fn cleanup_pass(
        &self,
        stop: Option<&watch::Receiver<bool>>,
    ) -> Result<u64, SessionError> {
        inc(&self.stats.cleanup_runs, 1);
        let batch = i64::from(self.config.cleanup_batch_size.max(1));
        let calls = self.calls(&self.stats.calls.cleanup);
        let mut total = 0;
        for _ in 0..self.config.cleanup_max_batches.max(1) {
            if stop.is_some_and(|s| *s.borrow()) {
                break;
            }
            let now = to_i64(now_millis());
            let n = self
                .run("deleting expired sessions", || {
                    self.store.cleanup_batch(now, batch, calls)
                })
                .await?;
            inc(&self.stats.cleanup_batches, 1);
            inc(&self.stats.cleanup_deleted, n);
            total += n;
            if n < to_u64(batch) {
                break;
            }
            tokio::task::yield_now().await;
        }
        Ok(total)
    }
}

/// Sessions in PostgreSQL or SQLite: the paper's database scheme (N = 0, D = 1 per read).
///
/// Build it with [`connect`](SqlBackend::connect) (or [`from_pool`](SqlBackend::from_pool))
/// and use it as an `Arc<dyn SessionBackend>`. See the [crate docs](crate) for the table layout
/// and the guarantees.
pub struct SqlBackend {
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    cleanup: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SqlBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlBackend")
            .field("driver", &self.inner.driver)
            .field("table", &self.inner.names.table)
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

impl SqlBackend {
    /// Connects to the database the config names, migrates the table (unless `migrate` is
    /// off, in which case it checks that the table exists), and starts the cleanup task.
    ///
    /// Errors: [`SessionError::Backend`] for a bad configuration (naming the field) or a schema
    /// problem, [`SessionError::Unavailable`] when the database cannot be reached within
    /// `acquire_timeout`. Tokens are signed with `keys` (derived for the token purpose; use the
    /// cluster secret every node shares).
    pub async fn connect(
        config: SqlConfig,
        policy: ExpiryPolicy,
        keys: &KeyRing,
    ) -> Result<SqlBackend, SessionError> {
        let driver = config.validate().map_err(config_error)?;
        let store = match driver {
            #[cfg(feature = "postgres")]
            Driver::Postgres => {
                let names = Names::new(&config, driver).map_err(config_error)?;
                let pool = crate::pg::PgStore::pool(&config).map_err(config_error)?;
                Store::Pg(crate::pg::PgStore::from_pool(pool, &names))
            }
            #[cfg(feature = "sqlite")]
            Driver::Sqlite => {
                let names = Names::new(&config, driver).map_err(config_error)?;
                let pool = crate::sqlite::SqliteStore::pool(&config).map_err(config_error)?;
                Store::Sqlite(crate::sqlite::SqliteStore::from_pool(pool, &names))
            }
            #[allow(unreachable_patterns)]
            other => {
                return Err(config_error(crate::config::bad(
                    "url",
                    format!("the {} driver is not compiled in", other.name()),
                )));
            }
        };
        Self::start(store, config, driver, policy, keys, true).await
    }

    /// Uses an existing pool instead of opening one; the pool settings of `config` (`url`,
    /// sizes, timeouts, `application_name`, `test_before_acquire`) are then the pool's own
    /// business and ignored. The pool is not closed by [`shutdown`](SessionBackend::shutdown).
    pub async fn from_pool(
        pool: SqlPool,
        config: SqlConfig,
        policy: ExpiryPolicy,
        keys: &KeyRing,
    ) -> Result<SqlBackend, SessionError> {
        let (store, driver) = match pool {
            #[cfg(feature = "postgres")]
            SqlPool::Postgres(p) => {
                let names = Names::new_for(&config, Driver::Postgres).map_err(config_error)?;
                (
                    Store::Pg(crate::pg::PgStore::from_pool(p, &names)),
                    Driver::Postgres,
                )
            }
            #[cfg(feature = "sqlite")]
            SqlPool::Sqlite(p) => {
                let names = Names::new_for(&config, Driver::Sqlite).map_err(config_error)?;
                (
                    Store::Sqlite(crate::sqlite::SqliteStore::from_pool(p, &names)),
                    Driver::Sqlite,
                )
            }
        };
        Self::start(store, config, driver, policy, keys, false).await
    }

    async fn start(
        store: Store,
        config: SqlConfig,
        driver: Driver,
        policy: ExpiryPolicy,
        keys: &KeyRing,
        owns_pool: bool,
    ) -> Result<SqlBackend, SessionError> {
        let names = Names::new_for(&config, driver).map_err(config_error)?;
        if config.migrate {
            match &store {
                #[cfg(feature = "postgres")]
                Store::Pg(s) => crate::pg::PgStore::migrate(&s.pool, &names).await?,
                #[cfg(feature = "sqlite")]
                Store::Sqlite(s) => crate::sqlite::SqliteStore::migrate(&s.pool, &names).await?,
            }
        } else {
            let limit = config.operation_timeout();
            match tokio::time::timeout(limit, store.check_table()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if errors::classify(&e) == Class::Other => {
                    return Err(SessionError::backend(
                        SCHEME,
                        format!(
                            "session table {} is not usable (migrate = false: create it with \
                             the DDL of backend_sql::schema_sql)",
                            names.table
                        ),
                        e,
                    ));
                }
                Ok(Err(e)) => {
                    return Err(errors::to_session_error("checking the session table", e));
                }
                Err(_) => return Err(errors::timed_out("checking the session table", limit)),
            }
        }
        let inner = Arc::new(Inner {
            store,
            signer: TokenSigner::new(keys),
            policy,
            config,
            driver,
            names,
            counters: CoreCounters::default(),
            stats: Stats::default(),
            corrupt_seen: Mutex::new(HashSet::new()),
            owns_pool,
        });
        let (stop, stop_rx) = watch::channel(false);
        let cleanup = if inner.config.cleanup {
            Some(tokio::spawn(cleanup_loop(inner.clone(), stop_rx)))
        } else {
            None
        };
        tracing::debug!(driver = driver.name(), table = %inner.names.table, "SQL session backend ready");
        Ok(SqlBackend {
            inner,
            stop,
            cleanup: Mutex::new(cleanup),
        })
    }

    /// The database behind this backend.
    pub fn driver(&self) -> Driver {
        self.inner.driver
    }

    /// The quoted, schema-qualified table name (`"public"."sessions"`), for operators' SQL.
    pub fn table(&self) -> &str {
        &self.inner.names.table
    }

    /// The configuration in force.
    pub fn config(&self) -> &SqlConfig {
        &self.inner.config
    }

    /// The connection pool (shared: cloning a pool is cheap).
    pub fn pool(&self) -> SqlPool {
        match &self.inner.store {
            #[cfg(feature = "postgres")]
            Store::Pg(s) => SqlPool::Postgres(s.pool.clone()),
            #[cfg(feature = "sqlite")]
            Store::Sqlite(s) => SqlPool::Sqlite(s.pool.clone()),
        }
    }

    /// Deletes expired rows now, in batches (what the background task does every
    /// `cleanup_interval`); returns how many rows it deleted. Safe to run on several nodes at
    /// once.
    pub async fn cleanup_expired(&self) -> Result<u64, SessionError> {
        self.inner.cleanup_pass(None).await
    }

    fn issue(&self, id: &SessionId, expires_at: u64) -> Result<Saved, SessionError> {
        Ok(Saved {
            token: self.inner.signer.sign(id, &[])?,
            expires_at,
        })
    }

    fn written(&self, w: Option<Written>) -> Result<Written, SessionError> {
        w.ok_or_else(|| {
            inc(&self.inner.stats.gone, 1);
            SessionError::Gone
        })
    }
}

impl Drop for SqlBackend {
    fn drop(&mut self) {
        // Dropping `stop` ends the cleanup task; close an owned pool gracefully so the server
        // sees orderly disconnects.
        let _ = self.stop.send(true);
        if self.inner.owns_pool {
            self.inner.store.spawn_close();
        }
    }
}

/// The cleanup task: a jittered wait, a batched cleanup pass, until stopped.
async fn cleanup_loop(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        let wait = jittered(inner.config.cleanup_interval, inner.config.cleanup_jitter);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        match inner.cleanup_pass(Some(&stop)).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(deleted = n, table = %inner.names.table, "deleted expired sessions");
            }
            Err(e) => {
                inc(&inner.stats.cleanup_errors, 1);
                tracing::warn!(error = %e, table = %inner.names.table, "session cleanup failed; trying again next interval");
            }
        }
    }
}

/// `base` ± `fraction` (uniformly random).
fn jittered(base: std::time::Duration, fraction: f64) -> std::time::Duration {
    let mut b = [0u8; 4];
    session_core::fill_random(&mut b);
    let unit = f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX); // 0..=1
    base.mul_f64((1.0 + fraction * (2.0 * unit - 1.0)).max(0.0))
}

#[async_trait]
impl SessionBackend for SqlBackend {
    fn scheme(&self) -> &'static str {
        SCHEME
    }

    fn policy(&self) -> &ExpiryPolicy {
        &self.inner.policy
    }

    /// One `SELECT` that never returns an expired row (D = 1); a forged or foreign token costs
    /// no statement at all. A row whose data cannot be decoded is deleted (logged once) and
    /// loads as `None`.
    async fn load(&self, token: &str) -> Result<Option<Loaded>, SessionError> {
        let result: Result<Option<Loaded>, SessionError> = async {
            let inner = &self.inner;
            inner.counters.loaded_token(token.len());
            let verified = inner.signer.verify(token).and_then(|v| {
                if v.routing.is_empty() {
                    Ok(v)
                } else {
                    Err(TokenError::BadRouting(
                        "the SQL backend issues tokens without routing data",
                    ))
                }
            });
            let verified = verified.inspect_err(|_| inner.counters.invalid_token())?;
            let id = verified.id;
            let now = now_millis();
            let calls = inner.calls(&inner.stats.calls.load);
            let row = inner
                .run("loading a session", || {
                    inner.store.load(&id, to_i64(now), calls)
                })
                .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            match inner.record(id, &row) {
                Ok(record) if !record.is_expired(now) => Ok(Some(Loaded {
                    // A token signed with a retired key gets a fresh one (through an empty save).
                    reissue: verified.key_index > 0,
                    ..Loaded::new(Arc::new(record), token, verified.routing)
                })),
                Ok(_) => Ok(None),
                Err(why) => {
                    inner.remove_corrupt(id, row.version, &why).await;
                    Ok(None)
                }
            }
        }
        .await;
        self.inner.counters.read_result(result)
    }

    /// One `INSERT` with a fresh random id (D = 1; another id is drawn in the astronomically
    /// unlikely case that it exists).
    async fn create(&self, data: SessionData) -> Result<Saved, SessionError> {
        let result: Result<Saved, SessionError> = async {
            let inner = &self.inner;
            let now = now_millis();
            let (idle, absolute) = inner.policy.initial_deadlines(now);
            let calls = inner.calls(&inner.stats.calls.create);
            for _ in 0..3 {
                let id = SessionId::random();
                let saved = self.issue(&id, idle.min(absolute))?;
                let inserted = inner
                    .run("creating a session", || {
                        inner.store.insert(
                            &id,
                            &data,
                            to_i64(now),
                            (to_i64(idle), to_i64(absolute)),
                            calls,
                        )
                    })
                    .await?;
                if inserted {
                    inner.counters.created();
                    return Ok(saved);
                }
                inc(&inner.stats.id_collisions, 1);
            }
            Err(SessionError::backend_msg(
                SCHEME,
                "three freshly drawn session ids already existed: the random source is broken",
            ))
        }
        .await;
        self.inner.counters.write_result(result)
    }

    /// One `UPDATE` applying the whole delta on the server (D = 1); an empty delta only moves the
    /// idle deadline. `Gone` if the row expired or was destroyed meanwhile. A token signed with
    /// a retired key is replaced by one signed with the current key.
    async fn save(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        let result: Result<Saved, SessionError> = async {
            let inner = &self.inner;
            let id = loaded.record.id;
            let stamp = inner.stamp(now_millis());
            let written = if delta.is_empty() {
                let calls = inner.calls(&inner.stats.calls.touch);
                inner
                    .run("refreshing a session's idle deadline", || {
                        inner.store.touch(&id, stamp, calls)
                    })
                    .await?
            } else {
                let calls = inner.calls(&inner.stats.calls.save);
                inner
                    .run("saving a session delta", || {
                        inner.store.update(&id, delta, stamp, calls)
                    })
                    .await?
            };
            let w = self.written(written)?;
            inner.counters.saved();
            tracing::trace!(session = %id.log_hash(), version = w.version, "session saved");
            if loaded.reissue {
                return self.issue(&id, to_u64(w.expires_at));
            }
            Ok(Saved {
                token: loaded.token.to_string(),
                expires_at: to_u64(w.expires_at),
            })
        }
        .await;
        self.inner.counters.write_result(result)
    }

    /// One transaction: the row is copied to a fresh id with the delta applied, then the old
    /// row is deleted (D = 4: BEGIN, INSERT … SELECT, DELETE, COMMIT).
    async fn cycle_id(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        let result: Result<Saved, SessionError> = async {
            let inner = &self.inner;
            let old = loaded.record.id;
            let new = SessionId::random();
            let stamp = inner.stamp(now_millis());
            let calls = inner.calls(&inner.stats.calls.cycle);
            let written = inner
                .run("cycling a session id", || {
                    inner.store.cycle(&old, &new, delta, stamp, calls)
                })
                .await?;
            let w = self.written(written)?;
            tracing::trace!(old = %old.log_hash(), new = %new.log_hash(), version = w.version, "session id cycled");
            let saved = self.issue(&new, to_u64(w.expires_at))?;
            inner.counters.cycled();
            Ok(saved)
        }
        .await;
        self.inner.counters.write_result(result)
    }

    /// One `DELETE` (D = 1).
    async fn destroy(&self, loaded: &Loaded) -> Result<(), SessionError> {
        let result: Result<(), SessionError> = async {
            let inner = &self.inner;
            let id = loaded.record.id;
            let calls = inner.calls(&inner.stats.calls.destroy);
            inner
                .run("destroying a session", || inner.store.delete(&id, calls))
                .await?;
            inner.counters.destroyed();
            Ok(())
        }
        .await;
        self.inner.counters.write_result(result)
    }

    fn counters(&self) -> Counters {
        let s = &self.inner.stats;
        let (size, idle) = self.inner.store.pool_state();
        let mut extra = vec![
            Metric::counter(
                "retries",
                "Statements repeated on another connection after theirs was lost",
                get(&s.retries),
            ),
            Metric::counter(
                "unavailable_errors",
                "Operations that failed because the database could not be reached in time",
                get(&s.unavailable),
            ),
            Metric::counter(
                "gone_on_save",
                "Saves and id cycles whose session had expired or been destroyed meanwhile",
                get(&s.gone),
            ),
            Metric::counter(
                "corrupt_rows_removed",
                "Stored sessions deleted because their data could not be decoded",
                get(&s.corrupt_removed),
            ),
            Metric::counter(
                "id_collisions",
                "Freshly drawn session ids that already existed",
                get(&s.id_collisions),
            ),
            Metric::counter(
                "cleanup_runs",
                "Runs of the expired-session cleanup",
                get(&s.cleanup_runs),
            ),
            Metric::counter(
                "cleanup_batches",
                "Batched DELETE statements run by the cleanup",
                get(&s.cleanup_batches),
            ),
            Metric::counter(
                "cleanup_deleted_rows",
                "Expired sessions deleted by the cleanup",
                get(&s.cleanup_deleted),
            ),
            Metric::counter(
                "cleanup_errors",
                "Cleanup runs that failed",
                get(&s.cleanup_errors),
            ),
            Metric::gauge(
                "pool_connections",
                "Open pooled connections",
                f64::from(size),
            ),
            Metric::gauge(
                "pool_idle_connections",
                "Idle pooled connections",
                idle as f64,
            ),
        ];
        let c = &s.calls;
        for (op, v) in [
            ("load", &c.load),
            ("create", &c.create),
            ("save", &c.save),
            ("touch", &c.touch),
            ("cycle", &c.cycle),
            ("destroy", &c.destroy),
            ("cleanup", &c.cleanup),
            ("corrupt_removal", &c.corrupt),
        ] {
            extra.push(
                Metric::counter(
                    "db_calls_by_operation",
                    "Statements sent to the database, by operation (the paper's D)",
                    get(v),
                )
                .with_label("op", op),
            );
        }
        self.inner.counters.snapshot(extra)
    }

    /// Stops the cleanup task (waiting for a run in progress to finish its batch) and closes
    /// the pool if the backend opened it. Operations after shutdown fail with `Unavailable`.
    async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self
            .cleanup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut task) = task {
            let limit = self.inner.config.operation_timeout();
            if tokio::time::timeout(limit, &mut task).await.is_err() {
                task.abort();
            }
        }
        if self.inner.owns_pool {
            self.inner.store.close().await;
        }
    }
}
