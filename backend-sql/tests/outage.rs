//! The database going away: a closed port, an outage behind a proxy (typed `Unavailable`, no
//! cookie for a session that was not saved, recovery when it returns), and PostgreSQL killing
//! the pool's connections (`pg_terminate_backend`) before and during a run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use backend_sql::testing::{PgTestSchema, test_config};
use backend_sql::{SqlBackend, SqlConfig};
use common::{Db, assert_unavailable, backend, create, metric, pg_addr};
use serde_json::json;
use session_core::testing::{TcpProxy, with_host_port};
use session_core::testing::{database_url, unique_name};
use session_core::{
    Delta, ExpiryPolicy, KeyRing, RawJson, Session, SessionBackend, SessionConfig, SessionError,
    SessionLayer,
};
use sqlx::Connection;
use tower::ServiceExt;

fn one_key(k: &str, v: serde_json::Value) -> Delta {
    let mut d = Delta::default();
    d.set(k, RawJson::from_value(&v).unwrap());
    d
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
    // dropped here: nothing listens on the port any more
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable_at_connect() {
    let port = closed_port();
    for migrate in [true, false] {
        let mut config = SqlConfig::new(with_host_port(&database_url(), "127.0.0.1", port));
        config.acquire_timeout = Duration::from_millis(300);
        config.migrate = migrate;
        let r = SqlBackend::connect(config, ExpiryPolicy::default(), &KeyRing::generate()).await;
        assert_unavailable(r);
    }
}

async fn app(backend: Arc<SqlBackend>) -> Router {
    let backend: Arc<dyn SessionBackend> = backend;
    Router::new()
        .route(
            "/add",
            post(|s: Session| async move {
                s.insert("cart", &["book"])?;
                Ok::<_, SessionError>("added")
            }),
        )
        .layer(SessionLayer::with_config(
            backend,
            SessionConfig::default().with_secure(false),
        ))
}

async fn add_to_cart(app: &Router, cookie: Option<&str>) -> (http::StatusCode, Option<String>) {
    let mut req = http::Request::post("/add");
    if let Some(c) = cookie {
        req = req.header(http::header::COOKIE, format!("sid={c}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let cookie = resp
        .headers()
        .get(http::header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status(), cookie)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_unavailable_sets_no_cookie_and_the_pool_recovers() {
    let db = Db::pg();
    let proxy = TcpProxy::start(pg_addr()).await.unwrap();
    let mut config = db.config("outage");
    config.url = with_host_port(&config.url, "127.0.0.1", proxy.addr.port());
    config.acquire_timeout = Duration::from_millis(500);
    config.statement_timeout = Duration::from_secs(2);
    let b = backend(config, ExpiryPolicy::default(), &KeyRing::generate()).await;
    let token = create(&b, &[("k", json!(1))]).await;
    let loaded = b.load(&token).await.unwrap().unwrap();
    let app = app(b.clone()).await;

    proxy.down().await;
    assert_unavailable(b.load(&token).await);
    assert_unavailable(b.save(&loaded, &one_key("k", json!(2))).await);
    assert_unavailable(b.save(&loaded, &Delta::default()).await);
    assert_unavailable(b.cycle_id(&loaded, &Delta::default()).await);
    assert_unavailable(b.destroy(&loaded).await);
    assert_unavailable(b.create(Default::default()).await);
    assert_unavailable(b.cleanup_expired().await);
    // A new session that could not be saved never sets a cookie.
    let s = Session::new(b.clone() as Arc<dyn SessionBackend>, None);
    s.insert("cart", &["book"]).unwrap();
    assert_unavailable(s.commit().await);
    let (status, cookie) = add_to_cart(&app, None).await;
    assert!(status.is_server_error(), "{status}");
    assert_eq!(cookie, None, "a cookie for a session that was never stored");
    assert!(metric(&b.counters(), "unavailable_errors", None) >= 9.0);

    proxy.up().await.unwrap();
    let l = b
        .load(&token)
        .await
        .unwrap()
        .expect("session lost in the outage");
    assert_eq!(l.record.data.get_as::<u64>("k").unwrap(), Some(1));
    b.save(&l, &one_key("k", json!(3))).await.unwrap();
    let (status, cookie) = add_to_cart(&app, None).await;
    assert!(status.is_success(), "{status}");
    assert!(cookie.unwrap().starts_with("sid="));
    drop(app);
    b.shutdown().await;
    proxy.down().await;
    db.finish().await;
}

/// Terminates every server session of `application_name`; how many.
async fn terminate(application_name: &str) -> i64 {
    let mut c = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1) t",
    )
    .bind(application_name)
    .fetch_one(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    n
}

async fn killed_connections_recover(test_before_acquire: bool) {
    let schema = PgTestSchema::new(database_url(), "sqlk");
    let app_name = unique_name("sqlkill");
    let mut config = test_config(schema.url())
        .with_schema(schema.name())
        .with_table("killed");
    config.application_name = app_name.clone();
    config.test_before_acquire = test_before_acquire;
    config.min_connections = 2;
    let b = backend(config, ExpiryPolicy::default(), &KeyRing::generate()).await;
    let token = create(&b, &[("k", json!(0))]).await;
    // Open a few connections.
    let loads: Vec<_> = (0..3)
        .map(|_| {
            let (b, t) = (b.clone(), token.clone());
            tokio::spawn(async move { b.load(&t).await.unwrap().unwrap() })
        })
        .collect();
    for l in loads {
        l.await.unwrap();
    }
    assert!(
        terminate(&app_name).await >= 1,
        "no pooled connection to kill"
    );
    // The very next requests succeed: dead connections are replaced (retry or ping).
    let l = b
        .load(&token)
        .await
        .unwrap()
        .expect("session missing after reconnect");
    b.save(&l, &one_key("k", json!(1))).await.unwrap();
    let t2 = create(&b, &[("k", json!(2))]).await;
    assert!(b.load(&t2).await.unwrap().is_some());
    if !test_before_acquire {
        assert!(
            metric(&b.counters(), "retries", None) >= 1.0,
            "the lost connection was not retried"
        );
    }

    // Kill connections repeatedly while four tasks keep working: failures, if any, are typed
    // Unavailable errors, and everything works once the killing stops.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (b, t, stop, ok) = (b.clone(), token.clone(), stop.clone(), ok.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let r = match b.load(&t).await {
                        Ok(Some(l)) => b
                            .save(&l, &one_key(&format!("w{w}"), json!(i)))
                            .await
                            .map(|_| ()),
                        Ok(None) => panic!("session vanished"),
                        Err(e) => Err(e),
                    };
                    match r {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(SessionError::Unavailable { .. }) => {}
                        Err(e) => panic!("unexpected error while connections were killed: {e}"),
                    }
                }
            })
        })
        .collect();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        terminate(&app_name).await;
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    assert!(ok.load(Ordering::SeqCst) > 0);
    let l = b.load(&token).await.unwrap().unwrap();
    for w in 0..4 {
        assert!(
            l.record.data.contains_key(&format!("w{w}")),
            "worker {w} never wrote"
        );
    }
    b.shutdown().await;
    schema.drop_now().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_are_retried_on_fresh_ones() {
    killed_connections_recover(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_are_replaced_when_tested_before_use() {
    killed_connections_recover(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_works_with_concurrent_requests() {
    let mut config = SqlConfig::new("sqlite::memory:");
    config.max_connections = 8; // ignored: an in-memory database gets exactly one connection
    let b = backend(config, ExpiryPolicy::default(), &KeyRing::generate()).await;
    let token = create(&b, &[("base", json!(0))]).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (b, t) = (b.clone(), token.clone());
            tokio::spawn(async move {
                let l = b.load(&t).await.unwrap().unwrap();
                b.save(&l, &one_key(&format!("k{i}"), json!(i)))
                    .await
                    .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let l = b.load(&token).await.unwrap().unwrap();
    assert_eq!(l.record.data.len(), 9);
}
