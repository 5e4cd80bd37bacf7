//! The conformance suite: one set of behaviour checks every [`SessionBackend`] must pass.
//!
//! A backend crate implements [`BackendFactory`] (how to build a fresh, isolated instance of
//! the backend, possibly several nodes sharing state) and calls [`run`]; the returned
//! [`Report`] lists every check as passed, failed (with the reason) or skipped (with the reason
//! the check cannot apply to this kind of backend).
//!
//! ```
//! use std::sync::Arc;
//! use session_core::testing::{run, BackendFactory, Capabilities, Harness};
//! use session_core::{ExpiryPolicy, KeyRing, MemoryBackend};
//!
//! struct Memory;
//! #[async_trait::async_trait]
//! impl BackendFactory for Memory {
//!     fn name(&self) -> String { "memory".into() }
//!     fn capabilities(&self) -> Capabilities { Capabilities::server_side().in_process() }
//!     async fn build(&self, policy: ExpiryPolicy) -> Result<Harness, String> {
//!         Ok(Harness::single(Arc::new(MemoryBackend::new(policy, &KeyRing::generate()))))
//!     }
//! }
//! # #[tokio::main] async fn main() {
//! run(Arc::new(Memory)).await.assert_passed();
//! # }
//! ```
//!
//! Every check runs in its own task with a time limit, so a panic or a hang in the backend is
//! reported as that check's failure instead of aborting the suite.

pub mod golden;
mod proxy;
pub use proxy::{TcpProxy, url_addr, with_host_port};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::json;

use crate::backend::{Counters, SessionBackend};
use crate::error::SessionError;
use crate::expiry::ExpiryPolicy;
use crate::session::{Commit, Session};

/// What kind of backend is under test; checks that cannot apply are skipped with a reason.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// Sessions live on the server side. When false (the sealed-cookie backend) the client holds
    /// the only copy, so a destroyed or cycled session's old token cannot be killed on the server,
    /// two concurrent requests cannot merge (the last cookie the browser receives wins), and
    /// values are bounded by the 4096-byte cookie limit.
    pub server_side: bool,
    /// The largest single value the backend must store (64 KiB for server-side backends).
    pub max_value_bytes: usize,
    /// Why the outage check does not apply (`None`: the harness has an [`OutageFn`] that cuts
    /// a node off from where the sessions are kept).
    pub outage_skip: Option<&'static str>,
}

impl Capabilities {
    /// A server-side backend: every check applies, 64 KiB values.
    pub fn server_side() -> Self {
        Capabilities {
            server_side: true,
            max_value_bytes: 64 * 1024,
            outage_skip: None,
        }
    }

    /// The same, with the outage check skipped for `reason`.
    pub fn without_outage(self, reason: &'static str) -> Self {
        Capabilities {
            outage_skip: Some(reason),
            ..self
        }
    }

    /// The same, for a backend whose only store is the serving process itself (an in-process
    /// map, a single instant-copy node): nothing to lose contact with.
    pub fn in_process(self) -> Self {
        Capabilities {
            outage_skip: Some(SKIP_NO_STORE),
            ..self
        }
    }

    /// A client-side (sealed cookie) backend with the given largest value.
    pub fn client_side(max_value_bytes: usize) -> Self {
        Capabilities {
            server_side: false,
            max_value_bytes,
            outage_skip: Some(SKIP_NO_STORE),
        }
    }
}

/// Waits until replication has delivered everything in flight (multi-node backends).
pub type SettleFn = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Takes the store away from the harness's last node (`true`) or gives it back (`false`): for
/// SQL or Redis, the server stops answering; for instant copy, the last node loses its links to
/// every holder (and its own copies, so it cannot answer from memory). While it lasts, a read
/// of an existing session on the last node must be `SessionError::Unavailable`, never "no
/// session".
pub type OutageFn = Arc<dyn Fn(bool) -> BoxFuture<'static, ()> + Send + Sync>;

/// One built instance of a backend under test: one or more nodes that share sessions.
#[derive(Clone)]
pub struct Harness {
    /// The nodes. Single-store backends give one node, or several handles on one store.
    pub nodes: Vec<Arc<dyn SessionBackend>>,
    /// Called after writes before checking other nodes; `None` means writes are visible at once.
    pub settle: Option<SettleFn>,
    /// Makes the store unreachable for the last node, and back (`None`: the backend has no
    /// separate store to lose, such as the sealed cookie).
    pub outage: Option<OutageFn>,
}

impl Harness {
    /// A harness of one node whose writes are visible at once.
    pub fn single(backend: Arc<dyn SessionBackend>) -> Self {
        Harness {
            nodes: vec![backend],
            settle: None,
            outage: None,
        }
    }

    /// The same harness with an outage hook.
    pub fn with_outage(mut self, outage: OutageFn) -> Self {
        self.outage = Some(outage);
        self
    }

    fn node(&self, i: usize) -> &Arc<dyn SessionBackend> {
        &self.nodes[i % self.nodes.len()]
    }

    async fn settle(&self) {
        if let Some(s) = &self.settle {
            s().await;
        }
    }
}

/// Builds fresh, isolated instances of a backend for the suite.
#[async_trait]
pub trait BackendFactory: Send + Sync + 'static {
    /// Name shown in the report.
    fn name(&self) -> String;
    /// What the backend can do.
    fn capabilities(&self) -> Capabilities;
    /// A fresh instance enforcing `policy`, isolated from every other instance's sessions.
    async fn build(&self, policy: ExpiryPolicy) -> Result<Harness, String>;
    /// Called once after all checks (drop schemas, delete key prefixes, stop nodes).
    async fn teardown(&self) {}
}

/// The factory for the in-crate reference backend ([`MemoryBackend`](crate::MemoryBackend)).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryFactory;

#[async_trait]
impl BackendFactory for MemoryFactory {
    fn name(&self) -> String {
        "memory (reference)".into()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::server_side().in_process()
    }
    async fn build(&self, policy: ExpiryPolicy) -> Result<Harness, String> {
        Ok(Harness::single(Arc::new(crate::MemoryBackend::new(
            policy,
            &crate::KeyRing::generate(),
        ))))
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The backend behaved as the contract says.
    Passed,
    /// It did not; the message says how.
    Failed(String),
    /// The check does not apply to this kind of backend; the message says why.
    Skipped(&'static str),
}

/// One check's name and outcome.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// The check's name.
    pub name: &'static str,
    /// What happened.
    pub outcome: Outcome,
}

/// All checks' outcomes for one backend.
#[derive(Debug, Clone)]
pub struct Report {
    /// The factory's name.
    pub backend: String,
    /// One entry per check, in order.
    pub results: Vec<CheckResult>,
}

impl Report {
    /// The checks that failed.
    pub fn failures(&self) -> Vec<&CheckResult> {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .collect()
    }

    /// The outcome of the check called `name`.
    pub fn outcome(&self, name: &str) -> Option<&Outcome> {
        self.results
            .iter()
            .find(|r| r.name == name)
            .map(|r| &r.outcome)
    }

    /// Panics with the whole report if any check failed.
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(self.failures().is_empty(), "conformance failures:\n{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "conformance report for {}", self.backend)?;
        for r in &self.results {
            match &r.outcome {
                Outcome::Passed => writeln!(f, "  pass  {}", r.name)?,
                Outcome::Failed(m) => writeln!(f, "  FAIL  {}: {m}", r.name)?,
                Outcome::Skipped(m) => writeln!(f, "  skip  {}: {m}", r.name)?,
            }
        }
        Ok(())
    }
}

/// Where the test suites find PostgreSQL when `DATABASE_URL` is not set (matches
/// `docker-compose.yml`).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Where the test suites find Redis when `REDIS_URL` is not set (matches `docker-compose.yml`).
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// `DATABASE_URL`, or [`DEFAULT_DATABASE_URL`].
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
}

/// `REDIS_URL`, or [`DEFAULT_REDIS_URL`].
pub fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned())
}

/// A short name unique to this run and call (`t<pid>_<random>`), lower-case ASCII, for schema
/// names and key prefixes: the shared servers keep state between runs, so tests isolate
/// themselves and clean up.
pub fn unique_name(prefix: &str) -> String {
    let mut r = [0u8; 5];
    crate::fill_random(&mut r);
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}_{}_{hex}", std::process::id())
}

type CheckResultT = Result<(), String>;
type CheckFn = fn(Arc<dyn BackendFactory>, Capabilities) -> BoxFuture<'static, CheckResultT>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

fn e<E: fmt::Display>(ctx: &'static str) -> impl FnOnce(E) -> String {
    move |err| format!("{ctx}: {err}")
}

const SKIP_CLIENT_SIDE: &str = "client-side state: the client holds the only copy, so the server \
                                cannot invalidate or merge it (documented trade-off)";

/// Every check in the suite, by name.
pub const CHECKS: &[&str] = &[
    "round_trip",
    "typed_values",
    "delta_applies_set_and_remove",
    "unchanged_request_writes_nothing",
    "empty_new_session_is_not_persisted",
    "touch_when_due",
    "concurrent_disjoint_writes_survive",
    "concurrent_same_key_converges",
    "destroy",
    "save_after_destroy_is_gone",
    "idle_expiry",
    "reads_keep_session_alive",
    "absolute_expiry",
    "cycle_id",
    "bad_tokens_are_no_session_without_io",
    "large_values",
    "unicode_keys",
    "client_bytes_counted",
    "store_outage_is_unavailable",
];

fn check_fn(name: &str) -> Option<CheckFn> {
    Some(match name {
        "round_trip" => |f, c| Box::pin(round_trip(f, c)),
        "typed_values" => |f, c| Box::pin(typed_values(f, c)),
        "delta_applies_set_and_remove" => |f, c| Box::pin(delta_applies(f, c)),
        "unchanged_request_writes_nothing" => |f, c| Box::pin(unchanged_writes_nothing(f, c)),
        "empty_new_session_is_not_persisted" => |f, c| Box::pin(empty_not_persisted(f, c)),
        "touch_when_due" => |f, c| Box::pin(touch_when_due(f, c)),
        "concurrent_disjoint_writes_survive" => |f, c| Box::pin(concurrent_disjoint(f, c)),
        "concurrent_same_key_converges" => |f, c| Box::pin(concurrent_same_key(f, c)),
        "destroy" => |f, c| Box::pin(destroy(f, c)),
        "save_after_destroy_is_gone" => |f, c| Box::pin(save_after_destroy(f, c)),
        "idle_expiry" => |f, c| Box::pin(idle_expiry(f, c)),
        "reads_keep_session_alive" => |f, c| Box::pin(reads_keep_alive(f, c)),
        "absolute_expiry" => |f, c| Box::pin(absolute_expiry(f, c)),
        "cycle_id" => |f, c| Box::pin(cycle_id(f, c)),
        "bad_tokens_are_no_session_without_io" => |f, c| Box::pin(bad_tokens(f, c)),
        "large_values" => |f, c| Box::pin(large_values(f, c)),
        "unicode_keys" => |f, c| Box::pin(unicode_keys(f, c)),
        "client_bytes_counted" => |f, c| Box::pin(client_bytes(f, c)),
        "store_outage_is_unavailable" => |f, c| Box::pin(store_outage(f, c)),
        _ => return None,
    })
}

const SKIP_NO_STORE: &str = "no separate store: the sessions live in the serving process (or the \
                             client), so there is nothing a node can lose contact with";

fn skip_reason(name: &str, caps: Capabilities) -> Option<&'static str> {
    if name == "store_outage_is_unavailable"
        && let Some(reason) = caps.outage_skip
    {
        return Some(reason);
    }
    if caps.server_side {
        return None;
    }
    match name {
        "concurrent_disjoint_writes_survive"
        | "concurrent_same_key_converges"
        | "save_after_destroy_is_gone" => Some(SKIP_CLIENT_SIDE),
        _ => None,
    }
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

/// Time limit for one check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs every check against the factory's backend.
pub async fn run(factory: Arc<dyn BackendFactory>) -> Report {
    run_checks(factory, CHECKS).await
}

/// Runs the named checks (unknown names fail) against the factory's backend.
pub async fn run_checks(factory: Arc<dyn BackendFactory>, names: &[&'static str]) -> Report {
    let caps = factory.capabilities();
    let mut results = Vec::new();
    for &name in names {
        let outcome = if let Some(reason) = skip_reason(name, caps) {
            Outcome::Skipped(reason)
        } else if let Some(check) = check_fn(name) {
            let task = tokio::spawn(tokio::time::timeout(
                CHECK_TIMEOUT,
                check(factory.clone(), caps),
            ));
            match task.await {
                Ok(Ok(Ok(()))) => Outcome::Passed,
                Ok(Ok(Err(m))) => Outcome::Failed(m),
                Ok(Err(_)) => Outcome::Failed(format!("timed out after {CHECK_TIMEOUT:?}")),
                Err(j) if j.is_panic() => Outcome::Failed("panicked".into()),
                Err(j) => Outcome::Failed(format!("task failed: {j}")),
            }
        } else {
            Outcome::Failed("no such check".into())
        };
        results.push(CheckResult { name, outcome });
    }
    factory.teardown().await;
    Report {
        backend: factory.name(),
        results,
    }
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

async fn build(f: &Arc<dyn BackendFactory>, p: ExpiryPolicy) -> Result<Harness, String> {
    let h = f.build(p).await?;
    ensure!(!h.nodes.is_empty(), "the factory built no node");
    Ok(h)
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

async fn round_trip(f: Arc<dyn BackendFactory>, _: Capabilities) -> CheckResultT {
    let h = build(&f, long_policy()).await?;
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

async fn typed_values(f: Arc<dyn BackendFactory>, _: Capabilities) -> CheckResultT {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Cart {
        items: Vec<(String, u32)>,
        note: Option<String>,
    }
    let h = build(&f, long_policy()).await?;
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

async fn delta_applies(f: Arc<dyn BackendFactory>, _: Capabilities) -> CheckResultT {
    let h = build(&f, long_policy()).await?;
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

async fn unchanged_writes_nothing(f: Arc<dyn BackendFactory>, _: Capabilities) -> CheckResultT {
    let h = build(&f, long_policy()).await?;
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

async fn empty_not_persisted(f: Arc<dyn BackendFactory>, _: Capabilities) -> CheckResultT {
    let h = build(&f, long_policy()).await?;
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

async fn touch_when_due(f: Arc<dyn BackendFactory>, _: Capabilities) -> CheckResultT {
    // touch_fraction 0: every read is due for a touch, which must move the idle deadline.
    let h = build(&f, policy(60_000, 600_000, 0.0)?).await?;
    let token = create_with(&h, &[("k", json!(1))]).await?;
    let node = h.node(0);
    let before = node
        .load(&token)
        .await
        .map_err(e("load"))?
        .ok_or("missing")?
        .record;
    tokio::time::sleep(Duration::from_millis(30)).await;
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

async fn concurrent_disjoint(f: Arc<dyn BackendFactory>, _: Capabilities) -> CheckResultT {
    let h = build(&f, long_policy()).await?;
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

async fn concurrent_same_key(f: Arc<dyn BackendFactory>, _: Capabilities) -> CheckResultT {
    let h = build(&f, long_policy()).await?;
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

async fn destroy(f: Arc<dyn BackendFactory>, caps: Capabilities) -> CheckResultT {
    let h = build(&f, long_policy()).await?;
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
    if caps.server_side {
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

async fn save_after_destroy(f: Arc<dyn BackendFactory>, _: Capabilities) -> CheckResultT {
    let h = build(&f, long_policy()).await?;
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

async fn idle_expiry(f: Arc<dyn BackendFactory>, _: Capabilities) -> CheckResultT {
    let h = build(&f, policy(1_000, 60_000, 0.25)?).await?;
    let token = create_with(&h, &[("k", json!(1))]).await?;
    h.settle().await;
    ensure!(
        exists(h.node(1), &token).await?,
        "session missing before expiry"
    );
    tokio::time::sleep(Duration::from_millis(1_600)).await;
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

async fn reads_keep_alive(f: Arc<dyn BackendFactory>, _: Capabilities) -> CheckResultT {
    let h = build(&f, policy(1_500, 60_000, 0.25)?).await?;
    let mut token = create_with(&h, &[("k", json!(1))]).await?;
    h.settle().await;
    // Read every 300 ms for 3.6 s (more than twice the idle timeout), alternating nodes.
    for i in 0..12 {
        tokio::time::sleep(Duration::from_millis(300)).await;
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

async fn absolute_expiry(f: Arc<dyn BackendFactory>, _: Capabilities) -> CheckResultT {
    let h = build(&f, policy(60_000, 1_200, 0.0)?).await?;
    let mut token = create_with(&h, &[("k", json!(1))]).await?;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(1_800) {
        tokio::time::sleep(Duration::from_millis(200)).await;
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

async fn cycle_id(f: Arc<dyn BackendFactory>, caps: Capabilities) -> CheckResultT {
    let h = build(&f, long_policy()).await?;
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
        if caps.server_side {
            ensure!(
                !exists(h.node(i), &old).await?,
                "node {i}: the old token still loads after cycling"
            );
        }
    }
    Ok(())
}

async fn bad_tokens(f: Arc<dyn BackendFactory>, _: Capabilities) -> CheckResultT {
    let h = build(&f, long_policy()).await?;
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
        let node = h.node(i);
        let before = node.counters();
        for t in &bad {
            match node.load(t).await {
                Ok(None) | Err(SessionError::InvalidToken(_)) => {}
                Ok(Some(_)) => {
                    return Err(format!(
                        "node {i}: a forged token loaded a session: {:?}",
                        t.chars().take(40).collect::<String>()
                    ));
                }
                Err(err) => return Err(format!("node {i}: a bad token caused an error: {err}")),
            }
            let c = request(node, Some(t), |s| async move {
                let v: Option<u64> = s.get("k").await?;
                if v.is_some() {
                    return Err(SessionError::backend_msg("test", "forged token saw data"));
                }
                Ok(())
            })
            .await?;
            ensure!(
                matches!(c, Commit::Clear | Commit::Unchanged),
                "node {i}: a bad token produced {c:?}"
            );
        }
        let after = node.counters();
        ensure!(
            after.network_calls == before.network_calls && after.db_calls == before.db_calls,
            "node {i}: bad tokens caused I/O (N {} -> {}, D {} -> {})",
            before.network_calls,
            after.network_calls,
            before.db_calls,
            after.db_calls
        );
    }
    ensure!(
        exists(h.node(0), &good).await?,
        "the good token stopped working"
    );
    Ok(())
}

async fn large_values(f: Arc<dyn BackendFactory>, caps: Capabilities) -> CheckResultT {
    let h = build(&f, long_policy()).await?;
    // A JSON string of exactly max_value_bytes bytes (including its quotes).
    let text: String = "ü".repeat((caps.max_value_bytes - 2) / 2);
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
        caps.max_value_bytes
    );
    Ok(())
}

async fn unicode_keys(f: Arc<dyn BackendFactory>, _: Capabilities) -> CheckResultT {
    let h = build(&f, long_policy()).await?;
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

async fn client_bytes(f: Arc<dyn BackendFactory>, _: Capabilities) -> CheckResultT {
    let h = build(&f, long_policy()).await?;
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
async fn store_outage(f: Arc<dyn BackendFactory>, _: Capabilities) -> CheckResultT {
    let h = build(&f, long_policy()).await?;
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
    let result: CheckResultT = async {
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
