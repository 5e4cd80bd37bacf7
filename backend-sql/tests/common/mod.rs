//! Helpers shared by the integration tests: a database per test (a PostgreSQL schema or a
//! SQLite file), raw SQL, metrics, and a TCP proxy that can take "the database" down.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use backend_sql::testing::{PgTestSchema, test_config};
use backend_sql::{SqlBackend, SqlConfig, SqlPool};
use session_core::testing::database_url;
use session_core::{
    Commit, Counters, ExpiryPolicy, KeyRing, Session, SessionBackend, SessionError,
};
use sqlx::AssertSqlSafe;

/// Where a test's tables live.
pub enum Db {
    Pg(PgTestSchema),
    Sqlite(tempfile::TempDir),
}

impl Db {
    pub fn pg() -> Db {
        Db::Pg(PgTestSchema::new(database_url(), "sqlt"))
    }

    pub fn sqlite() -> Db {
        Db::Sqlite(tempfile::tempdir().unwrap())
    }

    pub fn name(&self) -> &'static str {
        match self {
            Db::Pg(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }

    /// A test config for `table` (on SQLite, one file per table).
    pub fn config(&self, table: &str) -> SqlConfig {
        match self {
            Db::Pg(s) => test_config(s.url()).with_schema(s.name()).with_table(table),
            Db::Sqlite(dir) => test_config(format!(
                "sqlite://{}",
                dir.path().join(format!("{table}.db")).display()
            ))
            .with_table(table),
        }
    }

    pub async fn finish(self) {
        if let Db::Pg(s) = self {
            s.drop_now().await.unwrap();
        }
    }
}

pub fn policy(idle_ms: u64, absolute_ms: u64) -> ExpiryPolicy {
    ExpiryPolicy::new(
        std::time::Duration::from_millis(idle_ms),
        std::time::Duration::from_millis(absolute_ms),
    )
    .unwrap()
}

pub async fn backend(config: SqlConfig, policy: ExpiryPolicy, keys: &KeyRing) -> Arc<SqlBackend> {
    Arc::new(SqlBackend::connect(config, policy, keys).await.unwrap())
}

/// Runs one statement (no binds) on the backend's pool; rows affected.
pub async fn exec(b: &SqlBackend, sql: &str) -> u64 {
    match b.pool() {
        SqlPool::Postgres(p) => sqlx::query(AssertSqlSafe(sql.to_owned()))
            .execute(&p)
            .await
            .unwrap()
            .rows_affected(),
        SqlPool::Sqlite(p) => sqlx::query(AssertSqlSafe(sql.to_owned()))
            .execute(&p)
            .await
            .unwrap()
            .rows_affected(),
        _ => unreachable!(),
    }
}

/// One integer from a query.
pub async fn scalar(b: &SqlBackend, sql: &str) -> i64 {
    match b.pool() {
        SqlPool::Postgres(p) => sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.to_owned()))
            .fetch_one(&p)
            .await
            .unwrap(),
        SqlPool::Sqlite(p) => sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.to_owned()))
            .fetch_one(&p)
            .await
            .unwrap(),
        _ => unreachable!(),
    }
}

pub async fn rows(b: &SqlBackend) -> i64 {
    scalar(b, &format!("SELECT count(*) FROM {}", b.table())).await
}

/// A backend-specific metric's value.
pub fn metric(c: &Counters, name: &str, label: Option<&str>) -> f64 {
    c.extra
        .iter()
        .find(|m| m.name == name && label.is_none_or(|l| m.labels.iter().any(|(_, v)| v == l)))
        .unwrap_or_else(|| panic!("no metric {name} {label:?}"))
        .value
}

/// Creates a session holding `pairs` through the Session handle; its token.
pub async fn create(node: &Arc<SqlBackend>, pairs: &[(&str, serde_json::Value)]) -> String {
    let node: Arc<dyn SessionBackend> = node.clone();
    let s = Session::new(node, None);
    for (k, v) in pairs {
        s.insert(k, v).unwrap();
    }
    match s.commit().await.unwrap() {
        Commit::Issue { token, .. } => token,
        other => panic!("expected a token, got {other:?}"),
    }
}

/// Every error must be the typed "database unavailable" one.
pub fn assert_unavailable<T: std::fmt::Debug>(r: Result<T, SessionError>) {
    match r {
        Err(SessionError::Unavailable { backend: "sql", .. }) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// PostgreSQL's address from `DATABASE_URL`.
pub fn pg_addr() -> SocketAddr {
    let opts = sqlx::postgres::PgConnectOptions::from_str(&database_url()).unwrap();
    let host = match opts.get_host() {
        "localhost" => "127.0.0.1",
        h => h,
    };
    format!("{host}:{}", opts.get_port()).parse().unwrap()
}
