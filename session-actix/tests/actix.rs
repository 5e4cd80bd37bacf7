//! actix-session over our instant-copy backend, on a 3-node cluster through actix-web's test
//! services, each request sent to the next node in turn: login, cart writes seen on the next
//! node, two requests at once on two nodes changing different keys, logout everywhere, a
//! forged key. The app is the example's, unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

#[path = "../examples/cart_app/mod.rs"]
mod cart_app;

use actix_session::SessionMiddleware;
use actix_web::cookie::Key;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{App, test};
use backend_instantcopy::testing::InProcessCluster;
use backend_instantcopy::{Ack, Replication};
use session_actix::SyncStore;
use session_core::{ExpiryPolicy, SessionBackend};

/// Sends `req` with `cookie`, returns status, body and the cookie to carry next.
async fn call<S>(
    app: &S,
    method: &str,
    path: &str,
    cookie: &Option<String>,
) -> (u16, String, Option<String>)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let mut req = test::TestRequest::default()
        .method(method.parse().unwrap())
        .uri(path);
    if let Some(c) = cookie {
        req = req.insert_header(("cookie", c.clone()));
    }
    let resp = test::call_service(app, req.to_request()).await;
    let status = resp.status().as_u16();
    let mut next = cookie.clone();
    for c in resp.response().cookies() {
        next = (!c.value().is_empty()).then(|| format!("{}={}", c.name(), c.value()));
    }
    let body = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
    (status, body, next)
}

#[actix_web::test]
async fn actix_session_on_three_nodes_round_robin() {
    for (replication, ack) in [
        (Replication::Backups(1), Ack::One),
        (Replication::All, Ack::Async),
    ] {
        let c = InProcessCluster::start(3, replication, ack, ExpiryPolicy::default())
            .await
            .unwrap();
        // Every node shares the cookie key, as every node of a cluster must.
        let key = Key::generate();
        let mut apps = Vec::new();
        for i in 0..3 {
            let store = SyncStore::new(c.node(i));
            let mw = SessionMiddleware::builder(store, key.clone())
                .cookie_secure(false)
                .build();
            apps.push(test::init_service(App::new().wrap(mw).configure(cart_app::routes)).await);
        }
        let mut cookie = None;
        let mut n = 0usize;
        let mut next = |m: &str, p: &str, cookie: &mut Option<String>| {
            let i = n % 3;
            n += 1;
            (i, m.to_owned(), p.to_owned(), cookie.clone())
        };
        let (i, m, p, ck) = next("GET", "/me", &mut cookie);
        assert_eq!(call(&apps[i], &m, &p, &ck).await.0, 401);
        let (i, m, p, ck) = next("POST", "/login/carol", &mut cookie);
        let (s, _, ck) = call(&apps[i], &m, &p, &ck).await;
        assert_eq!(s, 200);
        cookie = ck;
        assert!(cookie.is_some(), "login set the session cookie");
        for round in 0..6 {
            let (i, m, p, ck) = next("GET", "/me", &mut cookie);
            let (s, body, ck) = call(&apps[i], &m, &p, &ck).await;
            assert_eq!(
                (s, body.as_str()),
                (200, "carol"),
                "{replication:?} round {round}"
            );
            cookie = ck;
            let (i, m, p, ck) = next("POST", "/cart/book", &mut cookie);
            let loads = c.instance(i).unwrap().counters().loads;
            let (s, _, ck) = call(&apps[i], &m, &p, &ck).await;
            assert_eq!(s, 200);
            // Read and written in one request: one load, the update reuses it.
            assert_eq!(c.instance(i).unwrap().counters().loads - loads, 1);
            cookie = ck;
            if ack == Ack::Async {
                c.settle().await;
            }
            let (i, m, p, ck) = next("GET", "/cart/book", &mut cookie);
            let (s, body, ck) = call(&apps[i], &m, &p, &ck).await;
            assert_eq!(
                (s, body),
                (200, (round + 1).to_string()),
                "{replication:?} round {round}"
            );
            cookie = ck;
        }
        // Two requests at once on two nodes, each changing its own key: both survive.
        let (a, b) = tokio::join!(
            call(&apps[0], "POST", "/cart/pen", &cookie),
            call(&apps[1], "POST", "/cart/ink", &cookie)
        );
        assert_eq!((a.0, b.0), (200, 200));
        c.settle().await;
        // Carry the later of the two keys (either names the session).
        cookie = b.2.or(a.2);
        for (sku, want) in [("pen", "1"), ("ink", "1"), ("book", "6")] {
            let (s, body, _) = call(&apps[2], "GET", &format!("/cart/{sku}"), &cookie).await;
            assert_eq!((s, body.as_str()), (200, want), "{replication:?} {sku}");
        }
        // Logout on one node logs out everywhere, even with the old cookie kept.
        let old = cookie.clone();
        assert_eq!(call(&apps[1], "POST", "/logout", &cookie).await.0, 204);
        c.settle().await;
        for app in &apps {
            assert_eq!(
                call(app, "GET", "/me", &old).await.0,
                401,
                "{replication:?}"
            );
        }
    }
}

/// A forged or garbage session key (one that got past, or around, actix-session's cookie key)
/// is no session: nothing loaded, nothing created, no call to any peer.
#[actix_web::test]
async fn forged_keys_are_no_session() {
    use actix_session::storage::{SessionKey, SessionStore};
    let c = InProcessCluster::start(
        3,
        Replication::Backups(1),
        Ack::One,
        ExpiryPolicy::default(),
    )
    .await
    .unwrap();
    let store = SyncStore::new(c.node(0));
    let calls = || c.instance(0).unwrap().counters().network_calls;
    let before = calls();
    for forged in ["garbage", "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ""] {
        let key = SessionKey::try_from(forged.to_owned()).unwrap();
        assert_eq!(store.load(&key).await.unwrap(), None, "{forged:?}");
        store.delete(&key).await.unwrap();
    }
    assert_eq!(calls(), before);
    assert_eq!(
        c.running().iter().map(|n| n.sessions_held()).sum::<usize>(),
        0
    );
}
