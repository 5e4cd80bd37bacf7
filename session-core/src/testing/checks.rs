//! The checks of the conformance suite, one `async fn` each; the table in the parent module
//! names them and says when each applies.
//!
//! Past 600 lines because it is the suite's checks, one `async fn` each (over twenty); the helpers
//! at the top are shared by all of them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{BackendFactory, Capabilities, CheckOutcome, Harness};
use crate::backend::{Counters, SessionBackend};
use crate::clock::TestClock;
use crate::error::SessionError;
use crate::expiry::ExpiryPolicy;
use crate::keys::{KeyRing, Secret};
use crate::record::Delta;
use crate::session::{Commit, Session};

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

/// What a check runs with: the factory, what the backend can do, and how time passes.
pub(super) struct Ctx {
    factory: Arc<dyn BackendFactory>,
    caps: Capabilities,
    /// The session clock the check moves instead of waiting ([`TimeControl::Advanced`]);
    /// `None`: waits are tokio sleeps (real ones, or instant on a paused runtime).
    ///
    /// [`TimeControl::Advanced`]: super::TimeControl::Advanced
    clock: Option<TestClock>,
}

impl Ctx {
    pub(super) fn new(
        factory: Arc<dyn BackendFactory>,
        caps: Capabilities,
        clock: Option<TestClock>,
    ) -> Self {
        Ctx {
            factory,
            caps,
            clock,
        }
    }

    /// A fresh instance with a fresh key ring.
    async fn build(&self, p: ExpiryPolicy) -> Result<Harness, String> {
        self.build_keyed(p, &KeyRing::generate()).await
    }

    async fn build_keyed(&self, p: ExpiryPolicy, keys: &KeyRing) -> Result<Harness, String> {
        let h = self.factory.build(p, keys).await?;
        ensure!(!h.nodes.is_empty(), "the factory built no node");
        Ok(h)
    }

    /// Lets `d` of session time pass: moves the check's clock, or sleeps (on a paused runtime
    /// the sleep is an instant jump of tokio time, which the session clock follows).
    async fn pass(&self, d: Duration) {
        match &self.clock {
            Some(clock) => {
                clock.advance(d);
                tokio::task::yield_now().await;
            }
            None => tokio::time::sleep(d).await,
        }
    }
}

fn e<E: fmt::Display>(ctx: &'static str) -> impl FnOnce(E) -> String {
    move |err| format!("{ctx}: {err}")
}

/// A session handle without the layer's size caps: the suite tests what a backend stores
/// (values up to [`Capabilities::max_value_bytes`]), not the layer's policy.
fn unlimited_session(backend: Arc<dyn SessionBackend>, token: Option<String>) -> Session {
    Session::with_limits(
        backend,
        token.filter(|t| !t.is_empty()).map(Arc::from),
        crate::SessionLimits::UNLIMITED,
    )
}

// ---------------------------------------------------------------------------------------------
// helpers

fn long_policy() -> ExpiryPolicy {
    ExpiryPolicy::default()
}

fn policy(idle_ms: u64, absolute_ms: u64, touch: f64) -> Result<ExpiryPolicy, String> {
    ExpiryPolicy::new(
        Duration::from_millis(idle_ms),
        Duration::from_millis(absolute_ms),
    )
    .and_then(|p| p.with_touch_fraction(touch))
    .map_err(e("policy"))
}

/// Runs one request on `node`: `body` acts on the session, then the session is committed.
async fn request<F, Fut>(
    node: &Arc<dyn SessionBackend>,
    token: Option<&str>,
    body: F,
) -> Result<Commit, String>
where
    F: FnOnce(Session) -> Fut,
    Fut: std::future::Future<Output = Result<(), SessionError>>,
{
    let s = unlimited_session(node.clone(), token.map(str::to_owned));
    body(s.clone()).await.map_err(e("request body"))?;
    s.commit().await.map_err(e("commit"))
}

fn issued(c: Commit, what: &str) -> Result<String, String> {
    match c {
        Commit::Issue { token, .. } => Ok(token),
        other => Err(format!(
            "{what}: expected a token to be issued, got {other:?}"
        )),
    }
}

/// Creates a session on node 0 holding `pairs`, returning its token.
async fn create_with(h: &Harness, pairs: &[(&str, serde_json::Value)]) -> Result<String, String> {
    let pairs: Vec<(String, serde_json::Value)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let c = request(h.node(0), None, |s| async move {
        for (k, v) in &pairs {
            s.insert(k, v)?;
        }
        Ok(())
    })
    .await?;
    issued(c, "creating a session")
}

async fn read(
    node: &Arc<dyn SessionBackend>,
    token: &str,
    key: &str,
) -> Result<Option<serde_json::Value>, String> {
    let s = unlimited_session(node.clone(), Some(token.to_owned()));
    s.get(key).await.map_err(e("get"))
}

async fn exists(node: &Arc<dyn SessionBackend>, token: &str) -> Result<bool, String> {
    match node.load(token).await {
        Ok(Some(_)) => Ok(true),
        Ok(None) | Err(SessionError::InvalidToken(_)) => Ok(false),
        Err(err) => Err(format!("load failed: {err}")),
    }
}

fn writes(c: &Counters) -> u64 {
    c.creates + c.saves + c.cycles + c.destroys
}

// ---------------------------------------------------------------------------------------------
// checks

pub(super) async fn round_trip(cx: Ctx) -> CheckOutcome {
    let h = cx.build(long_policy()).await?;
    let token = create_with(&h, &[("user", json!("alice")), ("n", json!(42))]).await?;
    for i in 0..h.nodes.len() {
        let l = h
            .node(i)
            .load(&token)
            .await
            .map_err(e("load"))?
            .ok_or_else(|| format!("node {i}: a just-created session did not load"))?;
        ensure!(
            l.record
                .data
                .get_as::<String>("user")
                .map_err(e("decode"))?
                == Some("alice".into()),
            "node {i}: wrong user value"
        );
        ensure!(l.record.data.len() == 2, "node {i}: expected 2 keys");
        ensure!(
            l.record.created_at <= l.record.last_access
                && l.record.idle_deadline > l.record.created_at
                && l.record.absolute_deadline >= l.record.idle_deadline,
            "node {i}: inconsistent timestamps {:?}",
            (
                l.record.created_at,
                l.record.last_access,
                l.record.idle_deadline,
                l.record.absolute_deadline
            )
        );
    }
    Ok(())
}

pub(super) async fn typed_values(cx: Ctx) -> CheckOutcome {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Cart {
        items: Vec<(String, u32)>,
        note: Option<String>,
    }
    let h = cx.build(long_policy()).await?;
    let cart = Cart {
        items: vec![("sku-1".into(), 2), ("sku-2".into(), 1)],
        note: None,
    };
    let c = request(h.node(0), None, |s| {
        let r = s.insert("cart", &cart);
        async move { r }
    })
    .await?;
    let token = issued(c, "create")?;
    let s = unlimited_session(h.node(1).clone(), Some(token));
    let back: Option<Cart> = s.get("cart").await.map_err(e("get"))?;
    ensure!(
        back.as_ref() == Some(&cart),
        "typed value changed: {back:?}"
    );
    match s.get::<u64>("cart").await {
        Err(SessionError::Serde { key, .. }) if key == "cart" => Ok(()),
        other => Err(format!(
            "reading a value as the wrong type should be a Serde error, got {other:?}"
        )),
    }
}

pub(super) async fn delta_applies(cx: Ctx) -> CheckOutcome {
    let h = cx.build(long_policy()).await?;
    let token = create_with(
        &h,
        &[("a", json!(1)), ("b", json!(2)), ("keep", json!(true))],
    )
    .await?;
    let c = request(h.node(1), Some(&token), |s| async move {
        s.remove("a");
        s.insert("b", &3)?;
        s.insert("c", &"new")?;
        Ok(())
    })
    .await?;
    let token = issued(c, "saving a delta")?;
    h.settle().await;
    for i in 0..h.nodes.len() {
        let l = h
            .node(i)
            .load(&token)
            .await
            .map_err(e("load"))?
            .ok_or_else(|| format!("node {i}: session vanished after a save"))?;
        let got = l.record.data.to_json_object();
        ensure!(
            got == r#"{"b":3,"c":"new","keep":true}"#,
            "node {i}: after delta, data is {got}"
        );
        ensure!(l.record.version >= 2, "node {i}: version did not move");
    }
    Ok(())
}

pub(super) async fn unchanged_writes_nothing(cx: Ctx) -> CheckOutcome {
    let h = cx.build(long_policy()).await?;
    let token = create_with(&h, &[("user", json!("bob"))]).await?;
    let node = h.node(0);
    let version_before = node
        .load(&token)
        .await
        .map_err(e("load"))?
        .ok_or("session missing")?
        .record
        .version;
    let before = node.counters();
    for _ in 0..5 {
        let c = request(node, Some(&token), |s| async move {
            let _: Option<String> = s.get("user").await?;
            Ok(())
        })
        .await?;
        ensure!(c == Commit::Unchanged, "a read-only request produced {c:?}");
    }
    let after = node.counters();
    ensure!(
        writes(&after) == writes(&before),
        "read-only requests wrote: {} -> {} writes",
        writes(&before),
        writes(&after)
    );
    let version_after = node
        .load(&token)
        .await
        .map_err(e("load"))?
        .ok_or("session missing")?
        .record
        .version;
    ensure!(
        version_after == version_before,
        "version moved on reads: {version_before} -> {version_after}"
    );
    // A handler that never touches the session costs nothing at all.
    let before = node.counters();
    let c = request(node, Some(&token), |_| async { Ok(()) }).await?;
    let after = node.counters();
    ensure!(c == Commit::Unchanged, "untouched session produced {c:?}");
    ensure!(
        after.loads == before.loads
            && after.db_calls == before.db_calls
            && after.network_calls == before.network_calls,
        "an untouched session caused backend calls"
    );
    Ok(())
}

pub(super) async fn empty_not_persisted(cx: Ctx) -> CheckOutcome {
    let h = cx.build(long_policy()).await?;
    let node = h.node(0);
    let before = node.counters();
    let c = request(node, None, |s| async move {
        let _: Option<String> = s.get("user").await?;
        Ok(())
    })
    .await?;
    ensure!(
        c == Commit::Unchanged,
        "an empty new session produced {c:?}"
    );
    // Removing keys from a session that does not exist yet leaves nothing to persist either.
    let c = request(node, None, |s| async move {
        s.remove("user");
        Ok(())
    })
    .await?;
    ensure!(
        c == Commit::Unchanged,
        "a removal-only new session produced {c:?}"
    );
    ensure!(
        writes(&node.counters()) == writes(&before),
        "an empty session was persisted"
    );
    Ok(())
}

pub(super) async fn touch_when_due(cx: Ctx) -> CheckOutcome {
    // touch_fraction 0: every read is due for a touch, which must move the idle deadline.
    let h = cx.build(policy(60_000, 600_000, 0.0)?).await?;
    let token = create_with(&h, &[("k", json!(1))]).await?;
    let node = h.node(0);
    let before = node
        .load(&token)
        .await
        .map_err(e("load"))?
        .ok_or("missing")?
        .record;
    cx.pass(Duration::from_millis(30)).await;
    let c = request(node, Some(&token), |s| async move {
        let _: Option<u64> = s.get("k").await?;
        Ok(())
    })
    .await?;
    let token = issued(c, "a due touch")?;
    h.settle().await;
    let after = node
        .load(&token)
        .await
        .map_err(e("load"))?
        .ok_or("missing after touch")?
        .record;
    ensure!(
        after.idle_deadline > before.idle_deadline,
        "touch did not move the idle deadline ({} -> {})",
        before.idle_deadline,
        after.idle_deadline
    );
    ensure!(
        after.data.get_as::<u64>("k").map_err(e("decode"))? == Some(1),
        "touch changed the data"
    );
    Ok(())
}

pub(super) async fn concurrent_disjoint(cx: Ctx) -> CheckOutcome {
    let h = cx.build(long_policy()).await?;
    let token = create_with(&h, &[("base", json!(0))]).await?;
    h.settle().await;
    for round in 0..10 {
        let (t1, t2) = (token.clone(), token.clone());
        let (a, b) = (h.node(round).clone(), h.node(round + 1).clone());
        let ka = format!("a{round}");
        let kb = format!("b{round}");
        // Both requests load before either writes: the classic lost-update interleaving.
        let sa = unlimited_session(a, Some(t1));
        let sb = unlimited_session(b, Some(t2));
        sa.get::<serde_json::Value>("base")
            .await
            .map_err(e("load a"))?;
        sb.get::<serde_json::Value>("base")
            .await
            .map_err(e("load b"))?;
        sa.insert(&ka, &round).map_err(e("insert"))?;
        sb.insert(&kb, &round).map_err(e("insert"))?;
        let (ra, rb) = tokio::join!(sa.commit(), sb.commit());
        ra.map_err(e("commit a"))?;
        rb.map_err(e("commit b"))?;
        h.settle().await;
        for i in 0..h.nodes.len() {
            for k in [&ka, &kb] {
                ensure!(
                    read(h.node(i), &token, k).await?.is_some(),
                    "round {round}: node {i} lost the write to {k}"
                );
            }
        }
    }
    Ok(())
}

pub(super) async fn concurrent_same_key(cx: Ctx) -> CheckOutcome {
    let h = cx.build(long_policy()).await?;
    let token = create_with(&h, &[("k", json!("start"))]).await?;
    h.settle().await;
    for round in 0..5 {
        let sa = unlimited_session(h.node(round).clone(), Some(token.clone()));
        let sb = unlimited_session(h.node(round + 1).clone(), Some(token.clone()));
        sa.get::<serde_json::Value>("k")
            .await
            .map_err(e("load a"))?;
        sb.get::<serde_json::Value>("k")
            .await
            .map_err(e("load b"))?;
        sa.insert("k", &format!("a{round}")).map_err(e("insert"))?;
        sb.insert("k", &format!("b{round}")).map_err(e("insert"))?;
        let (ra, rb) = tokio::join!(sa.commit(), sb.commit());
        ra.map_err(e("commit a"))?;
        rb.map_err(e("commit b"))?;
        h.settle().await;
        let mut seen = Vec::new();
        for i in 0..h.nodes.len() {
            seen.push(read(h.node(i), &token, "k").await?);
        }
        let first = seen[0].clone();
        ensure!(
            seen.iter().all(|v| *v == first),
            "round {round}: copies disagree: {seen:?}"
        );
        ensure!(
            first == Some(json!(format!("a{round}"))) || first == Some(json!(format!("b{round}"))),
            "round {round}: final value {first:?} is neither write"
        );
    }
    Ok(())
}

pub(super) async fn destroy(cx: Ctx) -> CheckOutcome {
    let h = cx.build(long_policy()).await?;
    let token = create_with(&h, &[("user", json!("carol"))]).await?;
    h.settle().await;
    let c = request(h.node(1), Some(&token), |s| async move {
        let _: Option<String> = s.get("user").await?;
        s.destroy();
        Ok(())
    })
    .await?;
    ensure!(
        c == Commit::Clear,
        "destroy should clear the token, got {c:?}"
    );
    if cx.caps.server_side {
        h.settle().await;
        for i in 0..h.nodes.len() {
            ensure!(
                !exists(h.node(i), &token).await?,
                "node {i}: destroyed session still loads"
            );
        }
    }
    // Destroy then insert starts a separate, new session.
    let c = request(h.node(0), None, |s| async move {
        s.insert("x", &1)?;
        Ok(())
    })
    .await?;
    let t2 = issued(c, "create")?;
    let c = request(h.node(0), Some(&t2), |s| async move {
        s.destroy();
        s.insert("flash", &"bye")?;
        Ok(())
    })
    .await?;
    let t3 = issued(c, "destroy then insert")?;
    ensure!(t3 != t2, "destroy-then-insert reused the old token");
    let l = h
        .node(0)
        .load(&t3)
        .await
        .map_err(e("load"))?
        .ok_or("new session missing")?;
    ensure!(
        l.record.data.to_json_object() == r#"{"flash":"bye"}"#,
        "new session carried old data: {}",
        l.record.data.to_json_object()
    );
    Ok(())
}

pub(super) async fn save_after_destroy(cx: Ctx) -> CheckOutcome {
    let h = cx.build(long_policy()).await?;
    let token = create_with(&h, &[("user", json!("dave"))]).await?;
    h.settle().await;
    let slow = unlimited_session(h.node(0).clone(), Some(token.clone()));
    let _: Option<String> = slow.get("user").await.map_err(e("load"))?;
    request(h.node(1), Some(&token), |s| async move {
        let _: Option<String> = s.get("user").await?;
        s.destroy();
        Ok(())
    })
    .await?;
    h.settle().await;
    slow.insert("cart", &1).map_err(e("insert"))?;
    match slow.commit().await {
        Err(SessionError::Gone) => {}
        other => {
            return Err(format!(
                "saving to a destroyed session gave {other:?}, not Gone"
            ));
        }
    }
    h.settle().await;
    for i in 0..h.nodes.len() {
        ensure!(
            !exists(h.node(i), &token).await?,
            "node {i}: a save after destroy resurrected the session"
        );
    }
    Ok(())
}

pub(super) async fn idle_expiry(cx: Ctx) -> CheckOutcome {
    let h = cx.build(policy(1_000, 60_000, 0.25)?).await?;
    let token = create_with(&h, &[("k", json!(1))]).await?;
    h.settle().await;
    ensure!(
        exists(h.node(1), &token).await?,
        "session missing before expiry"
    );
    cx.pass(Duration::from_millis(1_600)).await;
    for i in 0..h.nodes.len() {
        ensure!(
            !exists(h.node(i), &token).await?,
            "node {i}: session idle past its deadline still loads"
        );
        ensure!(
            read(h.node(i), &token, "k").await?.is_none(),
            "node {i}: expired value readable"
        );
    }
    Ok(())
}

pub(super) async fn reads_keep_alive(cx: Ctx) -> CheckOutcome {
    let h = cx.build(policy(1_500, 60_000, 0.25)?).await?;
    let mut token = create_with(&h, &[("k", json!(1))]).await?;
    h.settle().await;
    // Read every 300 ms for 3.6 s (more than twice the idle timeout), alternating nodes.
    for i in 0..12 {
        cx.pass(Duration::from_millis(300)).await;
        let c = request(h.node(i), Some(&token), |s| async move {
            let v: Option<u64> = s.get("k").await?;
            if v != Some(1) {
                return Err(SessionError::backend_msg("test", "value missing"));
            }
            Ok(())
        })
        .await
        .map_err(|m| format!("read {i}: {m}"))?;
        if let Commit::Issue { token: t, .. } = c {
            token = t;
        }
        h.settle().await;
    }
    for i in 0..h.nodes.len() {
        ensure!(
            exists(h.node(i), &token).await?,
            "node {i}: an actively read session expired"
        );
    }
    Ok(())
}

pub(super) async fn absolute_expiry(cx: Ctx) -> CheckOutcome {
    let h = cx.build(policy(60_000, 1_200, 0.0)?).await?;
    let mut token = create_with(&h, &[("k", json!(1))]).await?;
    // A read every 200 ms for 1.8 s: active all along, and past the absolute deadline.
    for _ in 0..9 {
        cx.pass(Duration::from_millis(200)).await;
        let c = request(h.node(0), Some(&token), |s| async move {
            let _: Option<u64> = s.get("k").await?;
            Ok(())
        })
        .await?;
        if let Commit::Issue { token: t, .. } = c {
            token = t;
        }
    }
    h.settle().await;
    for i in 0..h.nodes.len() {
        ensure!(
            !exists(h.node(i), &token).await?,
            "node {i}: session outlived its absolute timeout despite activity"
        );
    }
    Ok(())
}

/// A request loads a session, and its idle deadline passes before the request saves: the save
/// (a delta, a touch or an id cycle) is `Gone`, and it does not bring the session back on any
/// node.
pub(super) async fn save_after_expiry(cx: Ctx) -> CheckOutcome {
    let h = cx.build(policy(1_000, 60_000, 0.25)?).await?;
    let token = create_with(&h, &[("cart", json!([1]))]).await?;
    h.settle().await;
    let slow = unlimited_session(h.node(0).clone(), Some(token.clone()));
    let cart: Option<serde_json::Value> = slow.get("cart").await.map_err(e("load"))?;
    ensure!(
        cart == Some(json!([1])),
        "the new session read back {cart:?}"
    );
    let other = h.node(1).clone();
    let loaded = other
        .load(&token)
        .await
        .map_err(e("load"))?
        .ok_or("the new session did not load on the second node")?;
    cx.pass(Duration::from_millis(1_500)).await;
    slow.insert("cart", &json!([1, 2])).map_err(e("insert"))?;
    match slow.commit().await {
        Err(SessionError::Gone) => {}
        other => {
            return Err(format!(
                "saving a delta to a session that expired in flight gave {other:?}, not Gone"
            ));
        }
    }
    match other.save(&loaded, &Delta::default()).await {
        Err(SessionError::Gone) => {}
        other => {
            return Err(format!(
                "touching a session that expired in flight gave {other:?}, not Gone"
            ));
        }
    }
    match other.cycle_id(&loaded, &Delta::default()).await {
        Err(SessionError::Gone) => {}
        other => {
            return Err(format!(
                "cycling the id of a session that expired in flight gave {other:?}, not Gone"
            ));
        }
    }
    h.settle().await;
    for i in 0..h.nodes.len() {
        ensure!(
            !exists(h.node(i), &token).await?,
            "node {i}: a save after expiry resurrected the session"
        );
        ensure!(
            read(h.node(i), &token, "cart").await?.is_none(),
            "node {i}: the expired session's value is readable after the refused saves"
        );
    }
    Ok(())
}

pub(super) async fn cycle_id(cx: Ctx) -> CheckOutcome {
    let h = cx.build(long_policy()).await?;
    let old = create_with(&h, &[("cart", json!(["x"]))]).await?;
    h.settle().await;
    let old_id = h
        .node(1)
        .load(&old)
        .await
        .map_err(e("load"))?
        .ok_or("missing")?
        .record
        .id;
    let c = request(h.node(1), Some(&old), |s| async move {
        s.insert("user", &"erin")?;
        s.cycle_id();
        Ok(())
    })
    .await?;
    let new = issued(c, "cycle")?;
    ensure!(new != old, "cycling kept the same token");
    h.settle().await;
    for i in 0..h.nodes.len() {
        let l = h
            .node(i)
            .load(&new)
            .await
            .map_err(e("load new"))?
            .ok_or_else(|| format!("node {i}: cycled session missing"))?;
        ensure!(l.record.id != old_id, "node {i}: id did not change");
        ensure!(
            l.record.data.to_json_object() == r#"{"cart":["x"],"user":"erin"}"#,
            "node {i}: data after cycle is {}",
            l.record.data.to_json_object()
        );
        if cx.caps.server_side {
            ensure!(
                !exists(h.node(i), &old).await?,
                "node {i}: the old token still loads after cycling"
            );
        }
    }
    Ok(())
}

pub(super) async fn bad_tokens(cx: Ctx) -> CheckOutcome {
    let h = cx.build(long_policy()).await?;
    let good = create_with(&h, &[("k", json!(1))]).await?;
    h.settle().await;
    let mut bad: Vec<String> = vec![
        String::new(),
        "x".into(),
        "!!!!not-base64!!!!".into(),
        "A".repeat(300),
        "A".repeat(5000),
        "\u{0}\u{1}\u{2}".into(),
        "ключ🔑".into(),
        good[..good.len() / 2].to_string(),
        format!("{good}AAAA"),
        format!("{good}."),
    ];
    // Every single-character substitution at a few positions.
    for pos in [0, good.len() / 3, good.len() / 2, good.len() - 1] {
        let mut forged = good.clone().into_bytes();
        forged[pos] = if forged[pos] == b'A' { b'B' } else { b'A' };
        bad.push(String::from_utf8_lossy(&forged).into_owned());
    }
    for i in 0..h.nodes.len() {
        for t in &bad {
            no_session_without_io(h.node(i), t, "k", Refusal::InvalidOrNone)
                .await
                .map_err(|m| {
                    let t: String = t.chars().take(40).collect();
                    format!("node {i}, the bad token {t:?}: {m}")
                })?;
        }
    }
    ensure!(
        exists(h.node(0), &good).await?,
        "the good token stopped working"
    );
    Ok(())
}

/// Key rotation, as a rolling deploy does it: a session created under key A is read by nodes
/// whose ring became [B, A] (same sessions): it opens, is flagged for re-issue, and the next
/// commit of even a read-only request issues a token signed with B, which a further read does
/// not re-issue again. Once A is retired (ring [B]) the re-issued tokens open and A's are
/// refused as invalid before any I/O; nodes that never knew B refuse B's tokens the same way.
pub(super) async fn key_rotation(cx: Ctx) -> CheckOutcome {
    let (a, b) = (Secret::generate(), Secret::generate());
    let ring = |secrets: &[&Secret]| {
        KeyRing::new(secrets.iter().map(|s| (*s).clone())).map_err(e("key ring"))
    };
    let before = cx.build_keyed(long_policy(), &ring(&[&a])?).await?;
    let old = create_with(&before, &[("user", json!("ann"))]).await?;
    before.settle().await;

    let during = before.rebuild_with_keys(&ring(&[&b, &a])?).await?;
    during.settle().await;
    let mut fresh = Vec::new();
    for i in 0..during.nodes.len() {
        let node = during.node(i);
        let l = node
            .load(&old)
            .await
            .map_err(|err| format!("node {i} with ring [B, A]: loading an A token: {err}"))?
            .ok_or_else(|| {
                format!("node {i}: a token signed with the old key is no session after rotation")
            })?;
        ensure!(
            l.reissue,
            "node {i}: a token signed with the second key of the ring is not flagged for re-issue"
        );
        let c = request(node, Some(&old), |s| async move {
            let user: Option<String> = s.get("user").await?;
            if user.as_deref() != Some("ann") {
                return Err(SessionError::backend_msg(
                    "test",
                    "the session's value is lost",
                ));
            }
            Ok(())
        })
        .await
        .map_err(|m| format!("node {i}: a read with an A token: {m}"))?;
        let t = issued(
            c,
            "a read-only request with a token signed with the old key",
        )?;
        ensure!(t != old, "node {i}: the re-issued token is the old one");
        fresh.push(t);
    }
    during.settle().await;
    for (i, t) in fresh.iter().enumerate() {
        let c = request(during.node(i), Some(t), |s| async move {
            let _: Option<String> = s.get("user").await?;
            Ok(())
        })
        .await?;
        ensure!(
            c == Commit::Unchanged,
            "node {i}: a read with a freshly re-issued token produced {c:?} (re-issued again?)"
        );
    }

    let after = during.rebuild_with_keys(&ring(&[&b])?).await?;
    after.settle().await;
    for i in 0..after.nodes.len() {
        let node = after.node(i);
        for t in &fresh {
            ensure!(
                read(node, t, "user").await? == Some(json!("ann")),
                "node {i} with ring [B]: a re-issued token does not open (not signed with B?)"
            );
        }
        no_session_without_io(node, &old, "user", Refusal::Invalid)
            .await
            .map_err(|m| format!("node {i} with ring [B], a token signed with A: {m}"))?;
    }
    for i in 0..before.nodes.len() {
        no_session_without_io(before.node(i), &fresh[0], "user", Refusal::Invalid)
            .await
            .map_err(|m| format!("node {i} with ring [A], a token signed with B: {m}"))?;
    }
    Ok(())
}

/// How `load` may answer a token that must not open a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// `InvalidToken`, or "no session" (garbage that a backend may decode to no lookup).
    InvalidOrNone,
    /// Only `InvalidToken` (a well-formed token signed with a key the node does not have).
    Invalid,
}

/// `token` opens no session on `node`: `load` refuses it as `refusal` allows, a request
/// carrying it sees no value of `key` and clears the token or leaves it, and neither costs any
/// I/O.
async fn no_session_without_io(
    node: &Arc<dyn SessionBackend>,
    token: &str,
    key: &'static str,
    refusal: Refusal,
) -> CheckOutcome {
    let before = node.counters();
    match node.load(token).await {
        Err(SessionError::InvalidToken(_)) => {}
        Ok(None) if refusal == Refusal::InvalidOrNone => {}
        Ok(None) => return Err("loaded as \"no session\" instead of an invalid token".into()),
        Ok(Some(_)) => return Err("it loaded a session".into()),
        Err(err) => return Err(format!("loading it failed: {err}")),
    }
    let c = request(node, Some(token), |s| async move {
        let v: Option<serde_json::Value> = s.get(key).await?;
        if v.is_some() {
            return Err(SessionError::backend_msg("test", "the token saw data"));
        }
        Ok(())
    })
    .await?;
    ensure!(
        matches!(c, Commit::Clear | Commit::Unchanged),
        "a request carrying it produced {c:?}"
    );
    let after = node.counters();
    ensure!(
        after.network_calls == before.network_calls && after.db_calls == before.db_calls,
        "it caused I/O (N {} -> {}, D {} -> {})",
        before.network_calls,
        after.network_calls,
        before.db_calls,
        after.db_calls
    );
    Ok(())
}

pub(super) async fn large_values(cx: Ctx) -> CheckOutcome {
    let h = cx.build(long_policy()).await?;
    // A JSON string of exactly max_value_bytes bytes (including its quotes).
    let text: String = "ü".repeat((cx.caps.max_value_bytes - 2) / 2);
    let c = request(h.node(0), None, |s| {
        let r = s.insert("big", &text);
        async move { r }
    })
    .await?;
    let token = issued(c, "create with a large value")?;
    h.settle().await;
    let back = read(h.node(1), &token, "big").await?;
    ensure!(
        back.as_ref().and_then(|v| v.as_str()) == Some(text.as_str()),
        "a {}-byte value did not round-trip",
        cx.caps.max_value_bytes
    );
    Ok(())
}

pub(super) async fn unicode_keys(cx: Ctx) -> CheckOutcome {
    let h = cx.build(long_policy()).await?;
    let keys = [
        "ключ",
        "🔑",
        "",
        "a.b:c/d",
        "with space",
        "\"quoted\"",
        "new\nline",
        "日本語",
    ];
    let c = request(h.node(0), None, |s| async move {
        for (i, k) in keys.iter().enumerate() {
            s.insert(k, &i)?;
        }
        Ok(())
    })
    .await?;
    let token = issued(c, "create")?;
    h.settle().await;
    for (i, k) in keys.iter().enumerate() {
        let v = read(h.node(1), &token, k).await?;
        ensure!(v == Some(json!(i)), "key {k:?} came back as {v:?}");
    }
    // Remove a unicode key through a delta.
    let c = request(h.node(1), Some(&token), |s| async move {
        s.remove("🔑");
        Ok(())
    })
    .await?;
    let token = issued(c, "delta")?;
    h.settle().await;
    ensure!(
        read(h.node(0), &token, "🔑").await?.is_none(),
        "unicode key not removed"
    );
    ensure!(
        read(h.node(0), &token, "ключ").await? == Some(json!(0)),
        "sibling unicode key lost"
    );
    Ok(())
}

pub(super) async fn client_bytes(cx: Ctx) -> CheckOutcome {
    let h = cx.build(long_policy()).await?;
    let token = create_with(&h, &[("k", json!(1))]).await?;
    let node = h.node(0);
    let before = node.counters();
    node.load(&token).await.map_err(e("load"))?;
    let after = node.counters();
    ensure!(
        after.client_bytes_sum - before.client_bytes_sum == token.len() as u64
            && after.client_bytes_count == before.client_bytes_count + 1,
        "loading a {}-byte token recorded {} bytes over {} requests",
        token.len(),
        after.client_bytes_sum - before.client_bytes_sum,
        after.client_bytes_count - before.client_bytes_count
    );
    Ok(())
}

/// The store becomes unreachable for one node: a read of an existing session there is
/// `Unavailable` (the user is not logged out), a write is refused as `Unavailable` (nothing is
/// applied), and once the store is back the session is intact. Skipped for a backend without a
/// separate store to lose.
pub(super) async fn store_outage(cx: Ctx) -> CheckOutcome {
    let h = cx.build(long_policy()).await?;
    let Some(outage) = h.outage.clone() else {
        return Err(
            "the harness has no outage hook (set Capabilities::outage_skip to skip)".into(),
        );
    };
    let token = create_with(&h, &[("user", json!("alice")), ("n", json!(1))]).await?;
    h.settle().await;
    let last = h.nodes.len() - 1;
    let reader = h.node(last).clone();
    let before = reader.counters();
    outage(true).await;
    let result: CheckOutcome = async {
        match reader.load(&token).await {
            Err(SessionError::Unavailable { .. }) => ensure!(
                reader.counters().unavailable_reads > before.unavailable_reads,
                "an Unavailable load was not counted in unavailable_reads"
            ),
            Ok(None) => return Err("during the outage the session read as \"no session\"".into()),
            Ok(Some(_)) => return Err("during the outage the session was served".into()),
            Err(other) => return Err(format!("during the outage: {other} instead of Unavailable")),
        }
        let mid = reader.counters();
        let s = unlimited_session(reader.clone(), Some(token.clone()));
        s.insert("n", &2).map_err(e("insert"))?;
        match s.commit().await {
            Err(SessionError::Unavailable { .. }) => {
                // The commit loads first; when that load is what failed, it counts as a read.
                let now = reader.counters();
                ensure!(
                    now.unavailable_writes + now.unavailable_reads
                        > mid.unavailable_writes + mid.unavailable_reads,
                    "an Unavailable commit was counted neither in unavailable_writes nor in \
                     unavailable_reads"
                );
                Ok(())
            }
            Ok(c) => Err(format!("a write during the outage was acknowledged: {c:?}")),
            Err(other) => Err(format!(
                "a write during the outage: {other} instead of Unavailable"
            )),
        }
    }
    .await;
    outage(false).await;
    result?;
    // Back: the session is intact and the refused write was not applied.
    let mut last_err = String::new();
    for _ in 0..200 {
        match read(&reader, &token, "n").await {
            Ok(Some(v)) => {
                ensure!(
                    v == json!(1),
                    "after the outage n = {v}, the refused write leaked"
                );
                ensure!(
                    read(&reader, &token, "user").await? == Some(json!("alice")),
                    "the session lost its data in the outage"
                );
                return Ok(());
            }
            Ok(None) => return Err("after the outage the session is gone".into()),
            Err(e) => last_err = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "the session never came back after the outage: {last_err}"
    ))
}
