//! The statements the backend sends, written once for both databases: [`Statements`] (a pool
//! and the prepared [`Sql`] texts) runs load, insert, update, touch, cycle, delete,
//! delete_version, cleanup_batch and check_table, binding the same values in the same order on
//! PostgreSQL and SQLite and counting the cycle's statements in [`Calls`].
//!
//! What genuinely differs per database is a [`Dialect`], implemented in `pg.rs` and
//! `sqlite.rs` next to the rest of that database's code (pool and connect options, migrations):
//! the SQL texts, how `data` is bound and read back, how a delta's keys and set entries are
//! bound, how the cycle's transaction begins, and how affected rows are counted.
//!
//! Why generic over [`sqlx::Database`] rather than a `macro_rules!` that stamps out two copies:
//! since sqlx 0.9 the binding and executing traits carry no argument lifetimes, so the bounds
//! fit in one `where` clause; the shared code is then type-checked once, compiler errors point
//! at real lines, and each difference is a named, documented trait item instead of a macro
//! fragment pasted into a body.

use std::future::Future;
use std::sync::Arc;

use session_core::{Delta, SessionData, SessionId};
use sqlx::{
    AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool,
    Transaction, Type,
};

use crate::schema::Names;
use crate::store::{Calls, CycleError, Row, Stamp, Written, id_bytes};

/// SQL texts, built once from the validated table name (each database writes its own).
pub(crate) struct Sql {
    /// Reads a live row. Binds: id, now.
    pub(crate) load: Arc<str>,
    /// Inserts a row unless the id exists. Binds: id, data, now, idle deadline, absolute
    /// deadline.
    pub(crate) insert: Arc<str>,
    /// Applies a delta to a live row. Binds: id, keys, set entries, now, idle window; returns
    /// version and expiry.
    pub(crate) update: Arc<str>,
    /// Moves a live row's idle deadline. Binds: id, now, idle window; returns version and
    /// expiry.
    pub(crate) touch: Arc<str>,
    /// Copies a live row to a new id with a delta applied. Binds: new id, old id, keys, set
    /// entries, now, idle window; returns version and expiry.
    pub(crate) cycle_copy: Arc<str>,
    /// Deletes a row. Binds: id.
    pub(crate) delete: Arc<str>,
    /// Deletes a row if it has a version. Binds: id, version.
    pub(crate) delete_version: Arc<str>,
    /// Deletes one batch of expired rows. Binds: now, batch size.
    pub(crate) cleanup: Arc<str>,
    /// Only checks that the table exists and is readable. Binds nothing.
    pub(crate) check: Arc<str>,
}

fn q(sql: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
    AssertSqlSafe(sql.clone())
}

/// What one database does differently inside the shared [`Statements`].
pub(crate) trait Dialect: Database {
    /// The `data` column as `load` selects it.
    type Data: for<'r> Decode<'r, Self> + Type<Self> + Send + Unpin;
    /// The bind that names the keys of a delta (the keys bind of `update` and `cycle_copy`).
    type Keys: for<'q> Encode<'q, Self> + Type<Self> + Send;

    /// The SQL texts for the (validated, quoted) table name `t`.
    fn sql(t: &str) -> Sql;
    /// The loaded `data` column as the text [`Store::decode`](crate::store::Store::decode)
    /// reads.
    fn data_text(data: Self::Data) -> String;
    /// A whole session as `insert` binds it.
    fn data_bind(data: &SessionData) -> String;
    /// The keys of a delta as `update` and `cycle_copy` bind them.
    fn delta_keys(delta: &Delta) -> Self::Keys;
    /// The set entries of a delta as `update` and `cycle_copy` bind them.
    fn delta_set(delta: &Delta) -> String;
    /// Begins the id cycle's transaction.
    fn begin(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send;
    /// How many rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

/// A store: a pool and the statements, for one [`Dialect`].
pub(crate) struct Statements<D: Database> {
    /// The connection pool.
    pub(crate) pool: Pool<D>,
    sql: Sql,
}

impl<D: Dialect> Statements<D> {
    /// The store over `pool` for the table `names` names.
    pub(crate) fn from_pool(pool: Pool<D>, names: &Names) -> Statements<D> {
        Statements {
            pool,
            sql: D::sql(&names.table),
        }
    }
}

impl<D> Statements<D>
where
    D: Dialect,
    D::Arguments: IntoArguments<D>,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    usize: ColumnIndex<D::Row>,
    for<'a> &'a [u8]: Encode<'a, D> + Type<D>,
    i64: for<'q> Encode<'q, D> + for<'r> Decode<'r, D> + Type<D>,
    String: for<'q> Encode<'q, D> + Type<D>,
{
    /// Reads the live row of `id` (`None` if missing or expired).
    pub(crate) async fn load(&self, id: &SessionId, now: i64) -> Result<Option<Row>, sqlx::Error> {
        let row: Option<(D::Data, i64, i64, i64, i64, i64)> = sqlx::query_as(q(&self.sql.load))
            .bind(id_bytes(id))
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(
            |(data, version, created_at, last_access, expires_at, absolute_deadline)| Row {
                data: D::data_text(data),
                version,
                created_at,
                last_access,
                expires_at,
                absolute_deadline,
            },
        ))
    }

    /// Inserts a new row; `false` if the id already exists.
    pub(crate) async fn insert(
        &self,
        id: &SessionId,
        data: &SessionData,
        now: i64,
        (idle, absolute): (i64, i64),
    ) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(q(&self.sql.insert))
            .bind(id_bytes(id))
            .bind(D::data_bind(data))
            .bind(now)
            .bind(idle)
            .bind(absolute)
            .execute(&self.pool)
            .await?;
        Ok(D::rows_affected(&r) == 1)
    }

    /// Applies a delta to the live row (`None` if missing or expired).
    pub(crate) async fn update(
        &self,
        id: &SessionId,
        delta: &Delta,
        stamp: Stamp,
    ) -> Result<Option<Written>, sqlx::Error> {
        let row: Option<(i64, i64)> = sqlx::query_as(q(&self.sql.update))
            .bind(id_bytes(id))
            .bind(D::delta_keys(delta))
            .bind(D::delta_set(delta))
            .bind(stamp.now)
            .bind(stamp.idle_ms)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(version, expires_at)| Written {
            version,
            expires_at,
        }))
    }

    /// Moves the idle deadline of the live row (`None` if missing or expired).
    pub(crate) async fn touch(
        &self,
        id: &SessionId,
        stamp: Stamp,
    ) -> Result<Option<Written>, sqlx::Error> {
        let row: Option<(i64, i64)> = sqlx::query_as(q(&self.sql.touch))
            .bind(id_bytes(id))
            .bind(stamp.now)
            .bind(stamp.idle_ms)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(version, expires_at)| Written {
            version,
            expires_at,
        }))
    }

    /// Copies the live row of `old` to `new` with the delta applied and deletes `old`, in one
    /// transaction (`None`, rolled back, if `old` is missing or expired). Counts its own
    /// statements: begin, copy, delete, commit.
    pub(crate) async fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        delta: &Delta,
        stamp: Stamp,
        calls: Calls<'_>,
    ) -> Result<Option<Written>, CycleError> {
        calls.one();
        let mut tx = D::begin(&self.pool).await?;
        calls.one();
        let copied: Option<(i64, i64)> = sqlx::query_as(q(&self.sql.cycle_copy))
            .bind(id_bytes(new))
            .bind(id_bytes(old))
            .bind(D::delta_keys(delta))
            .bind(D::delta_set(delta))
            .bind(stamp.now)
            .bind(stamp.idle_ms)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((version, expires_at)) = copied else {
            // Dropping the transaction rolls it back.
            return Ok(None);
        };
        calls.one();
        sqlx::query(q(&self.sql.delete))
            .bind(id_bytes(old))
            .execute(&mut *tx)
            .await?;
        calls.one();
        tx.commit().await.map_err(|error| CycleError {
            at_commit: true,
            error,
        })?;
        Ok(Some(Written {
            version,
            expires_at,
        }))
    }

    /// Deletes the row of `id`; the number of rows deleted.
    pub(crate) async fn delete(&self, id: &SessionId) -> Result<u64, sqlx::Error> {
        let r = sqlx::query(q(&self.sql.delete))
            .bind(id_bytes(id))
            .execute(&self.pool)
            .await?;
        Ok(D::rows_affected(&r))
    }

    /// Deletes the row of `id` only if it still has `version`; the number of rows deleted.
    pub(crate) async fn delete_version(
        &self,
        id: &SessionId,
        version: i64,
    ) -> Result<u64, sqlx::Error> {
        let r = sqlx::query(q(&self.sql.delete_version))
            .bind(id_bytes(id))
            .bind(version)
            .execute(&self.pool)
            .await?;
        Ok(D::rows_affected(&r))
    }

    /// Deletes at most `limit` rows expired at `now`; how many it deleted.
    pub(crate) async fn cleanup_batch(&self, now: i64, limit: i64) -> Result<u64, sqlx::Error> {
        let r = sqlx::query(q(&self.sql.cleanup))
            .bind(now)
            .bind(limit)
            .execute(&self.pool)
            .await?;
        Ok(D::rows_affected(&r))
    }

    /// Checks that the table exists and is readable.
    pub(crate) async fn check_table(&self) -> Result<(), sqlx::Error> {
        sqlx::query(q(&self.sql.check)).execute(&self.pool).await?;
        Ok(())
    }
}
