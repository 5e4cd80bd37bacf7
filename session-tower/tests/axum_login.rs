//! axum-login over tower-sessions over our backends: instant copy on a 3-node cluster with every
//! request sent to the next node in turn (login, a protected route, cart writes, concurrent
//! writes to different keys on different nodes, logout), and the same flow over SQL (SQLite)
//! and Redis, each behind two app instances sharing the store. The app is the example's,
//! unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

#[path = "../examples/login_app/mod.rs"]
mod login_app;

use std::sync::Arc;
use std::time::Duration;

use backend_instantcopy::testing::InProcessCluster;
use backend_instantcopy::{Ack, Replication};
use serde_json::json;
use session_core::ExpiryPolicy;
use session_tower::SyncStore;

struct Client {
    http: reqwest::Client,
    urls: Vec<String>,
    next: usize,
    cookie: Option<String>,
}

impl Client {
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, String) {
        let url = format!("{}{path}", self.urls[self.next % self.urls.len()]);
        self.next += 1;
        self.send_to(method, url, body).await
    }

    async fn send_to(
        &mut self,
        method: &str,
        url: String,
        body: Option<serde_json::Value>,
    ) -> (u16, String) {
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        if let Some(c) = res.headers().get("set-cookie") {
            let pair = c.to_str().unwrap().split(';').next().unwrap().to_owned();
            self.cookie = (!pair.ends_with('=')).then_some(pair);
        }
        let status = res.status().as_u16();
        (status, res.text().await.unwrap())
    }
}

async fn serve(c: &Arc<InProcessCluster>) -> Vec<String> {
    let mut urls = Vec::new();
    for i in 0..c.len() {
        let app = login_app::router(SyncStore::new(c.node(i), c.keys()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!("http://{}", listener.local_addr().unwrap()));
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    urls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_login_on_three_nodes_round_robin() {
    for (replication, ack) in [
        (Replication::Backups(1), Ack::One),
        (Replication::All, Ack::All),
    ] {
        let c = InProcessCluster::start(3, replication, ack, ExpiryPolicy::default())
            .await
            .unwrap();
        let urls = serve(&c).await;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut alice = Client {
            http: http.clone(),
            urls: urls.clone(),
            next: 0,
            cookie: None,
        };
        // Not logged in: the protected route refuses, on every node.
        for _ in 0..3 {
            assert_eq!(alice.send("GET", "/me", None).await.0, 401);
        }
        let (s, _) = alice
            .send(
                "POST",
                "/login",
                Some(json!({"name": "alice", "password": "nope"})),
            )
            .await;
        assert_eq!(s, 401);
        let (s, _) = alice
            .send(
                "POST",
                "/login",
                Some(json!({"name": "alice", "password": "wonderland"})),
            )
            .await;
        assert_eq!(s, 200, "{replication:?}");
        assert!(
            alice.cookie.is_some(),
            "login set the tower-sessions cookie"
        );
        // Logged in everywhere, and cart writes on each node are seen on the next.
        for i in 0..6 {
            let (s, body) = alice.send("GET", "/me", None).await;
            assert_eq!(
                (s, body.as_str()),
                (200, "alice"),
                "{replication:?} request {i}"
            );
            assert_eq!(alice.send("POST", "/cart/book", None).await.0, 200);
            let (s, body) = alice.send("GET", "/cart/book", None).await;
            assert_eq!(
                (s, body),
                (200, (i + 1).to_string()),
                "{replication:?} request {i}"
            );
        }
        // Two requests at once on two nodes, each changing its own key: both survive.
        let cookie = alice.cookie.clone();
        let mut a = Client {
            http: http.clone(),
            urls: vec![urls[0].clone()],
            next: 0,
            cookie: cookie.clone(),
        };
        let mut b = Client {
            http: http.clone(),
            urls: vec![urls[1].clone()],
            next: 0,
            cookie,
        };
        let (ra, rb) = tokio::join!(
            a.send("POST", "/cart/pen", None),
            b.send("POST", "/cart/ink", None)
        );
        assert_eq!((ra.0, rb.0), (200, 200));
        c.settle().await;
        for sku in ["pen", "ink", "book"] {
            let (s, body) = alice.send("GET", &format!("/cart/{sku}"), None).await;
            assert_eq!(s, 200);
            let want = if sku == "book" { "6" } else { "1" };
            assert_eq!(
                body, want,
                "{replication:?}: {sku} after the concurrent writes"
            );
        }
        // Logout on one node logs out everywhere, even with the old cookie kept.
        let old = alice.cookie.clone();
        assert_eq!(alice.send("POST", "/logout", None).await.0, 204);
        alice.cookie = old;
        c.settle().await;
        for _ in 0..3 {
            assert_eq!(
                alice.send("GET", "/me", None).await.0,
                401,
                "{replication:?}"
            );
        }
    }
}
/// A forged or unknown id (tower-sessions' ids are not signed by us) finds nothing on any
/// node, whatever owner its first bytes name, and costs no call outside the membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_ids_find_no_session() {
    use session_tower::SessionStore;
    let c = InProcessCluster::start(
        3,
        Replication::Backups(1),
        Ack::One,
        ExpiryPolicy::default(),
    )
    .await
    .unwrap();
    for prefix in [0u16, 1, 2, 3, 0xffff] {
        let mut bytes = *session_core::SessionId::random().as_bytes();
        bytes[..2].copy_from_slice(&prefix.to_be_bytes());
        let id = session_tower::tower_id(&session_core::SessionId::from_bytes(bytes));
        for i in 0..3 {
            let store = SyncStore::new(c.node(i), c.keys());
            assert!(
                store.load(&id).await.unwrap().is_none(),
                "prefix {prefix} node {i}"
            );
            // Deleting what does not exist is fine; saving it is refused (nothing resurrected).
            store.delete(&id).await.unwrap();
            let record = tower_sessions::session::Record {
                id,
                data: Default::default(),
                expiry_date: time::OffsetDateTime::now_utc(),
            };
            assert!(store.save(&record).await.is_err());
        }
    }
    assert_eq!(
        c.running().iter().map(|n| n.sessions_held()).sum::<usize>(),
        0
    );
    // Every such miss is counted: five ids, each loaded on three nodes (and again by save and
    // delete).
    let misses: u64 = c
        .running()
        .iter()
        .map(|n| n.shared().metrics.bare_id_misses.get())
        .sum();
    assert!(misses >= 15, "bare-id misses counted: {misses}");
}

/// The flow over two app instances sharing one server-side store.
async fn shared_store_flow(
    backend: Arc<dyn session_core::SessionBackend>,
    keys: &session_core::KeyRing,
) {
    let mut urls = Vec::new();
    for _ in 0..2 {
        let app = login_app::router(SyncStore::new(backend.clone(), keys));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!("http://{}", listener.local_addr().unwrap()));
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut u = Client {
        http,
        urls,
        next: 0,
        cookie: None,
    };
    assert_eq!(u.send("GET", "/me", None).await.0, 401);
    let (s, _) = u
        .send(
            "POST",
            "/login",
            Some(json!({"name": "bob", "password": "builder"})),
        )
        .await;
    assert_eq!(s, 200, "{}", backend.scheme());
    for i in 0..4 {
        assert_eq!(u.send("GET", "/me", None).await, (200, "bob".to_owned()));
        assert_eq!(u.send("POST", "/cart/nail", None).await.0, 200);
        assert_eq!(
            u.send("GET", "/cart/nail", None).await,
            (200, (i + 1).to_string())
        );
    }
    // A request that reads and writes its session loads it once: the save reuses that load.
    let loads = backend.counters().loads;
    assert_eq!(u.send("POST", "/cart/nail", None).await.0, 200);
    assert_eq!(backend.counters().loads - loads, 1, "{}", backend.scheme());
    assert_eq!(u.send("POST", "/logout", None).await.0, 204);
    assert_eq!(
        u.send("GET", "/me", None).await.0,
        401,
        "{}",
        backend.scheme()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_login_over_sql() {
    let dir = tempfile::tempdir().unwrap();
    let keys = session_core::KeyRing::generate();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let backend = backend_sql::SqlBackend::connect(
        backend_sql::testing::test_config(url),
        ExpiryPolicy::default(),
        &keys,
    )
    .await
    .unwrap();
    shared_store_flow(Arc::new(backend), &keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_login_over_redis() {
    let factory = backend_redis::testing::RedisFactory::single(session_core::testing::redis_url());
    let backend = factory
        .backend(ExpiryPolicy::default())
        .await
        .expect("Redis at REDIS_URL (./scripts/test starts it)");
    shared_store_flow(Arc::new(backend), factory.keys()).await;
    backend_redis::testing::delete_prefix(factory.config())
        .await
        .unwrap();
}
