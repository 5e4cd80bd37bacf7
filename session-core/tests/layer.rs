//! The axum layer over real HTTP: cookie attributes, laziness, no save on 5xx, no cookie for an
//! unsaved session, forged tokens, header transport.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use session_core::{
    Counters, Delta, ExpiryPolicy, KeyRing, Loaded, MemoryBackend, Saved, Session, SessionBackend,
    SessionConfig, SessionData, SessionError, SessionLayer, TokenTransport, async_trait,
};

/// Wraps the reference backend and fails writes on demand.
struct Flaky {
    inner: MemoryBackend,
    fail: AtomicBool,
}

impl Flaky {
    fn check(&self) -> Result<(), SessionError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(SessionError::unavailable(
                "flaky",
                "writing a session",
                std::io::Error::other("store is down"),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl SessionBackend for Flaky {
    fn scheme(&self) -> &'static str {
        "flaky"
    }
    fn policy(&self) -> &ExpiryPolicy {
        self.inner.policy()
    }
    async fn load(&self, token: &str) -> Result<Option<Loaded>, SessionError> {
        self.inner.load(token).await
    }
    async fn create(&self, data: SessionData) -> Result<Saved, SessionError> {
        self.check()?;
        self.inner.create(data).await
    }
    async fn save(&self, l: &Loaded, d: &Delta) -> Result<Saved, SessionError> {
        self.check()?;
        self.inner.save(l, d).await
    }
    async fn cycle_id(&self, l: &Loaded, d: &Delta) -> Result<Saved, SessionError> {
        self.check()?;
        self.inner.cycle_id(l, d).await
    }
    async fn destroy(&self, l: &Loaded) -> Result<(), SessionError> {
        self.check()?;
        self.inner.destroy(l).await
    }
    fn counters(&self) -> Counters {
        self.inner.counters()
    }
}

struct App {
    url: String,
    backend: Arc<Flaky>,
    client: reqwest::Client,
}

async fn login(session: Session, Json(user): Json<String>) -> Result<&'static str, SessionError> {
    session.insert("user", &user)?;
    session.cycle_id();
    Ok("ok")
}

async fn whoami(session: Session) -> Result<(StatusCode, String), SessionError> {
    Ok(match session.get::<String>("user").await? {
        Some(u) => (StatusCode::OK, u),
        None => (StatusCode::UNAUTHORIZED, "nobody".into()),
    })
}

async fn logout(session: Session) -> StatusCode {
    session.destroy();
    StatusCode::NO_CONTENT
}

async fn crash(session: Session) -> StatusCode {
    let _ = session.insert("half", &"written");
    StatusCode::INTERNAL_SERVER_ERROR
}

async fn explicit_save(session: Session, State(b): State<Arc<Flaky>>) -> (StatusCode, String) {
    session.insert("k", &1).unwrap();
    b.fail.store(true, Ordering::SeqCst);
    let r = session.save().await;
    b.fail.store(false, Ordering::SeqCst);
    match r {
        Ok(()) => (StatusCode::OK, "saved".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("handled: {e}")),
    }
}

async fn start(config: SessionConfig) -> App {
    let backend = Arc::new(Flaky {
        inner: MemoryBackend::new(ExpiryPolicy::default(), &KeyRing::generate()),
        fail: AtomicBool::new(false),
    });
    let dynb: Arc<dyn SessionBackend> = backend.clone();
    let app = Router::new()
        .route("/login", post(login))
        .route("/whoami", get(whoami))
        .route("/logout", post(logout))
        .route("/crash", post(crash))
        .route("/explicit", post(explicit_save))
        .route("/static", get(|| async { "no session here" }))
        .with_state(backend.clone())
        .layer(SessionLayer::with_config(dynb, config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    App {
        url,
        backend,
        client: reqwest::Client::new(),
    }
}

fn set_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned())
}

fn token_of(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned()
}

impl App {
    async fn login(&self, user: &str) -> String {
        let res = self
            .client
            .post(format!("{}/login", self.url))
            .json(&user)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        token_of(&set_cookie(&res).expect("login sets a cookie"))
    }

    async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .header("cookie", format!("sid={token}"))
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn cookie_has_safe_attributes_and_round_trips() {
    let app = start(SessionConfig::default()).await;
    let res = app
        .client
        .post(format!("{}/login", app.url))
        .json(&"alice")
        .send()
        .await
        .unwrap();
    let c = set_cookie(&res).unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Secure", "Max-Age="] {
        assert!(c.contains(attr), "{attr} missing from {c}");
    }
    let token = token_of(&c);
    let res = app.get("/whoami", &token).await;
    assert!(
        set_cookie(&res).is_none(),
        "a read must not re-send the cookie"
    );
    assert_eq!(res.text().await.unwrap(), "alice");
}

#[tokio::test]
async fn secure_can_be_turned_off_and_name_changed() {
    let app = start(
        SessionConfig::default()
            .with_secure(false)
            .with_cookie_name("app"),
    )
    .await;
    let res = app
        .client
        .post(format!("{}/login", app.url))
        .json(&"a")
        .send()
        .await
        .unwrap();
    let c = set_cookie(&res).unwrap();
    assert!(c.starts_with("app=") && !c.contains("Secure"), "{c}");
}

#[tokio::test]
async fn untouched_sessions_cost_nothing() {
    let app = start(SessionConfig::default()).await;
    let token = app.login("bob").await;
    let before = app.backend.counters();
    let res = app.get("/static", &token).await;
    assert_eq!(res.status(), 200);
    assert!(set_cookie(&res).is_none());
    let after = app.backend.counters();
    assert_eq!(
        before.loads, after.loads,
        "a route that ignores the session loaded it"
    );
}

#[tokio::test]
async fn login_cycles_the_id_and_kills_the_old_token() {
    let app = start(SessionConfig::default()).await;
    let first = app.login("carol").await;
    // Log in again on the same session: the id must change (fixation defence).
    let res = app
        .client
        .post(format!("{}/login", app.url))
        .header("cookie", format!("sid={first}"))
        .json(&"carol")
        .send()
        .await
        .unwrap();
    let second = token_of(&set_cookie(&res).unwrap());
    assert_ne!(first, second);
    assert_eq!(app.get("/whoami", &first).await.status(), 401);
    assert_eq!(app.get("/whoami", &second).await.status(), 200);
}

#[tokio::test]
async fn forged_and_garbage_tokens_get_an_empty_session_not_an_error() {
    let app = start(SessionConfig::default()).await;
    let good = app.login("dave").await;
    let mut flipped = good.clone().into_bytes();
    flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for bad in [
        flipped.as_str(),
        "garbage",
        "%%%%",
        &"A".repeat(5000),
        "ключ",
    ] {
        let res = app.get("/whoami", bad).await;
        assert_eq!(res.status(), 401, "token {bad:.20}");
        let c = set_cookie(&res).unwrap_or_else(|| panic!("a dead token {bad:.20} is cleared"));
        assert!(c.contains("Max-Age=0"), "{c}");
    }
    assert_eq!(app.backend.counters().network_calls, 0);
}

#[tokio::test]
async fn nothing_is_saved_after_a_5xx() {
    let app = start(SessionConfig::default()).await;
    let res = app
        .client
        .post(format!("{}/crash", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    assert!(set_cookie(&res).is_none());
    assert_eq!(app.backend.counters().creates, 0);
}

#[tokio::test]
async fn an_unavailable_store_gives_503_with_retry_after_and_no_cookie() {
    let app = start(SessionConfig::default()).await;
    app.backend.fail.store(true, Ordering::SeqCst);
    let res = app
        .client
        .post(format!("{}/login", app.url))
        .json(&"erin")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert!(
        set_cookie(&res).is_none(),
        "no cookie for an unsaved session"
    );
    let body = res.text().await.unwrap();
    assert!(
        !body.contains("store is down"),
        "cause must not leak to the client: {body}"
    );
    app.backend.fail.store(false, Ordering::SeqCst);
    app.login("erin").await;
}

#[tokio::test]
async fn handlers_can_save_explicitly_and_handle_errors() {
    let app = start(SessionConfig::default()).await;
    let res = app
        .client
        .post(format!("{}/explicit", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.text().await.unwrap().starts_with("handled:"));
}

#[tokio::test]
async fn logout_clears_the_cookie_and_the_session() {
    let app = start(SessionConfig::default()).await;
    let token = app.login("frank").await;
    let res = app
        .client
        .post(format!("{}/logout", app.url))
        .header("cookie", format!("sid={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(set_cookie(&res).unwrap().contains("Max-Age=0"));
    assert_eq!(app.get("/whoami", &token).await.status(), 401);
}

#[tokio::test]
async fn header_transport_for_api_clients() {
    let app = start(SessionConfig::default().with_transport(TokenTransport::CookieOrHeader)).await;
    let token = app.login("gina").await;
    // An API client sends the header and gets tokens back in the header, not a cookie.
    let res = app
        .client
        .post(format!("{}/login", app.url))
        .header("x-session-token", &token)
        .json(&"gina")
        .send()
        .await
        .unwrap();
    assert!(set_cookie(&res).is_none());
    let new = res.headers()["x-session-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let res = app
        .client
        .get(format!("{}/whoami", app.url))
        .header("x-session-token", &new)
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "gina");

    // Header-only mode ignores cookies.
    let app = start(SessionConfig::default().with_transport(TokenTransport::Header)).await;
    let res = app
        .client
        .post(format!("{}/login", app.url))
        .json(&"hal")
        .send()
        .await
        .unwrap();
    let token = res.headers()["x-session-token"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.get("/whoami", &token).await.status(), 401);
}
