//! PostgreSQL: sessions as JSONB, each delta applied by one `UPDATE` with JSONB operators.

use std::str::FromStr;
use std::sync::Arc;

use session_core::{Delta, SessionData, SessionError};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgQueryResult};
use sqlx::{Postgres, Transaction};

use crate::codec;
use crate::config::{ConfigError, Driver, SqlConfig};
use crate::errors::{self, migrate_error};
use crate::schema::{self, Names};
use crate::statements::{Dialect, Sql, Statements};

/// PostgreSQL's differences: JSONB operators in the SQL, `data::text` read as a string, the
/// removed keys bound as `text[]`.
impl Dialect for Postgres {
    type Data = String;
    type Keys = Vec<String>;

    fn sql(t: &str) -> Sql {
        let s = |x: String| Arc::<str>::from(x);
        Sql {
            load: s(format!(
                "SELECT data::text, version, created_at, last_access, expires_at, \
                 absolute_deadline FROM {t} WHERE id = $1 AND expires_at > $2"
            )),
            insert: s(format!(
                "INSERT INTO {t} (id, data, version, created_at, last_access, expires_at, \
                 absolute_deadline) VALUES ($1, $2::jsonb, 1, $3, $3, $4, $5) \
                 ON CONFLICT (id) DO NOTHING"
            )),
            // The whole delta in one statement: removed keys deleted, set keys merged (the
            // right side of || wins), version bumped, deadline moved (never backwards, never
            // past the absolute deadline). Rows that expired are not touched: the caller gets
            // Gone.
            update: s(format!(
                "UPDATE {t} SET data = (data - $2::text[]) || $3::jsonb, \
                 version = version + 1, \
                 last_access = GREATEST(last_access, $4), \
                 expires_at = GREATEST(expires_at, LEAST($4 + $5, absolute_deadline)) \
                 WHERE id = $1 AND expires_at > $4 \
                 RETURNING version, expires_at"
            )),
            touch: s(format!(
                "UPDATE {t} SET last_access = GREATEST(last_access, $2), \
                 expires_at = GREATEST(expires_at, LEAST($2 + $3, absolute_deadline)) \
                 WHERE id = $1 AND expires_at > $2 \
                 RETURNING version, expires_at"
            )),
            // FOR UPDATE: a save racing the cycle waits, and then either lands before the copy
            // (and is copied) or finds the old row gone (Gone); it is never silently lost.
            cycle_copy: s(format!(
                "INSERT INTO {t} (id, data, version, created_at, last_access, expires_at, \
                 absolute_deadline) \
                 SELECT $1, (data - $3::text[]) || $4::jsonb, version + 1, created_at, \
                 GREATEST(last_access, $5), \
                 GREATEST(expires_at, LEAST($5 + $6, absolute_deadline)), absolute_deadline \
                 FROM {t} WHERE id = $2 AND expires_at > $5 FOR UPDATE \
                 RETURNING version, expires_at"
            )),
            delete: s(format!("DELETE FROM {t} WHERE id = $1")),
            delete_version: s(format!("DELETE FROM {t} WHERE id = $1 AND version = $2")),
            // SKIP LOCKED: several nodes cleaning at once take disjoint batches instead of
            // queueing on each other's row locks.
            cleanup: s(format!(
                "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE expires_at <= $1 \
                 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
            )),
            check: s(format!("SELECT 1 FROM {t} LIMIT 0")),
        }
    }

    fn data_text(data: String) -> String {
        data
    }

    fn data_bind(data: &SessionData) -> String {
        data.to_json_object()
    }

    fn delta_keys(delta: &Delta) -> Vec<String> {
        codec::removed_keys(delta)
    }

    fn delta_set(delta: &Delta) -> String {
        codec::set_object_pg(delta)
    }

    async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        pool.begin().await
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// The PostgreSQL store: a pool and the statements.
pub(crate) type PgStore = Statements<Postgres>;

/// Connect options from the config: URL, application name, statement timeout.
pub(crate) fn connect_options(config: &SqlConfig) -> Result<PgConnectOptions, ConfigError> {
    let mut opts = PgConnectOptions::from_str(&config.url)
        .map_err(|e| crate::config::bad("url", format!("not a usable PostgreSQL URL: {e}")))?
        .application_name(&config.application_name);
    if !config.statement_timeout.is_zero() {
        let ms = config.statement_timeout.as_millis().max(1);
        // A transaction left open (a crashed request in the middle of an id cycle) must not
        // hold row locks for long either.
        opts = opts.options([
            ("statement_timeout", ms.to_string()),
            ("idle_in_transaction_session_timeout", (ms * 2).to_string()),
        ]);
    }
    if !config.synchronous_commit {
        opts = opts.options([("synchronous_commit", "off")]);
    }
    Ok(opts)
}

impl PgStore {
    /// Builds the pool (lazily: no connection yet).
    pub(crate) fn pool(config: &SqlConfig) -> Result<PgPool, ConfigError> {
        let opts = connect_options(config)?;
        Ok(PgPoolOptions::new()
            .max_connections(config.max_connections)
            .min_connections(config.min_connections)
            .acquire_timeout(config.acquire_timeout)
            .idle_timeout(config.idle_timeout)
            .max_lifetime(config.max_lifetime)
            .test_before_acquire(config.test_before_acquire)
            .connect_lazy_with(opts))
    }

    /// Runs the migrations on a connection taken from the pool and closed afterwards (never
    /// returned to it), so the migrator's session-level advisory lock is released whatever
    /// happened, and the statement timeout is lifted for the DDL only.
    pub(crate) async fn migrate(pool: &PgPool, names: &Names) -> Result<(), SessionError> {
        let context = "connecting to PostgreSQL to migrate the session table";
        let mut conn = pool
            .acquire()
            .await
            .map_err(|e| errors::to_session_error(context, e))?;
        conn.close_on_drop();
        let work = async {
            sqlx::query("SET statement_timeout = 0")
                .execute(&mut *conn)
                .await
                .map_err(|e| errors::to_session_error(context, e))?;
            let schema = names.schema.as_deref().unwrap_or("public");
            // Only ask for CREATE SCHEMA when the schema is missing: the statement needs the
            // CREATE privilege on the database even when the schema exists.
            let exists: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM pg_namespace WHERE nspname = $1")
                    .bind(schema)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(|e| errors::to_session_error("looking up the session schema", e))?;
            // `run_direct` rather than `run`: `run` takes an `Acquire` whose higher-ranked
            // lifetime makes this future not provably `Send` (the workaround sqlx documents).
            schema::migrator(Driver::Postgres, names, exists.is_none())
                .run_direct(None, &mut *conn, false)
                .await
                .map_err(|e| migrate_error(names, e))
        };
        match tokio::time::timeout(crate::MIGRATION_TIMEOUT, work).await {
            Ok(r) => r,
            Err(_) => Err(errors::timed_out(
                "migrating the session table (another node may hold the migration lock)",
                crate::MIGRATION_TIMEOUT,
            )),
        }
        // `conn` is closed on drop here: the server session ends and its advisory lock with it.
    }
}
