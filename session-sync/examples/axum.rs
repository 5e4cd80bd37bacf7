//! A runnable axum app over any backend: `cargo run -p session-sync --example axum`, then
//! `curl -c jar -b jar localhost:3000/` a few times (the count is kept in the session).
//!
//! `BACKEND` picks the backend (each needs its feature; `--features full` enables all):
//!
//! * `instantcopy` (default): one node; `CLUSTER_ADDR` (default `127.0.0.1:7001`), `NODE_ID`,
//!   `SEEDS` (comma-separated cluster addresses of other nodes) make it part of a cluster;
//! * `cookie`: the session sealed in the cookie, nothing to run;
//! * `sql`: `DATABASE_URL` (default `sqlite://sessions-example.db?mode=rwc`, a local file);
//! * `redis`: `REDIS_URL` (default `redis://127.0.0.1:6379`).
//!
//! `APP_ADDR` is where the app listens (default `127.0.0.1:3000`). `SESSION_SECRET` is the key
//! (a random one when unset: give every node of a cluster the same one).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use session_sync::{
    ExpiryPolicy, KeyRing, Secret, Session, SessionBackend, SessionConfig, SessionError,
    SessionLayer,
};

async fn visits(session: Session) -> Result<String, SessionError> {
    let n = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", &n)?;
    Ok(format!("visit {n}\n"))
}

async fn logout(session: Session) -> &'static str {
    session.destroy();
    "bye\n"
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The backend `BACKEND` names, built with `keys`.
#[cfg_attr(
    not(any(
        feature = "instantcopy",
        feature = "cookie",
        feature = "sql",
        feature = "redis"
    )),
    allow(unused_variables)
)]
async fn backend(keys: &KeyRing) -> Result<Arc<dyn SessionBackend>, Box<dyn std::error::Error>> {
    let policy = ExpiryPolicy::default();
    let kind = env_or("BACKEND", "instantcopy");
    match kind.as_str() {
        #[cfg(feature = "instantcopy")]
        "instantcopy" => {
            use session_sync::instantcopy::{Config, InstantCopyNode, NodeId};
            let mut config = Config::default();
            config.node_id = NodeId(env_or("NODE_ID", "1").parse()?);
            config.cluster_addr = env_or("CLUSTER_ADDR", "127.0.0.1:7001").parse()?;
            if let Ok(seeds) = std::env::var("SEEDS") {
                config.seeds = seeds.split(',').map(|s| s.trim().to_owned()).collect();
            }
            Ok(Arc::new(
                InstantCopyNode::start(config, policy, keys).await?,
            ))
        }
        #[cfg(feature = "cookie")]
        "cookie" => {
            use session_sync::cookie::{CookieBackend, CookieConfig};
            Ok(Arc::new(CookieBackend::new(
                &CookieConfig::default(),
                policy,
                keys,
            )?))
        }
        #[cfg(feature = "sql")]
        "sql" => {
            use session_sync::sql::{SqlBackend, SqlConfig};
            let url = env_or("DATABASE_URL", "sqlite://sessions-example.db?mode=rwc");
            Ok(Arc::new(
                SqlBackend::connect(SqlConfig::new(url), policy, keys).await?,
            ))
        }
        #[cfg(feature = "redis")]
        "redis" => {
            use session_sync::redis::{RedisBackend, RedisConfig};
            let mut config = RedisConfig::default();
            config.url = Some(env_or("REDIS_URL", "redis://127.0.0.1:6379"));
            Ok(Arc::new(RedisBackend::connect(config, policy, keys).await?))
        }
        other => Err(format!(
            "BACKEND={other:?} is not built in: use instantcopy, cookie, sql or redis, with its \
             feature enabled (--features full enables every backend)"
        )
        .into()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app_addr: SocketAddr = env_or("APP_ADDR", "127.0.0.1:3000").parse()?;
    let keys = match std::env::var("SESSION_SECRET") {
        Ok(s) => KeyRing::new([Secret::from_encoded(&s)?])?,
        Err(_) => KeyRing::generate(),
    };
    let backend = backend(&keys).await?;
    // Plain http on loopback for the example; keep `Secure` cookies in production.
    let layer =
        SessionLayer::with_config(backend.clone(), SessionConfig::default().with_secure(false));
    let app = Router::new()
        .route("/", get(visits))
        .route("/logout", post(logout))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind(app_addr).await?;
    println!(
        "{} sessions; listening on http://{app_addr}",
        backend.scheme()
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // Instant copy hands this node's sessions to the others before it exits.
    backend.shutdown().await;
    Ok(())
}
