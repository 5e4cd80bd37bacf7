//! An axum app on one instant-copy node; start more with other ports and `SEEDS` pointing at
//! the first, and a session created on one is read on any.
//!
//! ```sh
//! CLUSTER_SECRET=$(openssl rand -hex 32)
//! CLUSTER_SECRET=$CLUSTER_SECRET cargo run -p backend-instantcopy --example axum-instantcopy
//! CLUSTER_SECRET=$CLUSTER_SECRET NODE_ID=2 APP_ADDR=127.0.0.1:3001 CLUSTER_ADDR=127.0.0.1:7002 \
//!   SEEDS=127.0.0.1:7001 cargo run -p backend-instantcopy --example axum-instantcopy
//! curl -c jar -b jar localhost:3000/n; curl -c jar -b jar localhost:3001/n   # 1, then 2
//! ```

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use backend_instantcopy::{Config, InstantCopyNode, NodeId};
use session_core::{
    ExpiryPolicy, KeyRing, Secret, Session, SessionBackend, SessionConfig, SessionError,
    SessionLayer,
};

async fn next(session: Session) -> Result<String, SessionError> {
    let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
    session.insert("n", &n)?;
    Ok(format!("{n}\n"))
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys = match std::env::var("CLUSTER_SECRET") {
        Ok(s) => KeyRing::new([Secret::from_encoded(&s)?])?,
        Err(_) => KeyRing::generate(),
    };
    let mut config = Config::default();
    config.node_id = NodeId(env("NODE_ID", "1").parse()?);
    config.cluster_addr = env("CLUSTER_ADDR", "127.0.0.1:7001").parse()?;
    config.seeds = std::env::var("SEEDS")
        .map(|s| s.split(',').map(|x| x.trim().to_owned()).collect())
        .unwrap_or_default();
    let node = InstantCopyNode::start(config, ExpiryPolicy::default(), &keys).await?;
    let app = Router::new()
        .route("/n", get(next))
        .layer(SessionLayer::with_config(
            Arc::new(node.clone()) as Arc<dyn SessionBackend>,
            SessionConfig::default().with_secure(false), // plain http on loopback
        ));
    let addr = env("APP_ADDR", "127.0.0.1:3000");
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("instant-copy node {} on http://{addr}", node.node_id());
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    node.shutdown().await; // hands its sessions to the others first
    Ok(())
}
