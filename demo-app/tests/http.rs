//! The demo's HTTP contract on real multi-node clusters of real processes, for every backend:
//! login on node 1, profile on node 2, cart on node 3, logout on node 2 → 401 everywhere.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::time::Duration;

use backend_instantcopy::{Ack, Replication};
use common::{User, binary};
use demo_app::cluster::{ClusterSpec, LocalCluster};
use demo_app::config::BackendKind;
use serde_json::{Value, json};
use session_core::testing::{database_url, redis_url, unique_name};

/// Runs the cross-node flow on a started cluster (needs at least 3 nodes). `server_side`:
/// whether the backend can revoke a copied token (the sealed cookie cannot: documented).
async fn cross_node_flow(c: &LocalCluster, server_side: bool) {
    let u = c.urls();
    let mut alice = User::new();
    let (s, body) = alice
        .send(
            "POST",
            format!("{}/login", u[0]),
            Some(json!({"user": "alice"})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["user"], "alice");
    assert_eq!(body["node"], 1);
    let first_token = alice.token.clone().expect("login sets a session cookie");

    let (s, body) = alice.send("GET", format!("{}/profile", u[1]), None).await;
    assert_eq!(
        (s, body["user"].clone(), body["node"].clone()),
        (200, json!("alice"), json!(2))
    );

    let (s, body) = alice
        .send(
            "POST",
            format!("{}/cart/items", u[2]),
            Some(json!({"sku": "book-1", "qty": 2})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["items"]["book-1"], 2);
    let (s, body) = alice
        .send(
            "POST",
            format!("{}/cart/items", u[1]),
            Some(json!({"sku": "pen", "qty": 1})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = alice.send("GET", format!("{}/cart", u[0]), None).await;
    assert_eq!(s, 200);
    assert_eq!(
        body["items"],
        json!({"book-1": 2, "pen": 1}),
        "node 1 sees writes from 2 and 3"
    );

    let (s, body) = alice
        .send("DELETE", format!("{}/cart/items/pen", u[2]), None)
        .await;
    assert_eq!((s, body["items"].clone()), (200, json!({"book-1": 2})));
    let (_, body) = alice.send("GET", format!("{}/profile", u[0]), None).await;
    assert_eq!(body["cart_items"], 1);

    let token = alice.token.clone().unwrap();
    let (s, _) = alice.send("POST", format!("{}/logout", u[1]), None).await;
    assert_eq!(s, 204);
    assert!(alice.token.is_none(), "logout clears the cookie");
    for url in &u {
        let (s, _) = alice.send("GET", format!("{url}/profile"), None).await;
        assert_eq!(s, 401, "{url}: still logged in after logout");
    }
    if !server_side {
        return;
    }
    // A copy of the token kept from before logout is dead on every node, and so is the token
    // from before login's id cycle (session fixation).
    for url in &u {
        for old in [&token, &first_token] {
            let mut thief = User::new();
            thief.token = Some(old.clone());
            let (s, _) = thief.send("GET", format!("{url}/profile"), None).await;
            assert_eq!(s, 401, "{url}: an old token still works");
        }
    }
}

/// Garbage, missing fields, oversized bodies, unknown routes: JSON 4xx, never 5xx.
async fn bad_input(c: &LocalCluster) {
    let url = &c.urls()[0];
    let mut u = User::new();
    u.send("POST", format!("{url}/login"), Some(json!({"user": "bob"})))
        .await;
    let http = reqwest::Client::new();
    let cookie = format!("sid={}", u.token.clone().unwrap());
    let cases: Vec<(&str, String, Vec<u8>, u16)> = vec![
        ("POST", "/login".into(), b"not json".to_vec(), 400),
        ("POST", "/login".into(), b"{}".to_vec(), 400),
        ("POST", "/login".into(), br#"{"user": ""}"#.to_vec(), 400),
        (
            "POST",
            "/cart/items".into(),
            br#"{"sku": "x"}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/cart/items".into(),
            br#"{"sku": "../etc", "qty": 1}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/cart/items".into(),
            br#"{"sku": "x", "qty": 0}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/cart/items".into(),
            br#"{"sku": "x", "qty": -1}"#.to_vec(),
            400,
        ),
        ("GET", "/nope".into(), vec![], 404),
        // Last: the server answers 413 without reading the body and closes the connection.
        ("POST", "/cart/items".into(), vec![b'['; 100_000], 413),
    ];
    for (method, path, body, want) in cases {
        let http = if want == 413 {
            reqwest::Client::new()
        } else {
            http.clone()
        };
        let res = http
            .request(method.parse().unwrap(), format!("{url}{path}"))
            .header("cookie", &cookie)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), want, "{method} {path}");
        let v: Value = res.json().await.unwrap();
        assert!(
            v["error"].is_string(),
            "{method} {path}: JSON error body, got {v}"
        );
    }
    // Forged and garbage cookies: no session (401 on profile), never a 500.
    for token in ["garbage", "AAAA", &"A".repeat(5000), "ключ"] {
        let res = http
            .get(format!("{url}/profile"))
            .header("cookie", format!("sid={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 401);
    }
    // Not logged in: 401.
    let res = http.get(format!("{url}/cart")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 401);
}

/// The metric names the README promises.
/// `/metrics` of node `i`, parsed with a maintained Prometheus-text parser:
/// `name{k=v,...}` (labels sorted) → value.
async fn scrape(c: &LocalCluster, i: usize) -> std::collections::HashMap<String, f64> {
    let text = reqwest::get(format!("{}/metrics", c.urls()[i]))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("/metrics is valid Prometheus text");
    let mut out = std::collections::HashMap::new();
    for s in parsed.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let (name, value) = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => (s.metric.clone(), v),
            prometheus_parse::Value::Histogram(buckets) => {
                for b in buckets {
                    let mut l = labels.clone();
                    l.push(format!("le={}", b.less_than));
                    l.sort();
                    out.insert(format!("{}_bucket{{{}}}", s.metric, l.join(",")), b.count);
                }
                continue;
            }
            _ => continue,
        };
        out.insert(format!("{name}{{{}}}", labels.join(",")), value);
    }
    out
}

async fn metrics_contract(c: &LocalCluster, kind: BackendKind) {
    let before = scrape(c, 0).await;
    for name in [
        "session_network_calls_total{}",
        "session_db_calls_total{}",
        "session_client_bytes_sum{}",
        "session_client_bytes_count{}",
        "session_loads_total{}",
        "session_unavailable_reads_total{}",
    ] {
        assert!(
            before.contains_key(name),
            "/metrics lacks {name}: {before:?}"
        );
    }
    assert!(
        before.keys().any(|k| k.starts_with("http_requests_total{")
            && k.contains("class=")
            && k.contains("route=")),
        "{before:?}"
    );
    // A logged-in user reads its profile four times on node 1: loads move by four, and N or D
    // as the scheme says (Redis: a round trip each; SQL: a query each; cookie and a local
    // instant-copy copy: none).
    let mut u = User::new();
    let (s, _) = u
        .send(
            "POST",
            format!("{}/login", c.urls()[0]),
            Some(json!({"user": "metrics"})),
        )
        .await;
    assert_eq!(s, 200);
    let mid = scrape(c, 0).await;
    for _ in 0..4 {
        assert_eq!(
            u.send("GET", format!("{}/profile", c.urls()[0]), None)
                .await
                .0,
            200
        );
    }
    let after = scrape(c, 0).await;
    let moved = |name: &str| after[name] - mid[name];
    assert_eq!(moved("session_loads_total{}"), 4.0, "{kind:?}");
    // The layer attributes each request's calls to it, by kind: the login was one write, the
    // four profile reads are reads, and every call they made is in the read totals (nothing
    // in the background makes these calls).
    let was = |m: &std::collections::HashMap<String, f64>, name: &str| {
        m.get(name).copied().unwrap_or(0.0)
    };
    assert_eq!(
        was(&mid, "session_requests_total{kind=write}")
            - was(&before, "session_requests_total{kind=write}"),
        1.0,
        "{kind:?}: the login is a write"
    );
    assert_eq!(moved("session_requests_total{kind=read}"), 4.0, "{kind:?}");
    assert_eq!(moved("session_requests_total{kind=write}"), 0.0, "{kind:?}");
    assert_eq!(
        moved("session_request_network_calls_total{kind=read}"),
        moved("session_network_calls_total{}"),
        "{kind:?}: N attributed to the reads"
    );
    assert_eq!(
        moved("session_request_db_calls_total{kind=read}"),
        moved("session_db_calls_total{}"),
        "{kind:?}: D attributed to the reads"
    );
    let (n, d) = (
        moved("session_network_calls_total{}"),
        moved("session_db_calls_total{}"),
    );
    match kind {
        BackendKind::Redis => assert!(n >= 4.0 && d == 0.0, "redis N {n} D {d}"),
        BackendKind::Sql => assert!(d >= 4.0 && n == 0.0, "sql N {n} D {d}"),
        BackendKind::Cookie | BackendKind::Instantcopy => {
            assert_eq!((n, d), (0.0, 0.0), "{kind:?}: reads served locally")
        }
    }
    assert!(
        after["http_request_duration_seconds_count{route=/profile}"]
            - before
                .get("http_request_duration_seconds_count{route=/profile}")
                .copied()
                .unwrap_or(0.0)
            >= 4.0,
        "{after:?}"
    );
    let health: Value = reqwest::get(format!("{}/healthz", c.urls()[0]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
}

async fn full(spec: ClusterSpec) -> LocalCluster {
    let server_side = spec.backend != BackendKind::Cookie;
    let mut c = LocalCluster::start(binary(), &spec).await.unwrap();
    cross_node_flow(&c, server_side).await;
    bad_input(&c).await;
    metrics_contract(&c, spec.backend).await;
    c.stop(Duration::from_secs(10)).await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instantcopy_all_three_nodes() {
    full(ClusterSpec::new(3, BackendKind::Instantcopy)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instantcopy_one_backup_ack_one() {
    let mut spec = ClusterSpec::new(3, BackendKind::Instantcopy);
    spec.replication = Replication::Backups(1);
    spec.ack = Ack::One;
    full(spec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_three_nodes() {
    full(ClusterSpec::new(3, BackendKind::Cookie)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_three_nodes() {
    let prefix = format!("{}:", unique_name("demo"));
    let mut spec = ClusterSpec::new(3, BackendKind::Redis);
    spec.redis_url = Some(redis_url());
    spec.redis_prefix = Some(prefix.clone());
    full(spec).await;
    let config = backend_redis::RedisConfig::single(redis_url()).with_key_prefix(prefix);
    backend_redis::testing::delete_prefix(&config)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_postgres_three_nodes() {
    let schema = backend_sql::testing::PgTestSchema::new(database_url(), "demo");
    schema.create().await.unwrap();
    let mut spec = ClusterSpec::new(3, BackendKind::Sql);
    spec.database_url = Some(database_url());
    spec.sql_schema = Some(schema.name().to_owned());
    full(spec).await;
    schema.drop_now().await.unwrap();
}

/// A client without cookie support (a mobile or API client) using `Authorization: Bearer`:
/// login on one node, write on another, read on a third, logout; its tokens come back in the
/// `x-session-token` header, never as a cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_clients_need_no_cookies() {
    let mut spec = ClusterSpec::new(3, BackendKind::Instantcopy);
    spec.extra_env = vec![("DEMO_SESSION__TRANSPORT".into(), "bearer".into())];
    let mut c = LocalCluster::start(binary(), &spec).await.unwrap();
    let u = c.urls();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let token: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let call = async |method: &str, url: String, body: Option<Value>| {
        let mut req = http.request(method.parse().unwrap(), url);
        let current = token.lock().unwrap().clone();
        if let Some(t) = current {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        assert!(
            res.headers().get("set-cookie").is_none(),
            "bearer mode set a cookie"
        );
        if let Some(t) = res.headers().get("x-session-token") {
            let t = t.to_str().unwrap();
            *token.lock().unwrap() = (!t.is_empty()).then(|| t.to_owned());
        }
        let status = res.status().as_u16();
        (status, res.json::<Value>().await.unwrap_or(Value::Null))
    };
    let (s, body) = call(
        "POST",
        format!("{}/login", u[0]),
        Some(json!({"user": "bob"})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = call(
        "POST",
        format!("{}/cart/items", u[1]),
        Some(json!({"sku": "pen", "qty": 3})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = call("GET", format!("{}/profile", u[2]), None).await;
    assert_eq!((s, body["user"].clone()), (200, json!("bob")), "{body}");
    assert_eq!(body["cart_items"], 1, "{body}");
    // A cookie is not a credential in this mode.
    let res = http
        .get(format!("{}/profile", u[2]))
        .header(
            "cookie",
            format!("sid={}", token.lock().unwrap().clone().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let (s, _) = call("POST", format!("{}/logout", u[1]), None).await;
    assert_eq!(s, 204);
    let (s, _) = call("GET", format!("{}/profile", u[0]), None).await;
    assert_eq!(s, 401);
    c.stop(Duration::from_secs(10)).await;
}
