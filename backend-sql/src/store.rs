//! The driver-independent face of the two stores: one method per statement the backend runs.

use std::sync::atomic::{AtomicU64, Ordering};

use session_core::{CoreCounters, Delta, SessionData, SessionId};

use crate::codec::CorruptData;

/// A stored row as read by `load` (times in ms since the epoch).
#[derive(Debug)]
pub(crate) struct Row {
    pub data: String,
    pub version: i64,
    pub created_at: i64,
    pub last_access: i64,
    pub expires_at: i64,
    pub absolute_deadline: i64,
}

/// What a write left in the row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    pub version: i64,
    pub expires_at: i64,
}

/// The clock reading and idle window one write uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    pub now: i64,
    pub idle_ms: i64,
}

/// Counts statements sent for one kind of operation (and the backend-wide D).
#[derive(Clone, Copy)]
pub(crate) struct Calls<'a> {
    pub core: &'a CoreCounters,
    pub op: &'a AtomicU64,
}

impl Calls<'_> {
    /// Records one statement sent to the database.
    pub(crate) fn one(&self) {
        self.core.db(1);
        self.op.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why an id cycle failed; a failure at `COMMIT` is not retried (it may have committed).
#[derive(Debug)]
pub(crate) struct CycleError {
    pub at_commit: bool,
    pub error: sqlx::Error,
}

impl From<sqlx::Error> for CycleError {
    fn from(error: sqlx::Error) -> Self {
        CycleError {
            at_commit: false,
            error,
        }
    }
}

pub(crate) fn id_bytes(id: &SessionId) -> &[u8] {
    id.as_bytes()
}

/// One of the stores this build supports.
pub(crate) enum Store {
    #[cfg(feature = "postgres")]
    Pg(crate::pg::PgStore),
    #[cfg(feature = "sqlite")]
    Sqlite(crate::sqlite::SqliteStore),
}

macro_rules! dispatch {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            #[cfg(feature = "postgres")]
            Store::Pg($s) => $e,
            #[cfg(feature = "sqlite")]
            Store::Sqlite($s) => $e,
        }
    };
}

impl Store {
    pub(crate) async fn load(
        &self,
        id: &SessionId,
        now: i64,
        calls: Calls<'_>,
    ) -> Result<Option<Row>, sqlx::Error> {
        calls.one();
        dispatch!(self, s => s.load(id, now).await)
    }

    /// Inserts a new row; `false` if the id already exists (nothing written).
    pub(crate) async fn insert(
        &self,
        id: &SessionId,
        data: &SessionData,
        now: i64,
        deadlines: (i64, i64),
        calls: Calls<'_>,
    ) -> Result<bool, sqlx::Error> {
        calls.one();
        dispatch!(self, s => s.insert(id, data, now, deadlines).await)
    }

    /// Applies a non-empty delta in one statement; `None` if the row is missing or expired.
    pub(crate) async fn update(
        &self,
        id: &SessionId,
        delta: &Delta,
        stamp: Stamp,
        calls: Calls<'_>,
    ) -> Result<Option<Written>, sqlx::Error> {
        calls.one();
        dispatch!(self, s => s.update(id, delta, stamp).await)
    }

    /// Moves the idle deadline only; `None` if the row is missing or expired.
    pub(crate) async fn touch(
        &self,
        id: &SessionId,
        stamp: Stamp,
        calls: Calls<'_>,
    ) -> Result<Option<Written>, sqlx::Error> {
        calls.one();
        dispatch!(self, s => s.touch(id, stamp).await)
    }

    /// Copies the row to `new` with the delta applied, then deletes `old`, in one transaction.
    pub(crate) async fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        delta: &Delta,
        stamp: Stamp,
        calls: Calls<'_>,
    ) -> Result<Option<Written>, CycleError> {
        dispatch!(self, s => s.cycle(old, new, delta, stamp, calls).await)
    }

    /// Deletes a row; the number of rows deleted.
    pub(crate) async fn delete(
        &self,
        id: &SessionId,
        calls: Calls<'_>,
    ) -> Result<u64, sqlx::Error> {
        calls.one();
        dispatch!(self, s => s.delete(id).await)
    }

    /// Deletes a row only if it still has `version` (used for corrupt rows).
    pub(crate) async fn delete_version(
        &self,
        id: &SessionId,
        version: i64,
        calls: Calls<'_>,
    ) -> Result<u64, sqlx::Error> {
        calls.one();
        dispatch!(self, s => s.delete_version(id, version).await)
    }

    /// Deletes at most `limit` rows that expired at or before `now`; how many it deleted.
    pub(crate) async fn cleanup_batch(
        &self,
        now: i64,
        limit: i64,
        calls: Calls<'_>,
    ) -> Result<u64, sqlx::Error> {
        calls.one();
        dispatch!(self, s => s.cleanup_batch(now, limit).await)
    }

    /// Checks that the table exists and is readable (used when migrations are off).
    pub(crate) async fn check_table(&self) -> Result<(), sqlx::Error> {
        dispatch!(self, s => s.check_table().await)
    }

    pub(crate) fn decode(&self, text: &str) -> Result<SessionData, CorruptData> {
        match self {
            #[cfg(feature = "postgres")]
            Store::Pg(_) => crate::codec::decode_pg(text),
            #[cfg(feature = "sqlite")]
            Store::Sqlite(_) => crate::codec::decode_sqlite(text),
        }
    }

    pub(crate) fn pool_state(&self) -> (u32, usize) {
        dispatch!(self, s => (s.pool.size(), s.pool.num_idle()))
    }

    pub(crate) async fn close(&self) {
        dispatch!(self, s => s.pool.close().await)
    }

    pub(crate) fn spawn_close(&self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        dispatch!(self, s => {
            let pool = s.pool.clone();
            rt.spawn(async move { pool.close().await });
        })
    }
}
