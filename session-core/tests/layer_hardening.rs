//! The layer's web-facing bounds over real HTTP: size and key-count caps answered 413 with
//! nothing saved, removals of absent keys writing nothing, the opt-in cross-site check,
//! `Cache-Control: no-store` on responses that carry a token, and the cookie rules.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use session_core::{
    Commit, ExpiryPolicy, KeyRing, Loaded, MemoryBackend, OriginCheck, SameSite, Saved, Session,
    SessionBackend, SessionConfig, SessionError, SessionLayer, SessionLimits,
};

struct App {
    url: String,
    backend: Arc<MemoryBackend>,
    http: reqwest::Client,
}

async fn set(
    session: Session,
    Path((k, n)): Path<(String, usize)>,
) -> Result<&'static str, SessionError> {
    session.insert(&k, &"x".repeat(n))?;
    Ok("ok")
}

async fn flood(session: Session, Path(n): Path<usize>) -> Result<&'static str, SessionError> {
    for i in 0..n {
        session.insert(&format!("k{i}"), &1)?;
    }
    Ok("ok")
}

async fn remove(session: Session, Path(k): Path<String>) -> &'static str {
    session.remove(&k);
    "ok"
}

async fn keys(session: Session) -> Result<String, SessionError> {
    Ok(session.keys().await?.len().to_string())
}

async fn start(config: SessionConfig) -> App {
    let backend = Arc::new(MemoryBackend::new(
        ExpiryPolicy::default(),
        &KeyRing::generate(),
    ));
    let dynb: Arc<dyn SessionBackend> = backend.clone();
    let app = Router::new()
        .route("/set/{k}/{n}", post(set))
        .route("/flood/{n}", post(flood))
        .route("/remove/{k}", post(remove))
        .route("/keys", get(keys))
        .route(
            "/saves",
            get(
                |State(b): State<Arc<MemoryBackend>>| async move { b.counters().saves.to_string() },
            ),
        )
        .with_state(backend.clone())
        .layer(SessionLayer::with_config(dynb, config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    App {
        url,
        backend,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
    }
}

impl App {
    async fn post(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut r = self.http.post(format!("{}{path}", self.url));
        if let Some(t) = token {
            r = r.header("cookie", format!("sid={t}"));
        }
        r.send().await.unwrap()
    }

    async fn get(&self, path: &str, token: &str) -> String {
        self.http
            .get(format!("{}{path}", self.url))
            .header("cookie", format!("sid={token}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn token(res: &reqwest::Response) -> Option<String> {
    let c = res.headers().get("set-cookie")?.to_str().unwrap();
    Some(c.split(';').next()?.split_once('=')?.1.to_owned())
}

#[tokio::test]
async fn key_and_size_floods_get_413_and_nothing_is_saved() {
    let app = start(
        SessionConfig::default()
            .with_secure(false)
            .with_limits(SessionLimits {
                max_bytes: 4096,
                max_keys: 50,
            }),
    )
    .await;
    // Legitimate: a session with a few keys.
    let res = app.post("/flood/10", None).await;
    assert_eq!(res.status(), 200);
    let t = token(&res).unwrap();

    // One request that adds 100 keys: refused, the stored session keeps its 10.
    let res = app.post("/flood/100", Some(&t)).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(token(&res).is_none(), "no cookie for a refused write");
    assert!(res.text().await.unwrap().contains("key count"));
    assert_eq!(app.get("/keys", &t).await, "10");

    // Many requests that each add a few keys: the one that crosses 50 is refused.
    let mut refused = 0;
    for i in 0..20 {
        let res = app.post(&format!("/set/extra{i}/1"), Some(&t)).await;
        if res.status() == StatusCode::PAYLOAD_TOO_LARGE {
            refused += 1;
        } else {
            assert_eq!(res.status(), 200);
        }
    }
    assert_eq!(
        app.get("/keys", &t).await,
        "30",
        "10 + 20 keys fit under 50"
    );
    assert_eq!(refused, 0);
    for i in 0..30 {
        let _ = app.post(&format!("/set/more{i}/1"), Some(&t)).await;
    }
    assert_eq!(app.get("/keys", &t).await, "50", "held at the cap");

    // A value alone over the size cap: refused in the handler (insert fails), 413.
    let res = app.post("/set/big/5000", Some(&t)).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Values that together pass the cap: the write that crosses it is refused.
    let fresh = token(&app.post("/set/a/3000", None).await).unwrap();
    let res = app.post("/set/b/3000", Some(&fresh)).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Replacing a value by a smaller one is fine.
    let res = app.post("/set/a/10", Some(&fresh)).await;
    assert_eq!(res.status(), 200);
    let res = app.post("/set/b/3000", Some(&fresh)).await;
    assert_eq!(res.status(), 200, "fits once a was shrunk");
}

#[tokio::test]
async fn removing_absent_keys_writes_nothing() {
    let app = start(SessionConfig::default().with_secure(false)).await;
    let t = token(&app.post("/set/user/5", None).await).unwrap();
    let saves = app.get("/saves", &t).await;
    for i in 0..200 {
        let res = app.post(&format!("/remove/never{i}"), Some(&t)).await;
        assert_eq!(res.status(), 200);
        assert!(token(&res).is_none(), "nothing changed, nothing issued");
    }
    assert_eq!(
        app.get("/saves", &t).await,
        saves,
        "no write for absent keys"
    );
    // A present key is removed as before.
    let res = app.post("/remove/user", Some(&t)).await;
    assert!(token(&res).is_some());
    assert_eq!(app.get("/keys", &t).await, "0");
    assert!(!app.backend.is_empty());
}

#[tokio::test]
async fn cross_site_state_changes_are_refused_when_the_check_is_on() {
    let app = start(
        SessionConfig::default()
            .with_secure(false)
            .with_origin_check(Some(OriginCheck {
                allowed_origins: vec!["https://front.example".into()],
                allow_same_site: false,
            })),
    )
    .await;
    let host = app.url.trim_start_matches("http://").to_owned();
    let post = |headers: Vec<(&'static str, String)>| {
        let mut r = app.http.post(format!("{}/set/user/3", app.url));
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send()
    };
    for (case, headers) in [
        (
            "cross-site fetch",
            vec![("sec-fetch-site", "cross-site".to_string())],
        ),
        (
            "same-site fetch",
            vec![("sec-fetch-site", "same-site".to_string())],
        ),
        (
            "foreign origin",
            vec![("origin", "https://evil.example".to_string())],
        ),
        ("null origin", vec![("origin", "null".to_string())]),
    ] {
        let res = post(headers).await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{case}");
        assert!(token(&res).is_none(), "{case}");
    }
    assert_eq!(
        app.backend.len(),
        0,
        "no session created by a refused request"
    );
    for (case, headers) in [
        (
            "same-origin fetch",
            vec![("sec-fetch-site", "same-origin".to_string())],
        ),
        ("typed URL", vec![("sec-fetch-site", "none".to_string())]),
        ("own origin", vec![("origin", format!("http://{host}"))]),
        (
            "allowed origin",
            vec![("origin", "https://front.example".to_string())],
        ),
        ("no browser headers (curl)", vec![]),
    ] {
        let res = post(headers).await.unwrap();
        assert_eq!(res.status(), 200, "{case}");
    }
    // Reads are never checked.
    let res = app
        .http
        .get(format!("{}/keys", app.url))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn responses_that_carry_a_token_are_not_cacheable() {
    let app = start(SessionConfig::default().with_secure(false)).await;
    let res = app.post("/set/user/3", None).await;
    assert_eq!(res.headers()["cache-control"], "no-store");
    let t = token(&res).unwrap();
    let read = app
        .http
        .get(format!("{}/keys", app.url))
        .header("cookie", format!("sid={t}"))
        .send()
        .await
        .unwrap();
    assert!(
        read.headers().get("cache-control").is_none(),
        "a read issues nothing"
    );
    // A dead token is cleared, and that response is not cacheable either.
    let res = app.post("/remove/x", Some("bogus")).await;
    assert!(
        res.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(res.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn session_only_cookies_and_same_site_and_domain_are_configurable() {
    let app = start(
        SessionConfig::default()
            .with_persistent(false)
            .with_same_site(SameSite::Strict)
            .with_domain(Some("127.0.0.1".into())),
    )
    .await;
    let res = app.post("/set/user/3", None).await;
    let c = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(c.contains("SameSite=Strict"), "{c}");
    assert!(c.contains("Domain=127.0.0.1"), "{c}");
    assert!(!c.contains("Max-Age"), "a session-only cookie: {c}");
}

#[test]
fn cookie_rules_are_validated() {
    let ok = SessionConfig::default();
    assert!(ok.validate().is_ok());
    let none_plain = SessionConfig::default()
        .with_same_site(SameSite::None)
        .with_secure(false);
    assert!(
        none_plain
            .validate()
            .unwrap_err()
            .to_string()
            .contains("SameSite=None")
    );
    assert!(
        SessionConfig::default()
            .with_same_site(SameSite::None)
            .validate()
            .is_ok()
    );
    let host = SessionConfig::default().with_cookie_name("__Host-sid");
    assert!(host.validate().is_ok());
    assert!(host.clone().with_secure(false).validate().is_err());
    assert!(
        host.clone()
            .with_domain(Some("example.com".into()))
            .validate()
            .is_err()
    );
    let mut sub = host.clone();
    sub.path = "/app".into();
    assert!(sub.validate().is_err());
    assert!(
        SessionConfig::default()
            .with_cookie_name("__Secure-sid")
            .with_secure(false)
            .validate()
            .is_err()
    );
    assert!(
        SessionConfig::default()
            .with_cookie_name("bad name")
            .validate()
            .is_err()
    );
    assert!(
        SessionConfig::default()
            .with_domain(Some("a;b".into()))
            .validate()
            .is_err()
    );
}

#[test]
fn debug_output_never_shows_a_token() {
    let token = "TOKEN-abcdefghijklmnopqrstuvwxyz".to_string();
    let saved = Saved {
        token: token.clone(),
        expires_at: 1,
    };
    let commit = Commit::Issue {
        token: token.clone(),
        expires_at: 1,
    };
    let record = ExpiryPolicy::default().new_record(session_core::SessionId::random(), 0);
    let loaded = Loaded::new(Arc::new(record), &token, vec![]);
    for text in [
        format!("{saved:?}"),
        format!("{commit:?}"),
        format!("{loaded:?}"),
    ] {
        assert!(!text.contains("TOKEN"), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }
}
