//! SQLite: sessions as a JSON object of JSON-text strings (see [`codec`]), each
//! delta applied by one `UPDATE` that rebuilds the object with `json_each`/`json_group_object`.

use std::str::FromStr;
use std::sync::Arc;

use session_core::{Delta, SessionData, SessionError};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use crate::codec;
use crate::config::{ConfigError, Driver, SqlConfig};
use crate::schema::{self, Names};
use crate::statements::{Dialect, Sql, Statements};

/// The delta as an expression over the row's `data`: keep the entries whose key the delta does
/// not touch (`?keys` is a JSON array of every set or removed key), add the set entries
/// (`?set`, a wrapped object). Keys are compared as decoded strings, so any key works.
fn rebuilt(t: &str, keys: &str, set: &str) -> String {
    format!(
        "(SELECT json_group_object(k, v) FROM (\
         SELECT key AS k, value AS v FROM json_each({t}.data) \
         WHERE key NOT IN (SELECT value FROM json_each({keys})) \
         UNION ALL SELECT key, value FROM json_each({set})))"
    )
}

/// SQLite's differences: the `json_each` rebuild in the SQL, `data` read as bytes, every
/// touched key bound as one JSON array, values in the wrapped form of [`codec`].
impl Dialect for Sqlite {
    type Data = Vec<u8>;
    type Keys = String;

    fn sql(t: &str) -> Sql {
        let s = |x: String| Arc::<str>::from(x);
        Sql {
            load: s(format!(
                "SELECT CAST(data AS BLOB), version, created_at, last_access, expires_at, \
                 absolute_deadline FROM {t} WHERE id = ?1 AND expires_at > ?2"
            )),
            insert: s(format!(
                "INSERT INTO {t} (id, data, version, created_at, last_access, expires_at, \
                 absolute_deadline) VALUES (?1, ?2, 1, ?3, ?3, ?4, ?5) \
                 ON CONFLICT (id) DO NOTHING"
            )),
            update: s(format!(
                "UPDATE {t} SET data = {data}, version = version + 1, \
                 last_access = max(last_access, ?4), \
                 expires_at = max(expires_at, min(?4 + ?5, absolute_deadline)) \
                 WHERE id = ?1 AND expires_at > ?4 \
                 RETURNING version, expires_at",
                data = rebuilt(t, "?2", "?3")
            )),
            touch: s(format!(
                "UPDATE {t} SET last_access = max(last_access, ?2), \
                 expires_at = max(expires_at, min(?2 + ?3, absolute_deadline)) \
                 WHERE id = ?1 AND expires_at > ?2 \
                 RETURNING version, expires_at"
            )),
            cycle_copy: s(format!(
                "INSERT INTO {t} (id, data, version, created_at, last_access, expires_at, \
                 absolute_deadline) \
                 SELECT ?1, {data}, version + 1, created_at, max(last_access, ?5), \
                 max(expires_at, min(?5 + ?6, absolute_deadline)), absolute_deadline \
                 FROM {t} WHERE id = ?2 AND expires_at > ?5 \
                 RETURNING version, expires_at",
                data = rebuilt(t, "?3", "?4")
            )),
            delete: s(format!("DELETE FROM {t} WHERE id = ?1")),
            delete_version: s(format!("DELETE FROM {t} WHERE id = ?1 AND version = ?2")),
            cleanup: s(format!(
                "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE expires_at <= ?1 \
                 ORDER BY expires_at LIMIT ?2)"
            )),
            check: s(format!("SELECT 1 FROM {t} LIMIT 0")),
        }
    }

    fn data_text(data: Vec<u8>) -> String {
        // Bytes that are not UTF-8 become "", which fails to decode: a corrupt row.
        String::from_utf8(data).unwrap_or_default()
    }

    fn data_bind(data: &SessionData) -> String {
        codec::encode_sqlite(data.iter())
    }

    fn delta_keys(delta: &Delta) -> String {
        codec::touched_keys_json(delta)
    }

    fn delta_set(delta: &Delta) -> String {
        codec::encode_sqlite(delta.set.iter().map(|(k, v)| (&**k, &**v)))
    }

    /// IMMEDIATE: take the write lock now, so the copy and the delete see one state and a
    /// concurrent writer waits (busy timeout) instead of failing on a lock upgrade.
    async fn begin(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        pool.begin_with("BEGIN IMMEDIATE").await
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// True for URLs that open a private in-memory database.
fn is_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// The SQLite store: a pool and the statements.
pub(crate) type SqliteStore = Statements<Sqlite>;

impl SqliteStore {
    /// Builds the pool (lazily). File databases use WAL (readers never wait for the writer) with
    /// `synchronous = NORMAL`; writers wait for the lock up to `statement_timeout`. An in-memory
    /// database lives only as long as a connection, so it gets exactly one that is never reaped.
    pub(crate) fn pool(config: &SqlConfig) -> Result<SqlitePool, ConfigError> {
        let busy = if config.statement_timeout.is_zero() {
            std::time::Duration::from_secs(5)
        } else {
            config.statement_timeout
        };
        let mut opts = SqliteConnectOptions::from_str(&config.url)
            .map_err(|e| crate::config::bad("url", format!("not a usable SQLite URL: {e}")))?
            .busy_timeout(busy)
            .foreign_keys(false);
        let mut pool = SqlitePoolOptions::new()
            .acquire_timeout(config.acquire_timeout)
            .test_before_acquire(config.test_before_acquire);
        if is_memory(&config.url) {
            pool = pool
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        } else {
            opts = opts
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            pool = pool
                .max_connections(config.max_connections)
                .min_connections(config.min_connections)
                .idle_timeout(config.idle_timeout)
                .max_lifetime(config.max_lifetime);
        }
        Ok(pool.connect_lazy_with(opts))
    }

    /// Runs the migrations. SQLite has no advisory lock; two processes creating the same file
    /// at once can make one run fail on the bookkeeping insert, so a failed run is retried (the
    /// DDL is idempotent).
    pub(crate) async fn migrate(pool: &SqlitePool, names: &Names) -> Result<(), SessionError> {
        let migrator = schema::migrator(Driver::Sqlite, names, false);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match migrator.run(pool).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 3 => {
                    tracing::debug!(error = %e, attempt, "SQLite migration failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
                }
                Err(e) => return Err(crate::errors::migrate_error(names, e)),
            }
        }
    }
}
