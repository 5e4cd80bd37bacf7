//! The demo's web-facing bounds on real node processes, each with the attack it stops and
//! legitimate traffic beside it: slowloris on the app port, a cross-site `text/plain` login,
//! a planted session surviving login, a cart flood, a login flood against the session cap, the
//! operator routes moved or turned off, and a two-phase secret rotation across a live 3-node
//! cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::path::Path;
use std::time::{Duration, Instant};

use demo_app::cluster::{ClusterSpec, LocalCluster, random_secret};
use demo_app::config::BackendKind;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_demo-app"))
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A client that keeps its session token.
struct User {
    http: reqwest::Client,
    token: Option<String>,
}

impl User {
    fn new() -> Self {
        User {
            http: http(),
            token: None,
        }
    }

    async fn send(&mut self, method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(t) = &self.token {
            req = req.header("cookie", format!("sid={t}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        for c in res.headers().get_all("set-cookie") {
            let c = c.to_str().unwrap();
            let value = c.split(';').next().unwrap().split_once('=').unwrap().1;
            self.token = (!c.contains("Max-Age=0") && !value.is_empty()).then(|| value.to_owned());
        }
        let json = res.json().await.unwrap_or(Value::Null);
        (status, json)
    }
}

async fn one_node(extra: &[(&str, &str)]) -> LocalCluster {
    let mut spec = ClusterSpec::new(1, BackendKind::Instantcopy);
    spec.extra_env = extra
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    LocalCluster::start(binary(), &spec).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_the_app_port_is_cut_off_while_users_are_served() {
    let mut c = one_node(&[("DEMO_HTTP__HEADER_READ_TIMEOUT", "2s")]).await;
    let url = c.urls()[0].clone();
    let addr = url.trim_start_matches("http://").to_owned();
    let opened = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Ty")
            .await
            .unwrap();
        slow.push(s);
    }
    let mut alice = User::new();
    let (s, _) = alice
        .send(
            "POST",
            &format!("{url}/login"),
            Some(json!({"user": "alice"})),
        )
        .await;
    assert_eq!(s, 200, "login during the attack");
    for _ in 0..10 {
        let (s, body) = alice.send("GET", &format!("{url}/profile"), None).await;
        assert_eq!((s, body["user"].clone()), (200, json!("alice")));
    }
    let waits: Vec<_> = slow
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return Instant::now(),
                            Ok(_) => {}
                        }
                    }
                })
                .await
                .ok()
            })
        })
        .collect();
    let mut latest = Duration::ZERO;
    for w in waits {
        let at = w.await.unwrap().expect("a slow connection outlived 10 s");
        latest = latest.max(at - opened);
    }
    assert!(
        latest < Duration::from_millis(4500),
        "closed after {latest:?}"
    );
    let (s, _) = alice.send("GET", &format!("{url}/profile"), None).await;
    assert_eq!(s, 200, "served after the attack");
    c.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_cannot_log_in_and_login_starts_clean() {
    let mut c = one_node(&[("DEMO_CART_MAX_LINES", "5")]).await;
    let url = c.urls()[0].clone();
    let client = http();
    // What a cross-site HTML form can send without a preflight.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let res = client
            .post(format!("{url}/login"))
            .header("content-type", ct)
            .body(r#"{"user":"mallory"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 415, "{ct}");
        assert!(res.headers().get("set-cookie").is_none(), "{ct}");
    }
    // A browser's cross-site fetch with the right type is refused by the origin check.
    let res = client
        .post(format!("{url}/login"))
        .header("content-type", "application/json")
        .header("sec-fetch-site", "cross-site")
        .body(r#"{"user":"mallory"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.headers().get("set-cookie").is_none());

    // An attacker's session, planted in the victim's browser, carries nothing into the
    // victim's login.
    let mut mallory = User::new();
    mallory
        .send(
            "POST",
            &format!("{url}/login"),
            Some(json!({"user": "mallory"})),
        )
        .await;
    let (s, _) = mallory
        .send(
            "POST",
            &format!("{url}/cart/items"),
            Some(json!({"sku": "planted", "qty": 1})),
        )
        .await;
    assert_eq!(s, 200);
    let planted = mallory.token.clone().unwrap();
    let mut victim = User {
        http: http(),
        token: Some(planted.clone()),
    };
    let (s, body) = victim
        .send(
            "POST",
            &format!("{url}/login"),
            Some(json!({"user": "victim"})),
        )
        .await;
    assert_eq!((s, body["user"].clone()), (200, json!("victim")));
    assert_ne!(victim.token.as_deref(), Some(planted.as_str()));
    let (_, cart) = victim.send("GET", &format!("{url}/cart"), None).await;
    assert_eq!(cart["items"], json!({}), "nothing carried over: {cart}");
    let (s, _) = mallory.send("GET", &format!("{url}/profile"), None).await;
    assert_eq!(s, 401, "the planted session is gone");

    // Cart flood: held at 5 lines; existing lines still change.
    for i in 0..5 {
        let (s, _) = victim
            .send(
                "POST",
                &format!("{url}/cart/items"),
                Some(json!({"sku": format!("s{i}"), "qty": 1})),
            )
            .await;
        assert_eq!(s, 200);
    }
    let (s, body) = victim
        .send(
            "POST",
            &format!("{url}/cart/items"),
            Some(json!({"sku": "s9", "qty": 1})),
        )
        .await;
    assert_eq!(s, 413, "{body}");
    let (s, body) = victim
        .send(
            "POST",
            &format!("{url}/cart/items"),
            Some(json!({"sku": "s0", "qty": 2})),
        )
        .await;
    assert_eq!((s, body["items"]["s0"].clone()), (200, json!(3)));
    c.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_routes_move_to_an_admin_address_or_turn_off() {
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    drop(admin);
    let mut c = one_node(&[("DEMO_ADMIN__ADDR", &admin_addr.to_string())]).await;
    let url = c.urls()[0].clone();
    let client = http();
    for path in ["/metrics", "/status.json", "/"] {
        let app = client.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(app.status(), 404, "{path} still on the app port");
        let adm = client
            .get(format!("http://{admin_addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(adm.status(), 200, "{path} on the admin port");
    }
    assert_eq!(
        client
            .get(format!("{url}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    c.stop(Duration::from_secs(5)).await;

    let mut off = one_node(&[("DEMO_ADMIN__ENABLED", "false")]).await;
    let url = off.urls()[0].clone();
    for path in ["/metrics", "/status.json", "/"] {
        let res = client.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
    }
    off.stop(Duration::from_secs(5)).await;
}

/// `auth_failures_total` of a node (peer requests that failed authentication).
async fn auth_failures(url: &str) -> f64 {
    let text = http()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.contains("auth_failures_total") && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_phase_rotation_across_a_live_cluster_logs_nobody_out() {
    let mut spec = ClusterSpec::new(3, BackendKind::Instantcopy);
    spec.extra_env = vec![(
        "DEMO_BACKEND__INSTANTCOPY__DRAIN_TIMEOUT".into(),
        "3s".into(),
    )];
    let mut c = LocalCluster::start(binary(), &spec).await.unwrap();
    let old = c.secret().to_owned();
    let new = random_secret();
    let urls = c.urls();
    let mut users = Vec::new();
    for i in 0..12 {
        let mut u = User::new();
        let (s, _) = u
            .send(
                "POST",
                &format!("{}/login", urls[i % 3]),
                Some(json!({"user": format!("u{i}")})),
            )
            .await;
        assert_eq!(s, 200);
        users.push(u);
    }
    let mut logged_out = 0;
    let mut step = 0usize;
    // Every user reads (and writes) on every running node; a 401 is a user logged out.
    let mut check = async |c: &mut LocalCluster, users: &mut Vec<User>, skip: Option<usize>| {
        step += 1;
        for (i, u) in users.iter_mut().enumerate() {
            for (n, url) in c.urls().iter().enumerate() {
                if Some(n) == skip {
                    continue;
                }
                let (s, body) = u.send("GET", &format!("{url}/profile"), None).await;
                if s != 200 {
                    logged_out += 1;
                    eprintln!("step {step}: user {i} on node {n}: {s} {body}");
                }
            }
            let url = &c.urls()[(i + step) % 3];
            if Some((i + step) % 3) != skip {
                let (s, _) = u
                    .send(
                        "POST",
                        &format!("{url}/cart/items"),
                        Some(json!({"sku": format!("p{step}"), "qty": 1})),
                    )
                    .await;
                if s != 200 {
                    logged_out += 1;
                }
            }
        }
    };
    check(&mut c, &mut users, None).await;
    let phases: [&[(&str, Option<&str>)]; 3] = [
        // 1: the new secret verifies everywhere; the old one still signs.
        &[
            ("SESSION_SECRET", Some(&old)),
            ("SESSION_SECRET_NEXT", Some(&new)),
        ],
        // 2: the new secret signs; the old one only verifies.
        &[
            ("SESSION_SECRET", Some(&new)),
            ("SESSION_SECRET_NEXT", None),
            ("SESSION_SECRET_PREVIOUS", Some(&old)),
        ],
        // 3: the old secret is gone.
        &[
            ("SESSION_SECRET", Some(&new)),
            ("SESSION_SECRET_PREVIOUS", None),
        ],
    ];
    for (p, env) in phases.iter().enumerate() {
        for i in 0..3 {
            let status = c.terminate(i, Duration::from_secs(15)).await;
            assert!(
                status.is_some(),
                "phase {}: node {} did not exit on SIGTERM",
                p + 1,
                i + 1
            );
            for (k, v) in env.iter() {
                c.set_env(i, k, *v);
            }
            check(&mut c, &mut users, Some(i)).await;
            c.start_node(i).unwrap();
            c.wait_node_ready(i, Duration::from_secs(30)).await.unwrap();
            c.wait_ready(Duration::from_secs(20)).await.unwrap();
            check(&mut c, &mut users, None).await;
            for url in c.urls() {
                assert_eq!(auth_failures(&url).await, 0.0, "phase {}: {url}", p + 1);
            }
        }
    }
    eprintln!("rotation: {step} checks, {logged_out} users logged out");
    assert!(step >= 19, "{step} checks");
    assert_eq!(logged_out, 0, "users logged out during the rotation");
    c.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_meets_the_session_cap_with_503_and_logged_in_users_carry_on() {
    let mut c = one_node(&[("DEMO_BACKEND__INSTANTCOPY__MAX_SESSIONS", "5")]).await;
    let url = c.urls()[0].clone();
    let mut alice = User::new();
    let (status, _) = alice
        .send(
            "POST",
            &format!("{url}/login"),
            Some(json!({"user": "alice"})),
        )
        .await;
    assert_eq!(status, 200);
    // A flood of fresh logins: four more fit, then every one is refused.
    let client = http();
    let mut codes = Vec::new();
    for i in 0..20 {
        let res = client
            .post(format!("{url}/login"))
            .json(&json!({"user": format!("bot{i}")}))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        if status == 503 {
            assert_eq!(
                res.headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap()),
                Some("1")
            );
            assert!(res.headers().get("set-cookie").is_none());
        }
        codes.push(status);
    }
    assert_eq!(codes.iter().filter(|&&s| s == 200).count(), 4, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&s| s == 503).count(), 16, "{codes:?}");
    // Alice, logged in before, is neither logged out nor blocked from writing.
    let (status, body) = alice
        .send(
            "POST",
            &format!("{url}/cart/items"),
            Some(json!({"sku": "book", "qty": 1})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = alice.send("GET", &format!("{url}/profile"), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["user"], "alice");
    let metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("session_instantcopy_sessions_refused_total") && l.ends_with(" 16")
        ),
        "{metrics}"
    );
    c.stop(Duration::from_secs(5)).await;
}
