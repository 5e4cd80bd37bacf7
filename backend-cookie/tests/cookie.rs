//! Behaviour of the sealed-cookie backend beyond the shared suite: the rotation details of the
//! seal (old-key opens counted, a removed key's cookie refused as a bad signature), the size
//! limit, expiry and revocation from inside the seal, bad cookies, and the axum layer's error
//! response. (A request re-sealing an old-key cookie, and saves after expiry, are the suite's
//! `key_rotation` and `save_after_expiry_is_gone`.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use backend_cookie::{BROWSER_COOKIE_LIMIT, CookieBackend, CookieConfig, Sealer, sealed_len};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::BodyExt as _;
use session_core::{
    Commit, Counters, Delta, ExpiryPolicy, KeyRing, RawJson, Secret, Session, SessionBackend,
    SessionConfig, SessionData, SessionError, SessionId, SessionLayer, TokenError, now_millis,
};
use tower::ServiceExt as _;

fn secret(s: &str) -> Secret {
    Secret::new(s.as_bytes().to_vec()).unwrap()
}

fn old_secret() -> Secret {
    secret("the old cookie secret, thirty-two bytes or more")
}

fn new_secret() -> Secret {
    secret("the new cookie secret, thirty-two bytes or more")
}

fn backend_with(config: CookieConfig, policy: ExpiryPolicy, keys: &KeyRing) -> CookieBackend {
    CookieBackend::new(&config, policy, keys).unwrap()
}

fn backend(keys: &KeyRing) -> CookieBackend {
    backend_with(CookieConfig::default(), ExpiryPolicy::default(), keys)
}

fn data(pairs: &[(&str, serde_json::Value)]) -> SessionData {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), RawJson::from_value(v).unwrap()))
        .collect()
}

fn metric(c: &Counters, name: &str, outcome: Option<&str>) -> f64 {
    c.extra
        .iter()
        .find(|m| {
            m.name == name
                && outcome.is_none_or(|o| m.labels.iter().any(|(k, v)| k == "outcome" && v == o))
        })
        .map(|m| m.value)
        .unwrap_or_else(|| panic!("no metric {name} {outcome:?}"))
}

fn no_io(c: &Counters) {
    assert_eq!((c.network_calls, c.db_calls), (0, 0), "N = 0, D = 0");
}

/// Loads and expects "no session" in either of its two forms.
async fn no_session(b: &CookieBackend, token: &str) {
    match b.load(token).await {
        Ok(None) | Err(SessionError::InvalidToken(_)) => {}
        Ok(Some(_)) => panic!("a bad cookie opened: {}", &token[..token.len().min(40)]),
        Err(e) => panic!("a bad cookie caused an error: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// rotation

#[tokio::test]
async fn rotation_old_cookies_open_after_a_new_key_is_put_first() {
    let before = backend(&KeyRing::new([old_secret()]).unwrap());
    let sealed_old = before
        .create(data(&[("user", serde_json::json!("alice"))]))
        .await
        .unwrap();

    let rotated = backend(&KeyRing::new([new_secret(), old_secret()]).unwrap());
    let loaded = rotated.load(&sealed_old.token).await.unwrap().unwrap();
    assert_eq!(
        loaded
            .record
            .data
            .get_as::<String>("user")
            .unwrap()
            .as_deref(),
        Some("alice")
    );
    let c = rotated.counters();
    assert_eq!(metric(&c, "old_key_opens_total", None), 1.0);

    // The next change re-seals with the new key: it opens once the old key is gone.
    let mut delta = Delta::default();
    delta.set("n", RawJson::from_value(&1).unwrap());
    let resealed = rotated.save(&loaded, &delta).await.unwrap();
    let after = backend(&KeyRing::new([new_secret()]).unwrap());
    let l = after.load(&resealed.token).await.unwrap().unwrap();
    assert_eq!(l.record.id, loaded.record.id);
    assert_eq!(l.record.data.get_as::<u64>("n").unwrap(), Some(1));

    // A cookie sealed with a removed key does not open.
    assert!(matches!(
        after.load(&sealed_old.token).await,
        Err(SessionError::InvalidToken(TokenError::BadSignature))
    ));
    // Nor on an unrelated ring.
    assert!(matches!(
        backend(&KeyRing::generate()).load(&resealed.token).await,
        Err(SessionError::InvalidToken(TokenError::BadSignature))
    ));
    no_io(&after.counters());
}

#[tokio::test]
async fn keys_are_separated_from_other_purposes_of_the_same_secret() {
    // The id-token signer and the cookie sealer share the ring; neither accepts the other's output.
    let ring = KeyRing::new([old_secret()]).unwrap();
    let signer = session_core::TokenSigner::new(&ring);
    let id_token = signer.sign(&SessionId::random(), &[]).unwrap();
    no_session(&backend(&ring), &id_token).await;
    let cookie = backend(&ring)
        .create(data(&[("k", serde_json::json!(1))]))
        .await
        .unwrap();
    assert!(signer.verify(&cookie.token).is_err());
}

// ---------------------------------------------------------------------------------------------
// size

/// A fixed record holding one string value of `len` bytes of JSON text (len >= 2).
fn record_with_value(len: usize) -> session_core::SessionRecord {
    let mut r =
        ExpiryPolicy::default().new_record(SessionId::from_bytes([9; 16]), 1_700_000_000_000);
    r.data
        .insert("v", RawJson::from_value(&"x".repeat(len - 2)).unwrap());
    r
}

#[test]
fn a_4096_byte_cookie_seals_and_the_next_size_is_too_large() {
    let sealer = Sealer::new(&KeyRing::generate(), "sid");
    let mut hit_limit = false;
    let mut hit_over = false;
    for len in 2_900..3_100 {
        let r = record_with_value(len);
        match sealer.seal(&r, 0) {
            Ok(s) => {
                assert!(s.token.len() <= BROWSER_COOKIE_LIMIT, "{}", s.token.len());
                assert_eq!(s.token.len(), sealed_len(s.payload_len));
                hit_limit |= s.token.len() == 4096;
                assert_eq!(sealer.open(&s.token).unwrap().payload.record, r);
            }
            Err(SessionError::TooLarge { size, limit, what }) => {
                assert!(size > 4096, "{size}");
                assert_eq!((limit, what), (4096, "a browser cookie"));
                hit_over |= size == 4098;
                let err = sealer.seal(&r, 0).unwrap_err().to_string();
                assert!(
                    err.contains(&size.to_string()) && err.contains("4096"),
                    "the message names the size and the limit: {err}"
                );
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    // Unpadded base64 is never 4k+1 long: 4096 is the largest cookie, 4098 the smallest refused.
    assert!(hit_limit, "no session sealed to exactly 4096 bytes");
    assert!(hit_over, "no session sealed to exactly 4098 bytes");
}

#[test]
fn a_lower_configured_limit_applies_exactly() {
    let sealer = Sealer::new(&KeyRing::generate(), "sid").with_max_len(4093);
    for len in 2_980..3_080 {
        match sealer.seal(&record_with_value(len), 0) {
            Ok(s) => assert!(s.token.len() <= 4093),
            Err(SessionError::TooLarge { size, limit, .. }) => {
                assert!(size > 4093);
                assert_eq!(limit, 4093);
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        Sealer::new(&KeyRing::generate(), "sid")
            .with_max_len(9000)
            .max_len(),
        4096
    );
}

#[tokio::test]
async fn every_write_path_refuses_an_oversized_session() {
    let b = backend(&KeyRing::generate());
    let big = serde_json::json!("y".repeat(5_000));
    match b.create(data(&[("big", big.clone())])).await {
        Err(SessionError::TooLarge {
            size,
            limit: 4096,
            what: "a browser cookie",
        }) => {
            assert!(size > 6_000, "{size}");
        }
        other => panic!("create: {other:?}"),
    }
    let small = b
        .create(data(&[("k", serde_json::json!(1))]))
        .await
        .unwrap();
    let loaded = b.load(&small.token).await.unwrap().unwrap();
    let mut delta = Delta::default();
    delta.set("big", RawJson::from_value(&big).unwrap());
    assert!(matches!(
        b.save(&loaded, &delta).await,
        Err(SessionError::TooLarge { .. })
    ));
    assert!(matches!(
        b.cycle_id(&loaded, &delta).await,
        Err(SessionError::TooLarge { .. })
    ));
    let c = b.counters();
    assert_eq!(metric(&c, "too_large_total", None), 3.0);
    assert_eq!(c.creates, 1, "a refused session is not counted as created");
    assert!(metric(&c, "largest_sealed_bytes", None) <= 4096.0);
}

#[tokio::test]
async fn compression_makes_room_for_realistic_sessions() {
    let keys = KeyRing::generate();
    let plain = backend(&keys);
    let packed = backend_with(
        CookieConfig::default().with_compression(true),
        ExpiryPolicy::default(),
        &keys,
    );
    // About 3.7 KB of repetitive JSON: too large sealed as is, fine deflated.
    let cart: Vec<_> = (0..60)
        .map(|i| serde_json::json!({"sku": format!("SKU-{i:05}"), "qty": i % 3 + 1, "price_cents": 1999, "gift": false}))
        .collect();
    let d = data(&[("cart", serde_json::json!(cart))]);
    assert!(d.payload_len() > 3_000);
    assert!(matches!(
        plain.create(d.clone()).await,
        Err(SessionError::TooLarge { .. })
    ));
    let saved = packed.create(d.clone()).await.unwrap();
    assert!(saved.token.len() < 2_000, "{}", saved.token.len());
    // Both nodes (compressing or not) open it: the flag is in the cookie.
    assert_eq!(
        plain.load(&saved.token).await.unwrap().unwrap().record.data,
        d
    );
    assert_eq!(
        metric(&packed.counters(), "compressed_seals_total", None),
        1.0
    );
}

// ---------------------------------------------------------------------------------------------
// expiry and revocation

fn sealed_record(sealer: &Sealer, f: impl FnOnce(&mut session_core::SessionRecord)) -> String {
    let now = now_millis();
    let mut r = ExpiryPolicy::default().new_record(SessionId::random(), now);
    r.data.insert("k", RawJson::from_value(&1).unwrap());
    f(&mut r);
    sealer.seal(&r, 0).unwrap().token
}

#[tokio::test]
async fn deadlines_inside_the_seal_are_enforced() {
    let keys = KeyRing::generate();
    let b = backend(&keys);
    let sealer = Sealer::new(&keys, "sid");
    let now = now_millis();
    let fresh = sealed_record(&sealer, |_| {});
    assert!(b.load(&fresh).await.unwrap().is_some());
    // Idle deadline passed.
    let idle = sealed_record(&sealer, |r| r.idle_deadline = now - 1);
    assert!(b.load(&idle).await.unwrap().is_none());
    // Absolute deadline passed (idle still ahead).
    let abs = sealed_record(&sealer, |r| r.absolute_deadline = now - 1);
    assert!(b.load(&abs).await.unwrap().is_none());
    // Deadlines far ahead, but the current policy says the session is older than 8 h ...
    let too_old = sealed_record(&sealer, |r| {
        r.created_at = now - 9 * 3_600_000;
        r.idle_deadline = now + 3_600_000;
        r.absolute_deadline = now + 3_600_000;
    });
    assert!(b.load(&too_old).await.unwrap().is_none());
    // ... or idle for longer than 30 min: a cookie never carries its own policy.
    let too_idle = sealed_record(&sealer, |r| {
        r.last_access = now - 31 * 60_000;
        r.idle_deadline = now + 3_600_000;
    });
    assert!(b.load(&too_idle).await.unwrap().is_none());
    let c = b.counters();
    assert_eq!(metric(&c, "opens_total", Some("expired")), 4.0);
    assert_eq!(metric(&c, "opens_total", Some("ok")), 1.0);
    assert_eq!(c.invalid_tokens, 0, "expired is not invalid");
}

#[tokio::test]
async fn a_shorter_policy_applies_to_cookies_already_issued() {
    let keys = KeyRing::generate();
    let long = backend(&keys);
    let saved = long
        .create(data(&[("k", serde_json::json!(1))]))
        .await
        .unwrap();
    let short = backend_with(
        CookieConfig::default(),
        ExpiryPolicy::new(Duration::from_millis(50), Duration::from_secs(60)).unwrap(),
        &keys,
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(short.load(&saved.token).await.unwrap().is_none());
    assert!(long.load(&saved.token).await.unwrap().is_some());
}

#[tokio::test]
async fn bumping_the_revocation_epoch_invalidates_every_cookie() {
    let keys = KeyRing::generate();
    let epoch0 = backend(&keys);
    let epoch1 = backend_with(
        CookieConfig::default().with_revocation_epoch(1),
        ExpiryPolicy::default(),
        &keys,
    );
    let a = epoch0
        .create(data(&[("user", serde_json::json!("a"))]))
        .await
        .unwrap();
    let b = epoch0
        .create(data(&[("user", serde_json::json!("b"))]))
        .await
        .unwrap();
    assert!(epoch1.load(&a.token).await.unwrap().is_none());
    assert!(epoch1.load(&b.token).await.unwrap().is_none());
    assert_eq!(
        metric(&epoch1.counters(), "opens_total", Some("revoked")),
        2.0
    );
    // New cookies are sealed with the new epoch and open on both (rolling deploys).
    let c = epoch1
        .create(data(&[("user", serde_json::json!("c"))]))
        .await
        .unwrap();
    assert!(epoch1.load(&c.token).await.unwrap().is_some());
    assert!(epoch0.load(&c.token).await.unwrap().is_some());
    assert_eq!(epoch1.revocation_epoch(), 1);
}

// ---------------------------------------------------------------------------------------------
// bad cookies

#[tokio::test]
async fn tampered_truncated_reordered_wrong_key_and_wrong_name_are_no_session() {
    let keys = KeyRing::generate();
    let b = backend(&keys);
    let good = b
        .create(data(&[
            ("user", serde_json::json!("mallory")),
            ("role", serde_json::json!("user")),
        ]))
        .await
        .unwrap()
        .token;
    let raw = URL_SAFE_NO_PAD.decode(&good).unwrap();
    let enc = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let mut bad: Vec<String> = Vec::new();
    // Truncations at every length.
    for n in 0..raw.len() {
        bad.push(enc(&raw[..n]));
    }
    for n in 1..good.len() {
        bad.push(good[..n].to_string());
    }
    // Re-orderings: swap the two halves of the ciphertext, move the tag first, swap nonce bytes.
    let ct = 15..raw.len() - 16;
    let mid = ct.start + (ct.end - ct.start) / 2;
    let mut r = raw[..ct.start].to_vec();
    r.extend_from_slice(&raw[mid..ct.end]);
    r.extend_from_slice(&raw[ct.start..mid]);
    r.extend_from_slice(&raw[ct.end..]);
    bad.push(enc(&r));
    let mut r = raw[..15].to_vec();
    r.extend_from_slice(&raw[raw.len() - 16..]);
    r.extend_from_slice(&raw[15..raw.len() - 16]);
    bad.push(enc(&r));
    // Swap two adjacent nonce bytes that differ (swapping equal ones, 1 in 256 for a fixed
    // pair, would leave the cookie unchanged and valid).
    let i = (3..14)
        .find(|&i| raw[i] != raw[i + 1])
        .expect("a random 12-byte nonce has two different adjacent bytes");
    let mut r = raw.clone();
    r.swap(i, i + 1);
    bad.push(enc(&r));
    // Extensions.
    let mut r = raw.clone();
    r.push(0);
    bad.push(enc(&r));
    bad.push(format!("{good}="));
    bad.push(format!("{good} "));
    // Another version, standard base64 alphabet, over-long.
    let mut r = raw.clone();
    r[0] = 2;
    bad.push(enc(&r));
    bad.push(base64::engine::general_purpose::STANDARD.encode(&raw));
    bad.push("A".repeat(BROWSER_COOKIE_LIMIT + 1));
    bad.push(String::new());
    for t in &bad {
        no_session(&b, t).await;
    }
    // Wrong key and wrong cookie name.
    no_session(&backend(&KeyRing::generate()), &good).await;
    let other_name = backend_with(
        CookieConfig::default().with_cookie_name("admin_sid"),
        ExpiryPolicy::default(),
        &keys,
    );
    assert!(matches!(
        other_name.load(&good).await,
        Err(SessionError::InvalidToken(TokenError::BadSignature))
    ));
    let c = b.counters();
    assert_eq!(
        c.invalid_tokens,
        bad.len() as u64,
        "each is rejected before any I/O"
    );
    no_io(&c);
    // The good cookie still works.
    assert!(b.load(&good).await.unwrap().is_some());
}

// ---------------------------------------------------------------------------------------------
// the write paths

#[tokio::test]
async fn unchanged_requests_do_not_reseal_and_changes_always_do() {
    let b: Arc<dyn SessionBackend> = Arc::new(backend(&KeyRing::generate()));
    let s = Session::new(b.clone(), None);
    s.insert("user", "alice").unwrap();
    let Commit::Issue { token: t1, .. } = s.commit().await.unwrap() else {
        panic!("create issues a cookie")
    };
    let seals = |b: &Arc<dyn SessionBackend>| metric(&b.counters(), "seals_total", None);
    assert_eq!(seals(&b), 1.0);
    for _ in 0..5 {
        let s = Session::new(b.clone(), Some(t1.clone()));
        assert_eq!(
            s.get::<String>("user").await.unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(s.commit().await.unwrap(), Commit::Unchanged);
    }
    assert_eq!(seals(&b), 1.0, "reads re-sealed");
    // Each change returns a new cookie (fresh nonce even for identical content).
    let mut tokens = vec![t1.clone()];
    for i in 0..3 {
        let s = Session::new(b.clone(), Some(tokens.last().unwrap().clone()));
        s.insert("n", &i).unwrap();
        let Commit::Issue { token, .. } = s.commit().await.unwrap() else {
            panic!("a change issues a cookie")
        };
        assert!(!tokens.contains(&token));
        tokens.push(token);
    }
    let last = b.load(tokens.last().unwrap()).await.unwrap().unwrap();
    assert_eq!(last.record.version, 4);
    assert_eq!(last.record.data.get_as::<u64>("n").unwrap(), Some(2));
    // Documented trade-off: an earlier cookie of the same session still opens (replay).
    let first = b.load(&t1).await.unwrap().unwrap();
    assert_eq!(first.record.id, last.record.id);
    assert_eq!(first.record.version, 1);
    let c = b.counters();
    assert_eq!((c.creates, c.saves), (1, 3));
    no_io(&c);
}

#[tokio::test]
async fn a_touch_reseals_with_a_later_idle_deadline_and_the_same_data() {
    let policy = ExpiryPolicy::new(Duration::from_secs(60), Duration::from_secs(600))
        .unwrap()
        .with_touch_fraction(0.0)
        .unwrap();
    let b = backend_with(CookieConfig::default(), policy, &KeyRing::generate());
    let saved = b
        .create(data(&[("k", serde_json::json!(1))]))
        .await
        .unwrap();
    let loaded = b.load(&saved.token).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let touched = b.save(&loaded, &Delta::default()).await.unwrap();
    assert_ne!(touched.token, saved.token);
    let after = b.load(&touched.token).await.unwrap().unwrap();
    assert!(after.record.idle_deadline > loaded.record.idle_deadline);
    assert_eq!(
        after.record.absolute_deadline,
        loaded.record.absolute_deadline
    );
    assert_eq!(after.record.data, loaded.record.data);
    assert_eq!(touched.expires_at, after.record.expires_at());
}

#[tokio::test]
async fn cycle_id_gives_a_new_id_and_destroy_is_client_side() {
    let b = backend(&KeyRing::generate());
    let saved = b
        .create(data(&[("cart", serde_json::json!(["x"]))]))
        .await
        .unwrap();
    let loaded = b.load(&saved.token).await.unwrap().unwrap();
    let mut delta = Delta::default();
    delta.set("user", RawJson::from_value("erin").unwrap());
    let cycled = b.cycle_id(&loaded, &delta).await.unwrap();
    let l2 = b.load(&cycled.token).await.unwrap().unwrap();
    assert_ne!(l2.record.id, loaded.record.id);
    assert_eq!(
        l2.record.created_at, loaded.record.created_at,
        "absolute deadline kept"
    );
    assert_eq!(
        l2.record.data.to_json_object(),
        r#"{"cart":["x"],"user":"erin"}"#
    );
    // The old cookie holds the pre-login state and stays valid until it expires (documented).
    let old = b.load(&saved.token).await.unwrap().unwrap();
    assert!(old.record.data.get("user").is_none());
    b.destroy(&l2).await.unwrap();
    let c = b.counters();
    assert_eq!((c.cycles, c.destroys), (1, 1));
    assert_eq!(c.client_bytes_count, c.loads);
    no_io(&c);
}

#[tokio::test]
async fn client_bytes_are_the_cookie_lengths() {
    let b = backend(&KeyRing::generate());
    let a = b
        .create(data(&[("k", serde_json::json!("x".repeat(500)))]))
        .await
        .unwrap();
    let z = b
        .create(data(&[("k", serde_json::json!(1))]))
        .await
        .unwrap();
    b.load(&a.token).await.unwrap();
    b.load(&z.token).await.unwrap();
    b.load("garbage").await.unwrap_err();
    let c = b.counters();
    assert_eq!(c.client_bytes_count, 3);
    assert_eq!(
        c.client_bytes_sum,
        (a.token.len() + z.token.len() + 7) as u64
    );
    assert_eq!(
        metric(&c, "sealed_bytes_total", None),
        (a.token.len() + z.token.len()) as f64
    );
    assert_eq!(
        metric(&c, "largest_sealed_bytes", None),
        a.token.len() as f64
    );
}

#[test]
fn invalid_config_is_refused_with_the_field_name() {
    let err = CookieBackend::new(
        &CookieConfig::default().with_max_cookie_bytes(5000),
        ExpiryPolicy::default(),
        &KeyRing::generate(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("max_cookie_bytes"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// the axum layer

async fn big(session: Session) -> Result<&'static str, SessionError> {
    session.insert("big", &"z".repeat(5_000))?;
    Ok("stored")
}

async fn small(session: Session) -> Result<&'static str, SessionError> {
    session.insert("user", "alice")?;
    Ok("stored")
}

/// A handler that saves early to turn an oversized session into its own response.
async fn careful(session: Session) -> (StatusCode, String) {
    session.insert("notes", &"n".repeat(5_000)).unwrap();
    match session.save().await {
        Ok(()) => (StatusCode::OK, "saved".into()),
        Err(e @ SessionError::TooLarge { .. }) => (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn whoami(session: Session) -> Result<String, SessionError> {
    Ok(session
        .get::<String>("user")
        .await?
        .unwrap_or_else(|| "nobody".into()))
}

fn app(backend: Arc<dyn SessionBackend>) -> Router {
    Router::new()
        .route("/big", get(big))
        .route("/small", get(small))
        .route("/careful", get(careful))
        .route("/whoami", get(whoami))
        .layer(SessionLayer::with_config(
            backend,
            SessionConfig::default().with_secure(false),
        ))
}

async fn call(app: &Router, path: &str, cookie: Option<&str>) -> (StatusCode, Vec<String>, String) {
    let mut req = Request::builder().uri(path);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, format!("sid={c}"));
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let cookies = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, cookies, String::from_utf8(body.to_vec()).unwrap())
}

fn cookie_value(set_cookie: &str) -> &str {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("sid=")
        .unwrap()
}

#[tokio::test]
async fn the_layer_turns_too_large_into_a_clear_error_and_sets_no_cookie() {
    let app = app(Arc::new(backend(&KeyRing::generate())));
    let (status, cookies, body) = call(&app, "/big", None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        cookies.is_empty(),
        "a cookie was set for an unsaved session: {cookies:?}"
    );
    assert!(
        body.contains("too large") && body.contains("4096") && body.contains("a browser cookie"),
        "{body}"
    );

    let (status, cookies, body) = call(&app, "/careful", None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body.contains("too large"), "{body}");
    assert!(cookies.is_empty(), "{cookies:?}");

    // A normal session: the cookie round-trips through the browser.
    let (status, cookies, _) = call(&app, "/small", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cookies.len(), 1);
    assert!(
        cookies[0].contains("HttpOnly") && cookies[0].contains("Max-Age="),
        "{}",
        cookies[0]
    );
    let token = cookie_value(&cookies[0]).to_owned();
    let (_, cookies, body) = call(&app, "/whoami", Some(&token)).await;
    assert_eq!(body, "alice");
    assert!(cookies.is_empty(), "a read re-sealed: {cookies:?}");

    // A tampered cookie is "nobody" and gets cleared, never an error.
    let mut forged = token.into_bytes();
    let i = forged.len() / 2;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let (status, cookies, body) = call(&app, "/whoami", Some(&forged)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "nobody"));
    assert_eq!(cookies.len(), 1);
    assert!(cookies[0].starts_with("sid=;"), "{}", cookies[0]);
}
