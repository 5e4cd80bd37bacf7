//! Per-request cost attribution over real HTTP: the layer counts each request's network and
//! database calls for that request alone and classifies it as a read or a write.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use session_core::cost::{KindSnapshot, RequestCosts};
use session_core::{
    CoreCounters, Counters, Delta, ExpiryPolicy, KeyRing, Loaded, MemoryBackend, Saved, Session,
    SessionBackend, SessionConfig, SessionData, SessionError, SessionLayer, async_trait,
};

/// The reference backend, counting a load as one network call (a cache server's round trip)
/// and each write as one database call, so the split is visible.
struct Metered {
    inner: MemoryBackend,
    core: CoreCounters,
}

#[async_trait]
impl SessionBackend for Metered {
    fn scheme(&self) -> &'static str {
        "metered"
    }
    fn policy(&self) -> &ExpiryPolicy {
        self.inner.policy()
    }
    async fn load(&self, token: &str) -> Result<Option<Loaded>, SessionError> {
        // A yield between the count and the answer, so concurrent requests interleave.
        self.core.network(1);
        tokio::task::yield_now().await;
        self.inner.load(token).await
    }
    async fn create(&self, data: SessionData) -> Result<Saved, SessionError> {
        self.core.db(1);
        self.inner.create(data).await
    }
    async fn save(&self, l: &Loaded, d: &Delta) -> Result<Saved, SessionError> {
        self.core.db(1);
        self.inner.save(l, d).await
    }
    async fn cycle_id(&self, l: &Loaded, d: &Delta) -> Result<Saved, SessionError> {
        self.core.db(1);
        self.inner.cycle_id(l, d).await
    }
    async fn destroy(&self, l: &Loaded) -> Result<(), SessionError> {
        self.core.db(1);
        self.inner.destroy(l).await
    }
    fn counters(&self) -> Counters {
        self.core.snapshot(Vec::new())
    }
}

async fn login(session: Session) -> Result<&'static str, SessionError> {
    session.insert("user", "ann")?;
    Ok("ok")
}

async fn whoami(session: Session) -> Result<(StatusCode, String), SessionError> {
    Ok(match session.get::<String>("user").await? {
        Some(u) => (StatusCode::OK, u),
        None => (StatusCode::UNAUTHORIZED, "nobody".into()),
    })
}

/// Removes a key the session does not hold: nothing changes, so it is a read.
async fn remove_absent(session: Session) -> Result<&'static str, SessionError> {
    let _ = session.get::<String>("user").await?;
    session.remove("not-there");
    Ok("ok")
}

async fn logout(session: Session) -> StatusCode {
    session.destroy();
    StatusCode::NO_CONTENT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_charged_its_own_calls_as_a_read_or_a_write() {
    let backend = Arc::new(Metered {
        inner: MemoryBackend::new(ExpiryPolicy::default(), &KeyRing::generate()),
        core: CoreCounters::default(),
    });
    let costs = Arc::new(RequestCosts::default());
    let dynb: Arc<dyn SessionBackend> = backend.clone();
    let app = Router::new()
        .route("/login", post(login))
        .route("/whoami", get(whoami))
        .route("/remove-absent", post(remove_absent))
        .route("/logout", post(logout))
        .route("/static", get(|| async { "no session here" }))
        .layer(
            SessionLayer::with_config(dynb, SessionConfig::default().with_secure(false))
                .with_request_costs(costs.clone()),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = reqwest::Client::new();

    let res = client.post(format!("{url}/login")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let cookie = res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    // 20 reads at once: each is charged exactly its own load, never a neighbour's.
    let reads = (0..20).map(|_| {
        client
            .get(format!("{url}/whoami"))
            .header("cookie", &cookie)
            .send()
    });
    for r in futures::future::join_all(reads).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    let after_reads = costs.snapshot();
    assert_eq!(
        after_reads.writes,
        KindSnapshot {
            requests: 1,
            network_calls: 0,
            db_calls: 1
        },
        "the login: one create, no load"
    );
    assert_eq!(
        after_reads.reads,
        KindSnapshot {
            requests: 20,
            network_calls: 20,
            db_calls: 0
        }
    );

    for path in ["/remove-absent", "/logout"] {
        let res = client
            .post(format!("{url}{path}"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
    }
    let res = client.get(format!("{url}/static")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let end = costs.snapshot();
    assert_eq!(
        end.reads,
        KindSnapshot {
            requests: 22,
            network_calls: 21,
            db_calls: 0
        },
        "removing an absent key is a read (one load); a route that ignores the session costs nothing"
    );
    assert_eq!(
        end.writes,
        KindSnapshot {
            requests: 2,
            network_calls: 1,
            db_calls: 2
        },
        "the logout: a load and a destroy"
    );
    // Every call the backend made was attributed to some request.
    let all = backend.counters();
    assert_eq!(
        (all.network_calls, all.db_calls),
        (
            end.reads.network_calls + end.writes.network_calls,
            end.reads.db_calls + end.writes.db_calls
        )
    );
    server.abort();
}
