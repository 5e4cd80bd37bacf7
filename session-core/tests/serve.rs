//! The app-port bounds of `session_core::serve`, under attack: slowloris connections (a partial
//! request head, never finished) are closed after the header timeout while normal requests on
//! the same listener keep succeeding; the connection cap holds; a stalled body gets a 408; a
//! connection with no I/O is closed after the idle timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use session_core::serve::{ServeLimits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(limits: ServeLimits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/echo", post(|body: String| async move { body }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, app, limits, async move {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// Opens a connection and sends the start of a request head that never ends.
async fn slow_client(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaa")
        .await
        .unwrap();
    s
}

/// Waits until the server closed `s` (EOF or reset), returning when, or `None` after `limit`.
async fn closed_within(mut s: TcpStream, limit: Duration) -> Option<Instant> {
    let mut buf = [0u8; 1024];
    let r = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {} // hyper may answer 408 before closing
            }
        }
    })
    .await;
    r.ok()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_after_the_header_timeout_and_others_are_served() {
    let header = Duration::from_secs(2);
    let mut limits = ServeLimits::default();
    limits.header_read_timeout = header;
    let (addr, _stop) = start(limits).await;
    let opened = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..300 {
        slow.push(slow_client(addr).await);
    }
    // Legitimate traffic beside the attack, while it holds its 300 connections.
    let http = client();
    for i in 0..20 {
        let res = http.get(format!("http://{addr}/")).send().await.unwrap();
        assert_eq!(res.status(), 200, "request {i} during the attack");
        assert_eq!(res.text().await.unwrap(), "ok");
    }
    let waits: Vec<_> = slow
        .into_iter()
        .map(|s| tokio::spawn(closed_within(s, Duration::from_secs(10))))
        .collect();
    let mut latest = Duration::ZERO;
    for w in waits {
        let at = w
            .await
            .unwrap()
            .expect("a slowloris connection stayed open for 10 s");
        latest = latest.max(at - opened);
    }
    assert!(
        latest >= header - Duration::from_millis(200),
        "closed before the header timeout: {latest:?}"
    );
    assert!(
        latest <= header + Duration::from_millis(2500),
        "all 300 closed only after {latest:?}"
    );
    let res = http.get(format!("http://{addr}/")).send().await.unwrap();
    assert_eq!(res.status(), 200, "served after the attack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_and_frees_up() {
    let header = Duration::from_secs(1);
    let mut limits = ServeLimits::default();
    limits.header_read_timeout = header;
    limits.max_connections = 20;
    let (addr, _stop) = start(limits).await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        slow.push(slow_client(addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // At the cap: the next connection is not served until a slot frees (the header timeout
    // closes the slow ones), and then it is.
    let started = Instant::now();
    let res = client()
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "served at once although 20 of 20 connections were taken ({waited:?})"
    );
    assert!(waited <= header + Duration::from_secs(2), "{waited:?}");
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_a_silent_connection_is_closed() {
    let mut limits = ServeLimits::default();
    limits.request_timeout = Duration::from_secs(1);
    limits.header_read_timeout = Duration::from_secs(10);
    limits.idle_timeout = Duration::from_millis(1500);
    let (addr, _stop) = start(limits).await;
    // A body announced as 100 bytes, of which 5 arrive.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhello")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("no answer to a stalled body")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // Nothing sent after the connection opened: closed after the idle timeout (shorter than
    // the header timeout here).
    let silent = TcpStream::connect(addr).await.unwrap();
    let opened = Instant::now();
    let at = closed_within(silent, Duration::from_secs(6))
        .await
        .expect("a silent connection stayed open");
    let took = at - opened;
    assert!(
        took >= Duration::from_millis(1300) && took <= Duration::from_secs(4),
        "{took:?}"
    );
    let res = client()
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
