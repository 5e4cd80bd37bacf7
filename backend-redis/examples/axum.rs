//! An axum app with sessions in Redis, one hash per session with its TTL kept by Redis:
//! `REDIS_URL` for one server, or `REDIS_CLUSTER_NODES` (comma-separated) for Redis Cluster.
//!
//! ```sh
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p backend-redis --example axum-redis
//! curl -c jar -b jar -X POST localhost:3000/hit; curl -c jar -b jar -X POST localhost:3000/logout
//! ```

use std::sync::Arc;

use axum::Router;
use axum::routing::post;
use backend_redis::{RedisBackend, RedisConfig};
use session_core::{
    ExpiryPolicy, KeyRing, Secret, Session, SessionBackend, SessionConfig, SessionError,
    SessionLayer,
};

async fn hit(session: Session) -> Result<String, SessionError> {
    // One HINCRBY-like delta: concurrent hits on other nodes are not lost.
    let n: u64 = session.get("hits").await?.unwrap_or(0) + 1;
    session.insert("hits", &n)?;
    Ok(format!("{n} hits\n"))
}

async fn logout(session: Session) -> &'static str {
    session.destroy(); // DEL of the hash: the token is dead on every node at once
    "bye\n"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = match std::env::var("REDIS_CLUSTER_NODES") {
        Ok(nodes) => RedisConfig::cluster(nodes.split(',').map(str::trim)),
        Err(_) => RedisConfig::single(
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        ),
    }
    .with_key_prefix("example:");
    let keys = match std::env::var("SESSION_SECRET") {
        Ok(s) => KeyRing::new([Secret::from_encoded(&s)?])?,
        Err(_) => KeyRing::generate(),
    };
    let backend: Arc<dyn SessionBackend> =
        Arc::new(RedisBackend::connect(config, ExpiryPolicy::default(), &keys).await?);
    let app = Router::new()
        .route("/hit", post(hit))
        .route("/logout", post(logout))
        .layer(SessionLayer::with_config(
            backend,
            SessionConfig::default().with_secure(false), // plain http on loopback
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("Redis sessions on http://127.0.0.1:3000");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
