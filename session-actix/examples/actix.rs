//! actix-web with actix-session over instant copy: three cluster nodes in one process, each
//! serving the same app, so a login on one is seen by the others with no database and no
//! cache server. `cargo run -p session-actix --example actix`, then:
//!
//! ```sh
//! curl -c jar -b jar -X POST localhost:3100/login/carol
//! curl -c jar -b jar localhost:3101/me               # carol, on another node
//! curl -c jar -b jar -X POST localhost:3102/cart/book
//! curl -c jar -b jar localhost:3100/cart/book        # 1
//! curl -c jar -b jar -X POST localhost:3101/logout
//! curl -c jar -b jar localhost:3102/me               # 401 everywhere
//! ```
//!
//! `APP_PORT` moves the three app ports (default 3100), `CLUSTER_PORT` the cluster ports
//! (default 7201). The only line that is not stock actix-session is the one building the store.

mod cart_app;

use std::sync::Arc;

use actix_session::SessionMiddleware;
use actix_web::cookie::Key;
use actix_web::{App, HttpServer};
use backend_instantcopy::{Ack, Config, InstantCopyNode, NodeId, Replication};
use session_actix::SyncStore;
use session_core::{ExpiryPolicy, KeyRing, SessionBackend};

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = |name: &str, default: u16| -> Result<u16, std::num::ParseIntError> {
        std::env::var(name).map_or(Ok(default), |v| v.parse())
    };
    let (app_port, cluster_port) = (port("APP_PORT", 3100)?, port("CLUSTER_PORT", 7201)?);
    // One secret for the cluster, one cookie key for every app node (from the environment or a
    // file in production).
    let keys = KeyRing::generate();
    let cookie_key = Key::generate();
    let mut nodes = Vec::new();
    let mut servers = Vec::new();
    for i in 0..3u16 {
        let mut config = Config::default();
        config.node_id = NodeId(i + 1);
        config.cluster_addr = format!("127.0.0.1:{}", cluster_port + i).parse()?;
        config.seeds = vec![format!("127.0.0.1:{cluster_port}")];
        config.replication = Replication::Backups(1);
        config.ack = Ack::One;
        let node = InstantCopyNode::start(config, ExpiryPolicy::default(), &keys).await?;
        let backend: Arc<dyn SessionBackend> = Arc::new(node.clone());
        let key = cookie_key.clone();
        let addr = format!("127.0.0.1:{}", app_port + i);
        let server = HttpServer::new(move || {
            let store = SyncStore::new(backend.clone());
            let sessions = SessionMiddleware::builder(store, key.clone())
                .cookie_secure(false) // plain http on loopback; keep Secure in production
                .build();
            App::new().wrap(sessions).configure(cart_app::routes)
        })
        .workers(1)
        .bind(&addr)?
        .run();
        println!("node {} serving http://{addr}", i + 1);
        nodes.push(node);
        servers.push(server);
    }
    // Each server runs once spawned, until Ctrl-C stops it; then the nodes hand off.
    let running: Vec<_> = servers.into_iter().map(actix_web::rt::spawn).collect();
    for r in running {
        r.await??;
    }
    for n in &nodes {
        n.shutdown().await;
    }
    Ok(())
}
