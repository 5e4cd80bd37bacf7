//! Smoke tests of the harness: the peer apps serve the demo's routes with real sessions, the
//! Redis peer removes exactly the keys it created, and a peer started as a process is measured
//! by wrk with zero errors. Nothing here asserts a speed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use bench::client::{self, UserSession};
use bench::peers::{self, PeerConfig, PeerKind};
use bench::targets::{Binaries, Cleanup, Launcher, Services, Target};
use bench::wrk::{self, Route, WrkConfig};

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Serves `kind` in this process until the returned sender is dropped or fired.
async fn serve(
    kind: PeerKind,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let addr = free_addr();
    let config = PeerConfig {
        addr,
        redis_url: session_core::testing::redis_url(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        peers::serve(kind, &config, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    let url = format!("http://{addr}");
    let client = client::http_client().unwrap();
    for _ in 0..200 {
        if client
            .get(format!("{url}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return (url, tx, task);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{} did not start", kind.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_sessions_memory_app_keeps_a_real_session() {
    let (url, stop, task) = serve(PeerKind::TsMemory).await;
    let client = client::http_client().unwrap();
    let mut s = UserSession::default();

    let (o, _) = s.profile(&client, &url).await.unwrap();
    assert_eq!(o.status, 401, "no session yet");
    assert_eq!(s.login(&client, &url, "alice").await.unwrap().status, 200);
    assert!(!s.token.is_empty(), "login sets the sid cookie");
    let first = s.token.clone();
    assert_eq!(s.add(&client, &url, "book", 2).await.unwrap().status, 200);
    assert_eq!(s.add(&client, &url, "pen", 1).await.unwrap().status, 200);
    let (o, body) = s.profile(&client, &url).await.unwrap();
    assert_eq!(o.status, 200);
    let body = body.unwrap();
    assert_eq!(body["user"], "alice");
    assert_eq!(body["cart_items"], 2);
    assert_eq!(s.token, first, "the id only changes at login");

    // Same validation as the demo: bad bodies are JSON 400s.
    assert_eq!(
        s.add(&client, &url, "no spaces", 1).await.unwrap().status,
        400
    );
    assert_eq!(s.add(&client, &url, "book", 0).await.unwrap().status, 400);
    let res = client
        .post(format!("{url}/login"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("invalid JSON body"));

    // A second login from the same client cycles the id (fixation defence).
    assert_eq!(s.login(&client, &url, "alice").await.unwrap().status, 200);
    assert_ne!(s.token, first);
    let mut stale = UserSession { token: first };
    assert_eq!(stale.profile(&client, &url).await.unwrap().0.status, 401);

    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floor_answers_without_sessions() {
    let (url, stop, task) = serve(PeerKind::Floor).await;
    let client = client::http_client().unwrap();
    let tokens = client::setup_sessions(&client, &url, 3, 2, false)
        .await
        .unwrap();
    assert!(
        tokens.iter().all(String::is_empty),
        "the floor sets no cookie"
    );
    let mut s = UserSession::default();
    let (o, body) = s.profile(&client, &url).await.unwrap();
    assert_eq!(o.status, 200);
    assert_eq!(body.unwrap()["cart_items"], 2);
    assert_eq!(s.add(&client, &url, "x y", 1).await.unwrap().status, 400);
    // Demanding a token from an app that issues none is an error, not a silent pass.
    assert!(
        client::setup_sessions(&client, &url, 1, 1, true)
            .await
            .is_err()
    );
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_sessions_redis_app_deletes_exactly_its_keys() {
    let (url, stop, task) = serve(PeerKind::TsRedis).await;
    let client = client::http_client().unwrap();
    let tokens = client::setup_sessions(&client, &url, 5, 5, true)
        .await
        .unwrap();
    let redis = redis::Client::open(session_core::testing::redis_url()).unwrap();
    let mut con = redis.get_multiplexed_async_connection().await.unwrap();
    let exists = |con: &mut redis::aio::MultiplexedConnection, keys: Vec<String>| {
        let mut con = con.clone();
        async move {
            redis::cmd("EXISTS")
                .arg(keys)
                .query_async::<u64>(&mut con)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        exists(&mut con, tokens.clone()).await,
        5,
        "one key per session"
    );
    // A key that is not the app's survives its clean-up.
    let bystander = format!(
        "{}:bystander",
        session_core::testing::unique_name("bench_smoke")
    );
    redis::cmd("SET")
        .arg(&bystander)
        .arg("1")
        .arg("EX")
        .arg(60)
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    stop.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(
        exists(&mut con, tokens).await,
        0,
        "the app deleted its sessions"
    );
    assert_eq!(exists(&mut con, vec![bystander.clone()]).await, 1);
    redis::cmd("DEL")
        .arg(&bystander)
        .query_async::<()>(&mut con)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_process_is_started_measured_and_stopped() {
    let bench = std::path::PathBuf::from(env!("CARGO_BIN_EXE_bench"));
    let launcher = Launcher {
        binaries: Binaries {
            bench: bench.clone(),
            // Not started by this test.
            demo: bench.clone(),
            ts_postgres: bench,
        },
        services: Services::from_env(),
        pin: None,
        wrapper: vec![],
        log_dir: std::env::temp_dir().join(format!("bench-smoke-{}", std::process::id())),
        demo_env: vec![],
    };
    let mut cleanup = Cleanup::default();
    let mut server = launcher
        .start(Target::Peer(PeerKind::TsMemory), &mut cleanup)
        .await
        .unwrap();
    assert!(server.is_running());
    let client = client::http_client().unwrap();
    let tokens = client::setup_sessions(&client, &server.url, 20, 4, true)
        .await
        .unwrap();
    assert_eq!(tokens.len(), 20);
    // wrk is required (`scripts/test` checks for it): a missing wrk fails here, never skips.
    let config = WrkConfig {
        threads: 1,
        connections: 4,
        duration: Duration::from_secs(1),
        pin: None,
    };
    for route in Route::ALL {
        let r = wrk::run(&server.url, route, &tokens, &config, &launcher.log_dir)
            .await
            .unwrap();
        assert!(r.requests > 0, "{route:?}: {r:?}");
        assert_eq!(r.errors(), 0, "{route:?}: {r:?}");
    }
    // After the cart run every session holds its cart line.
    let mut s = UserSession {
        token: tokens[0].clone(),
    };
    let (o, body) = s.profile(&client, &server.url).await.unwrap();
    assert_eq!(o.status, 200);
    assert!(body.unwrap()["cart_items"].as_u64().unwrap() >= 2);
    let pid = server.pid().unwrap();
    server.stop(Duration::from_secs(10)).await;
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|s| s.contains("zombie")),
        "the process is gone"
    );
    assert!(cleanup.run(&launcher.services).await.is_empty());
}
