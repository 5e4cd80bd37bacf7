//! The apps session-sync is measured against, each serving the demo's three benchmark routes
//! (`POST /login`, `GET /profile`, `POST /cart/items`) with the same bodies, validation and
//! JSON answers:
//!
//! * tower-sessions 0.15 with its `MemoryStore`;
//! * tower-sessions 0.14 with `tower-sessions-redis-store` 0.16 (fred pool of 6, the crate's
//!   documented setup);
//! * tower-sessions 0.14 with `tower-sessions-sqlx-store` 0.15 `PostgresStore` (a pool of 10,
//!   the demo SQL backend's default) — the separate `ts-postgres-peer` binary
//!   (`bench/ts-postgres-peer`, its own workspace because the store needs sqlx 0.8), which
//!   includes this module's `ts_app.rs` so it serves the same code (the bodies, validation and
//!   JSON errors are the demo's own, from the `demo-api` crate);
//! * the *floor*: the same routes with no session layer at all (what axum, hyper and JSON cost).
//!
//! Each runs in its own process (`bench peer --kind ...`) so the harness measures them the way
//! it measures the demo node.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::error::{BenchError, Context, Result};
pub use demo_api::{AddItem, ApiError, JsonBody, Login, MAX_QTY};
use demo_api::{valid_item, valid_user};

/// The node id the peer apps report (they are single-node apps).
pub const NODE: u16 = 1;

/// The demo's routes over tower-sessions 0.15 (the newest release; used with its `MemoryStore`).
pub mod ts15 {
    use tower_sessions as ts;
    include!("ts_app.rs");
}

/// The demo's routes over tower-sessions 0.14 (the release its Redis store implements).
pub mod ts14 {
    use tower_sessions_014 as ts;
    include!("ts_app.rs");
}

/// Which peer app to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PeerKind {
    /// The routes with no session layer.
    Floor,
    /// tower-sessions + `MemoryStore`.
    TsMemory,
    /// tower-sessions + `RedisStore` (fred).
    TsRedis,
    /// tower-sessions + `PostgresStore` (sqlx), served by the `ts-postgres-peer` binary.
    TsPostgres,
}

impl PeerKind {
    /// The name on the command line and in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerKind::Floor => "floor",
            PeerKind::TsMemory => "ts-memory",
            PeerKind::TsRedis => "ts-redis",
            PeerKind::TsPostgres => "ts-postgres",
        }
    }
}

/// Where a peer app listens and which services it uses.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The app's listen address.
    pub addr: SocketAddr,
    /// Redis server for `ts-redis`.
    pub redis_url: String,
}

/// `GET /healthz` of every peer app (outside any session layer).
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The floor: the three routes doing everything but sessions (parse, validate, answer JSON).
pub fn floor_router() -> Router {
    async fn login(JsonBody(req): JsonBody<Login>) -> Result<Json<Value>, ApiError> {
        valid_user(&req.user)?;
        Ok(Json(json!({ "user": req.user, "node": NODE })))
    }
    async fn profile() -> Json<Value> {
        Json(json!({ "user": "bench", "node": NODE, "cart_items": 2 }))
    }
    async fn add_item(JsonBody(req): JsonBody<AddItem>) -> Result<Json<Value>, ApiError> {
        valid_item(&req)?;
        let items = std::collections::BTreeMap::from([(req.sku, req.qty)]);
        Ok(Json(
            json!({ "user": "bench", "node": NODE, "items": items }),
        ))
    }
    Router::new()
        .route("/login", post(login))
        .route("/profile", get(profile))
        .route("/cart/items", post(add_item))
        .route("/healthz", get(healthz))
}

/// A tower-sessions 0.14 store wrapper that remembers the ids it created, so the Redis keys of a
/// run can be deleted afterwards (tower-sessions' Redis store has no key prefix to scan for).
/// The cost is one uncontended lock and a 16-byte push per *created* session, next to a Redis
/// round trip.
#[derive(Debug, Clone)]
pub struct Tracking<S> {
    inner: S,
    created: Arc<Mutex<Vec<tower_sessions_014::session::Id>>>,
}

impl<S> Tracking<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Tracking {
            inner,
            created: Arc::default(),
        }
    }

    /// The ids created so far, as the store's keys.
    pub fn created_keys(&self) -> Vec<String> {
        self.created
            .lock()
            .iter()
            .map(ToString::to_string)
            .collect()
    }
}

#[async_trait::async_trait]
impl<S: tower_sessions_014::SessionStore> tower_sessions_014::SessionStore for Tracking<S> {
    async fn create(
        &self,
        record: &mut tower_sessions_014::session::Record,
    ) -> tower_sessions_014::session_store::Result<()> {
        self.inner.create(record).await?;
        self.created.lock().push(record.id);
        Ok(())
    }

    async fn save(
        &self,
        record: &tower_sessions_014::session::Record,
    ) -> tower_sessions_014::session_store::Result<()> {
        self.inner.save(record).await
    }

    async fn load(
        &self,
        id: &tower_sessions_014::session::Id,
    ) -> tower_sessions_014::session_store::Result<Option<tower_sessions_014::session::Record>>
    {
        self.inner.load(id).await
    }

    async fn delete(
        &self,
        id: &tower_sessions_014::session::Id,
    ) -> tower_sessions_014::session_store::Result<()> {
        self.inner.delete(id).await
    }
}

/// Runs one peer app until `shutdown` completes, then releases what it holds (the Redis app
/// deletes every key it created).
pub async fn serve(
    kind: PeerKind,
    config: &PeerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .context(format!(
            "{}: cannot listen on {}",
            kind.as_str(),
            config.addr
        ))?;
    match kind {
        PeerKind::Floor => run(listener, floor_router(), shutdown).await,
        PeerKind::TsMemory => {
            let store = tower_sessions::MemoryStore::default();
            run(listener, ts15::router(store), shutdown).await
        }
        PeerKind::TsRedis => serve_redis(listener, config, shutdown).await,
        PeerKind::TsPostgres => Err(BenchError::msg(
            "ts-postgres is served by the separate `ts-postgres-peer` binary (its store needs sqlx 0.8)",
        )),
    }
}

async fn serve_redis(
    listener: tokio::net::TcpListener,
    config: &PeerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    use tower_sessions_redis_store::fred::prelude::{
        ClientLike, Config as FredConfig, KeysInterface, Pool,
    };
    let fred_config = FredConfig::from_url(&config.redis_url)
        .context(format!("ts-redis: bad Redis URL {}", config.redis_url))?;
    let pool = Pool::new(fred_config, None, None, None, 6).context("ts-redis: Redis pool")?;
    pool.init()
        .await
        .context(format!("ts-redis: cannot connect to {}", config.redis_url))?;
    let store = Tracking::new(tower_sessions_redis_store::RedisStore::new(pool.clone()));
    let served = run(listener, ts14::router(store.clone()), shutdown).await;
    let keys = store.created_keys();
    for chunk in keys.chunks(1000) {
        let deleted: Result<i64, _> = pool.del(chunk.to_vec()).await;
        deleted.context("ts-redis: deleting the run's sessions")?;
    }
    eprintln!(
        "ts-redis: deleted the {} sessions this run created",
        keys.len()
    );
    let _ = pool.quit().await;
    served
}

async fn run(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("server error")
}
