//! Conformance-suite factories and test helpers (feature `testing`).
//!
//! ```no_run
//! use std::sync::Arc;
//! use backend_sql::testing::{PostgresFactory, SqliteFactory};
//! use session_core::testing::run;
//!
//! # async fn suite() -> std::io::Result<()> {
//! run(Arc::new(PostgresFactory::new())).await.assert_passed(); // DATABASE_URL, own schema
//! run(Arc::new(SqliteFactory::new()?)).await.assert_passed(); // temporary directory
//! # Ok(()) }
//! ```

use std::sync::Arc;
#[cfg(feature = "postgres")]
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use session_core::testing::{BackendFactory, Capabilities, Harness, RebuildFn, TimeControl};
#[cfg(feature = "postgres")]
use session_core::testing::{database_url, unique_name};
use session_core::{ExpiryPolicy, KeyRing, SessionBackend, async_trait};

use crate::{SqlBackend, SqlConfig};

/// Settings suited to tests on a shared server: small pools, a cleanup that runs often.
pub fn test_config(url: impl Into<String>) -> SqlConfig {
    SqlConfig {
        max_connections: 3,
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(10),
        cleanup_interval: Duration::from_millis(500),
        ..SqlConfig::new(url)
    }
}

#[cfg(feature = "postgres")]
/// A PostgreSQL schema with a unique name for one test run, dropped (`DROP SCHEMA … CASCADE`)
/// by [`drop_now`](PgTestSchema::drop_now) or, failing that, when the value is dropped (also
/// when a test panics).
#[derive(Debug)]
pub struct PgTestSchema {
    url: String,
    name: String,
    dropped: AtomicBool,
}

#[cfg(feature = "postgres")]
impl PgTestSchema {
    /// A fresh name (`<prefix>_<pid>_<random>`); the schema itself is created by the backend's
    /// migrations (or by [`create`](PgTestSchema::create)).
    pub fn new(url: impl Into<String>, prefix: &str) -> Self {
        PgTestSchema {
            url: url.into(),
            name: unique_name(prefix),
            dropped: AtomicBool::new(false),
        }
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Creates the schema now.
    pub async fn create(&self) -> Result<(), String> {
        create_schema(&self.url, &self.name).await
    }

    /// Drops the schema and everything in it.
    pub async fn drop_now(&self) -> Result<(), String> {
        drop_schema(&self.url, &self.name).await?;
        self.dropped.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// `CREATE SCHEMA IF NOT EXISTS "schema"` on the PostgreSQL at `url`. The name must be a plain
/// identifier (as [`unique_name`] makes them); errors never show the URL's password.
#[cfg(feature = "postgres")]
pub async fn create_schema(url: &str, schema: &str) -> Result<(), String> {
    execute_on_schema(url, schema, "CREATE SCHEMA IF NOT EXISTS \"{}\"").await
}

/// `DROP SCHEMA IF EXISTS "schema" CASCADE` on the PostgreSQL at `url`: the one cleanup every
/// test, benchmark and comparison run uses for the schema it created. The name must be a plain
/// identifier, so no other schema can be named by accident; errors never show the password.
#[cfg(feature = "postgres")]
pub async fn drop_schema(url: &str, schema: &str) -> Result<(), String> {
    execute_on_schema(url, schema, "DROP SCHEMA IF EXISTS \"{}\" CASCADE").await
}

#[cfg(feature = "postgres")]
async fn execute_on_schema(url: &str, schema: &str, template: &str) -> Result<(), String> {
    use sqlx::Connection;
    crate::validate_identifier("schema", schema).map_err(|e| e.to_string())?;
    let sql = template.replace("{}", schema);
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| format!("connecting to {}: {e}", crate::config::redact_url(url)))?;
    let r = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("{sql}: {e}"));
    let _ = conn.close().await;
    r.map(|_| ())
}

#[cfg(feature = "postgres")]
impl Drop for PgTestSchema {
    fn drop(&mut self) {
        if self.dropped.load(Ordering::SeqCst) {
            return;
        }
        // Drop may run inside a runtime (a panicking test): use a thread with its own.
        let url = self.url.clone();
        let name = self.name.clone();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                let schema = PgTestSchema {
                    url,
                    name,
                    dropped: AtomicBool::new(false),
                };
                if let Err(e) = rt.block_on(schema.drop_now()) {
                    eprintln!("could not drop test schema {}: {e}", schema.name);
                }
            }
        });
        let _ = cleanup.join();
    }
}

#[cfg(feature = "postgres")]
/// Builds SQL backends on PostgreSQL for the conformance suite: one schema per factory
/// (dropped at teardown), a fresh table per build, and `nodes` backends (each with its own
/// pool, like separate app nodes) sharing it, signing with the suite's key ring. The rebuild
/// hook connects `nodes` more pools to the same table with another ring. Every deadline is
/// computed from the session clock in the calling task and bound as a parameter, so the
/// expiry checks move that clock ([`TimeControl::Advanced`]).
#[derive(Debug)]
pub struct PostgresFactory {
    schema: PgTestSchema,
    builds: AtomicUsize,
    nodes: usize,
}

#[cfg(feature = "postgres")]
impl Default for PostgresFactory {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "postgres")]
impl PostgresFactory {
    /// A factory on [`database_url()`] with two nodes per build.
    pub fn new() -> Self {
        Self::with_url(database_url())
    }

    /// A factory on `url`.
    pub fn with_url(url: impl Into<String>) -> Self {
        PostgresFactory {
            schema: PgTestSchema::new(url, "sess"),
            builds: AtomicUsize::new(0),
            nodes: 2,
        }
    }

    /// Sets how many backends (pools) share each build's table.
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes.max(1);
        self
    }

    /// The schema this factory works in.
    pub fn schema(&self) -> &PgTestSchema {
        &self.schema
    }
}

#[cfg(feature = "postgres")]
#[async_trait]
impl BackendFactory for PostgresFactory {
    fn name(&self) -> String {
        format!("sql (postgres, {} pools per build)", self.nodes)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::server_side().with_time(TimeControl::Advanced)
    }

    async fn build(&self, policy: ExpiryPolicy, keys: &KeyRing) -> Result<Harness, String> {
        let n = self.builds.fetch_add(1, Ordering::SeqCst);
        let config = test_config(self.schema.url())
            .with_schema(self.schema.name())
            .with_table(format!("s{n}"));
        // The last node reaches PostgreSQL through a proxy the outage check can take down.
        let target = session_core::testing::url_addr(self.schema.url(), 5432)
            .ok_or_else(|| "cannot resolve the database's address from its URL".to_string())?;
        let proxy = Arc::new(
            session_core::testing::TcpProxy::start(target)
                .await
                .map_err(|e| format!("starting the outage proxy: {e}"))?,
        );
        let mut proxied = config.clone();
        proxied.url =
            session_core::testing::with_host_port(&config.url, "127.0.0.1", proxy.addr.port());
        proxied.acquire_timeout = std::time::Duration::from_millis(700);
        let mut harness = build_nodes(
            config.clone(),
            policy,
            keys.clone(),
            self.nodes.saturating_sub(1),
        )
        .await?;
        let last = build_nodes(proxied, policy, keys.clone(), 1).await?;
        harness.nodes.extend(last.nodes);
        // The rebuilt nodes connect directly: only the outage check needs the proxy.
        harness.rebuild = Some(rebuild_hook(config, policy, self.nodes));
        Ok(harness.with_outage(proxy.outage()))
    }

    async fn teardown(&self) {
        if let Err(e) = self.schema.drop_now().await {
            eprintln!("{e}");
        }
    }
}

#[cfg(feature = "sqlite")]
/// Builds SQL backends on SQLite for the conformance suite: a database file per build in a
/// temporary directory (removed with the factory), `nodes` pools on each file, signing with the
/// suite's key ring; the rebuild hook opens `nodes` more pools on the file with another ring.
/// As on PostgreSQL, the expiry checks move the session clock ([`TimeControl::Advanced`]):
/// tokio time cannot be paused, the driver runs every statement on a thread of its own and a
/// paused runtime would auto-advance while it works.
#[derive(Debug)]
pub struct SqliteFactory {
    dir: tempfile::TempDir,
    builds: AtomicUsize,
    nodes: usize,
}

#[cfg(feature = "sqlite")]
impl SqliteFactory {
    /// A factory in a fresh temporary directory, two nodes per build.
    pub fn new() -> std::io::Result<Self> {
        Ok(SqliteFactory {
            dir: tempfile::tempdir()?,
            builds: AtomicUsize::new(0),
            nodes: 2,
        })
    }

    /// Sets how many backends (pools) share each build's file.
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes.max(1);
        self
    }

    /// A `sqlite://` URL for a file called `name` in the factory's directory.
    pub fn url_for(&self, name: &str) -> String {
        format!("sqlite://{}", self.dir.path().join(name).display())
    }
}

#[cfg(feature = "sqlite")]
#[async_trait]
impl BackendFactory for SqliteFactory {
    fn name(&self) -> String {
        format!("sql (sqlite, {} pools per build)", self.nodes)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::server_side()
            .with_time(TimeControl::Advanced)
            .without_outage(
                "SQLite is a file opened by the serving process: there is no server to lose \
                 contact with",
            )
    }

    async fn build(&self, policy: ExpiryPolicy, keys: &KeyRing) -> Result<Harness, String> {
        let n = self.builds.fetch_add(1, Ordering::SeqCst);
        let config = test_config(self.url_for(&format!("b{n}.db")));
        build_nodes(config, policy, keys.clone(), self.nodes).await
    }
}

/// `nodes` backends (pools) on `config`'s table with `keys`, rebuildable with another ring.
async fn build_nodes(
    config: SqlConfig,
    policy: ExpiryPolicy,
    keys: KeyRing,
    nodes: usize,
) -> Result<Harness, String> {
    let mut built: Vec<Arc<dyn SessionBackend>> = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let b = SqlBackend::connect(config.clone(), policy, &keys)
            .await
            .map_err(|e| format!("connecting node {i}: {e}"))?;
        built.push(Arc::new(b));
    }
    Ok(Harness::of(built).with_rebuild(rebuild_hook(config, policy, nodes)))
}

fn rebuild_hook(config: SqlConfig, policy: ExpiryPolicy, nodes: usize) -> RebuildFn {
    Arc::new(move |keys| Box::pin(build_nodes(config.clone(), policy, keys, nodes)))
}
