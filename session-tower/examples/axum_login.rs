//! axum-login, over tower-sessions, over instant copy: three cluster nodes in one process, each
//! serving the same app, so a login on one is seen by the others with no database and no
//! cache server. `cargo run -p session-tower --example axum_login`, then:
//!
//! ```sh
//! curl -c jar -b jar --json '{"name":"alice","password":"wonderland"}' localhost:3000/login
//! curl -c jar -b jar localhost:3001/me              # alice, on another node
//! curl -c jar -b jar -X POST localhost:3002/cart/book
//! curl -c jar -b jar localhost:3000/cart/book       # 1
//! curl -c jar -b jar -X POST localhost:3001/logout
//! curl -c jar -b jar localhost:3002/me              # 401 everywhere
//! ```
//!
//! `APP_PORT` moves the three app ports (default 3000), `CLUSTER_PORT` the cluster ports
//! (default 7101). The only line that is not stock axum-login is the one building the store.

mod login_app;

use session_core::{ExpiryPolicy, KeyRing};
use session_tower::SyncStore;

use std::sync::Arc;

use backend_instantcopy::{Ack, Config, InstantCopyNode, NodeId, Replication};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = |name: &str, default: u16| -> Result<u16, std::num::ParseIntError> {
        std::env::var(name).map_or(Ok(default), |v| v.parse())
    };
    let (app_port, cluster_port) = (port("APP_PORT", 3000)?, port("CLUSTER_PORT", 7101)?);
    // One secret for the whole cluster (from the environment or a file in production).
    let keys = KeyRing::generate();
    let mut nodes = Vec::new();
    for i in 0..3u16 {
        let mut config = Config::default();
        config.node_id = NodeId(i + 1);
        config.cluster_addr = format!("127.0.0.1:{}", cluster_port + i).parse()?;
        config.seeds = vec![format!("127.0.0.1:{cluster_port}")];
        config.replication = Replication::Backups(1);
        config.ack = Ack::One;
        nodes.push(InstantCopyNode::start(config, ExpiryPolicy::default(), &keys).await?);
    }
    let mut servers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let store = SyncStore::new(Arc::new(node.clone()), &keys);
        let app = login_app::router(store);
        let addr = format!("127.0.0.1:{}", app_port + i as u16);
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("node {} serving http://{addr}", i + 1);
        servers.push(tokio::spawn(
            async move { axum::serve(listener, app).await },
        ));
    }
    tokio::signal::ctrl_c().await?;
    for s in &servers {
        s.abort();
    }
    for n in &nodes {
        session_core::SessionBackend::shutdown(n).await;
    }
    Ok(())
}
