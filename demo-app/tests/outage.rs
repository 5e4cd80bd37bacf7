//! The demo with its store going away while it serves (Redis, PostgreSQL, each behind a TCP
//! proxy that is cut while requests are in flight): every request that cannot reach the store
//! gets `503`, `Retry-After` and a short JSON body, never a 500 and never a cookie for a
//! session that was not saved; once the store is back, the same users carry on.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::time::Duration;

use demo_app::config::{DemoConfig, load_keys_with};
use serde_json::{Value, json};
use session_core::testing::{
    TcpProxy, database_url, redis_url, unique_name, url_addr, with_host_port,
};

/// Serves the demo app for `config` on a free loopback port; returns its base URL.
async fn serve(config: &DemoConfig) -> String {
    let keys = load_keys_with(config, |_| None).unwrap();
    let backend = demo_app::backends::build(config, &keys).await.unwrap();
    let (router, _state) = demo_app::app::router(config, backend);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(session_core::serve::serve(
        listener,
        router,
        config.http.limits(),
        std::future::pending(),
    ));
    url
}

struct User {
    http: reqwest::Client,
    token: Option<String>,
}

impl User {
    async fn send(
        &mut self,
        method: &str,
        url: &str,
        body: Option<Value>,
    ) -> (u16, Option<String>, Value, bool) {
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(t) = &self.token {
            req = req.header("cookie", format!("sid={t}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let retry = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let mut cookie = false;
        for c in res.headers().get_all("set-cookie") {
            cookie = true;
            let c = c.to_str().unwrap();
            let value = c.split(';').next().unwrap().split_once('=').unwrap().1;
            self.token = (!c.contains("Max-Age=0") && !value.is_empty()).then(|| value.to_owned());
        }
        let json = res.json().await.unwrap_or(Value::Null);
        (status, retry, json, cookie)
    }
}

async fn outage_run(config: DemoConfig, proxy: &TcpProxy) {
    let url = serve(&config).await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut users = Vec::new();
    for i in 0..8 {
        let mut u = User {
            http: http.clone(),
            token: None,
        };
        let (s, ..) = u
            .send(
                "POST",
                &format!("{url}/login"),
                Some(json!({"user": format!("u{i}")})),
            )
            .await;
        assert_eq!(s, 200);
        users.push(u);
    }
    // Requests in flight from every user while the store goes away under them.
    let mut tasks = Vec::new();
    for (i, mut u) in users.into_iter().enumerate() {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for n in 0..30 {
                let (s, retry, body, cookie) = if n % 3 == 0 {
                    u.send(
                        "POST",
                        &format!("{url}/cart/items"),
                        Some(json!({"sku": format!("s{i}"), "qty": 1})),
                    )
                    .await
                } else {
                    u.send("GET", &format!("{url}/profile"), None).await
                };
                if s == 503 {
                    assert_eq!(retry.as_deref(), Some("1"), "503 without Retry-After");
                    assert!(
                        body["error"].as_str().is_some_and(|e| e.len() < 200),
                        "{body}"
                    );
                    assert!(!cookie, "a cookie on a 503");
                }
                seen.push(s);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (u, seen)
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    proxy.down().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.up().await.unwrap();
    let mut statuses = Vec::new();
    let mut users = Vec::new();
    for t in tasks {
        let (u, seen) = t.await.unwrap();
        statuses.extend(seen);
        users.push(u);
    }
    assert!(
        statuses.contains(&503),
        "the outage was not seen: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "only 200 or 503 during an outage: {statuses:?}"
    );
    // Back: every user is still logged in (retrying until the pool reconnects).
    for u in &mut users {
        let mut last = 0;
        for _ in 0..50 {
            last = u.send("GET", &format!("{url}/profile"), None).await.0;
            if last == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(last, 200, "a user lost the session across the outage");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_mid_request_is_503_with_retry_after() {
    let target = url_addr(&redis_url(), 6379).unwrap();
    let proxy = TcpProxy::start(target).await.unwrap();
    let config = DemoConfig::from_toml(&format!(
        "dev = true\n[backend]\nkind = \"redis\"\n[backend.redis]\nurl = \"{}\"\nkey_prefix = \"{}:\"\nresponse_timeout = \"300ms\"\nconnection_timeout = \"300ms\"\nreconnect_attempts = 1\n",
        with_host_port(&redis_url(), "127.0.0.1", proxy.addr.port()),
        unique_name("demo_outage"),
    ))
    .unwrap();
    outage_run(config, &proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_mid_request_is_503_with_retry_after() {
    let target = url_addr(&database_url(), 5432).unwrap();
    let proxy = TcpProxy::start(target).await.unwrap();
    let schema = backend_sql::testing::PgTestSchema::new(database_url(), "demo_outage");
    let config = DemoConfig::from_toml(&format!(
        "dev = true\n[backend]\nkind = \"sql\"\n[backend.sql]\nurl = \"{}\"\nschema = \"{}\"\nacquire_timeout = \"300ms\"\nstatement_timeout = \"1s\"\ncleanup = false\n",
        with_host_port(&database_url(), "127.0.0.1", proxy.addr.port()),
        schema.name(),
    ))
    .unwrap();
    outage_run(config, &proxy).await;
    schema.drop_now().await.unwrap();
}
