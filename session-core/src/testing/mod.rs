//! The conformance suite: one set of behaviour checks every [`SessionBackend`] must pass.
//!
//! A backend crate implements [`BackendFactory`] (how to build a fresh, isolated instance of
//! the backend with the key ring the suite gives it, possibly several nodes sharing state) and
//! calls [`run`]; the returned [`Report`] lists every check as passed, failed (with the reason)
//! or skipped (with the reason the check cannot apply to this kind of backend).
//!
//! ```
//! use std::sync::Arc;
//! use session_core::testing::{run, BackendFactory, Capabilities, Harness, TimeControl};
//! use session_core::{ExpiryPolicy, KeyRing, MemoryBackend};
//!
//! struct Memory;
//! #[async_trait::async_trait]
//! impl BackendFactory for Memory {
//!     fn name(&self) -> String { "memory".into() }
//!     fn capabilities(&self) -> Capabilities {
//!         Capabilities::server_side()
//!             .in_process()
//!             // Deadlines come from session_core::now_millis in the caller's task, no I/O:
//!             // the expiry checks run with tokio time paused, in no real time.
//!             .with_time(TimeControl::Paused)
//!             // A new key ring needs a new MemoryBackend, which cannot see the old one's sessions.
//!             .without_rotation("sessions live inside one MemoryBackend instance")
//!     }
//!     async fn build(&self, policy: ExpiryPolicy, keys: &KeyRing) -> Result<Harness, String> {
//!         Ok(Harness::single(Arc::new(MemoryBackend::new(policy, keys))))
//!     }
//! }
//! # #[tokio::main] async fn main() {
//! run(Arc::new(Memory)).await.assert_passed();
//! # }
//! ```
//!
//! Every check runs in its own task with a time limit, so a panic or a hang in the backend is
//! reported as that check's failure instead of aborting the suite. The checks are one table
//! ([`CHECKS`] lists their names): each entry names its check, the function that runs it and
//! the rule that says when it does not apply.
//!
//! ## Time
//!
//! The expiry checks wait for deadlines. How the wait happens is the backend's
//! [`Capabilities::time`]: with [`TimeControl::Paused`] the check runs on a runtime of its own
//! with tokio time paused and a [`TestClock`] as the session clock, so waits take no real time;
//! with [`TimeControl::Advanced`] tokio time keeps running (the backend does real I/O) and the
//! check moves only the session clock; with [`TimeControl::Real`] it sleeps for real.
//!
//! ## Keys
//!
//! The suite makes the key rings. The key-rotation check builds a harness with one ring, then
//! asks it for more nodes on the same sessions with other rings
//! ([`Harness::rebuild_with_keys`]), as a rolling deploy of a rotated secret does.

mod checks;
pub mod golden;
mod proxy;
pub use proxy::{TcpProxy, url_addr, with_host_port};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::backend::SessionBackend;
use crate::clock::TestClock;
use crate::expiry::ExpiryPolicy;
use crate::keys::KeyRing;

/// How the suite makes time pass in the checks that wait for a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeControl {
    /// The backend takes every "now" from the session clock ([`crate::now_millis`]) in the
    /// calling task and does no I/O outside the process: those checks run on a current-thread
    /// runtime of their own with tokio time paused, so a wait is an instant jump of tokio time
    /// and session time together.
    Paused,
    /// The backend takes every "now" from the session clock in the calling task, but does real
    /// I/O (a database server, a driver thread). Paused tokio time would auto-advance while a
    /// reply is in flight and fire I/O timeouts, so tokio time keeps running and a wait moves
    /// only the session clock ([`TestClock::advance`]).
    Advanced,
    /// The backend's deadlines do not follow the session clock (for the reason given): the
    /// checks wait in real time, with short timeouts.
    Real(&'static str),
}

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
    /// Why the key-rotation check does not apply (`None`: the harness has a [`RebuildFn`] that
    /// gives nodes on the same sessions with another key ring).
    pub rotation_skip: Option<&'static str>,
    /// How the expiry checks make time pass.
    pub time: TimeControl,
}

const UNDECLARED_CLOCK: &str = "the factory does not declare that the backend follows the \
                                session clock (Capabilities::with_time)";

impl Capabilities {
    /// A server-side backend: every check applies, 64 KiB values, real waits for deadlines.
    pub fn server_side() -> Self {
        Capabilities {
            server_side: true,
            max_value_bytes: 64 * 1024,
            outage_skip: None,
            rotation_skip: None,
            time: TimeControl::Real(UNDECLARED_CLOCK),
        }
    }

    /// The same, with the outage check skipped for `reason`.
    pub fn without_outage(self, reason: &'static str) -> Self {
        Capabilities {
            outage_skip: Some(reason),
            ..self
        }
    }

    /// The same, with the key-rotation check skipped for `reason`.
    pub fn without_rotation(self, reason: &'static str) -> Self {
        Capabilities {
            rotation_skip: Some(reason),
            ..self
        }
    }

    /// The same, with the expiry checks' time passing as `time` says.
    pub fn with_time(self, time: TimeControl) -> Self {
        Capabilities { time, ..self }
    }

    /// True when the backend takes "now" from the session clock ([`crate::clock`]), so the
    /// suite can move its time instead of waiting.
    pub fn follows_session_clock(&self) -> bool {
        !matches!(self.time, TimeControl::Real(_))
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
            rotation_skip: None,
            time: TimeControl::Real(UNDECLARED_CLOCK),
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

/// Gives a harness of new nodes that share the sessions of the harness it belongs to but sign
/// and verify tokens with another key ring (a rolling deploy with a rotated secret). The new
/// harness should have a `RebuildFn` of its own, so a ring can rotate twice.
pub type RebuildFn =
    Arc<dyn Fn(KeyRing) -> BoxFuture<'static, Result<Harness, String>> + Send + Sync>;

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
    /// Builds nodes on the same sessions with another key ring (`None`: the backend cannot;
    /// set [`Capabilities::rotation_skip`]).
    pub rebuild: Option<RebuildFn>,
}

impl Harness {
    /// A harness of one node whose writes are visible at once.
    pub fn single(backend: Arc<dyn SessionBackend>) -> Self {
        Harness::of(vec![backend])
    }

    /// A harness of these nodes, whose writes are visible at once.
    pub fn of(nodes: Vec<Arc<dyn SessionBackend>>) -> Self {
        Harness {
            nodes,
            settle: None,
            outage: None,
            rebuild: None,
        }
    }

    /// The same harness with a settle hook.
    pub fn with_settle(mut self, settle: SettleFn) -> Self {
        self.settle = Some(settle);
        self
    }

    /// The same harness with an outage hook.
    pub fn with_outage(mut self, outage: OutageFn) -> Self {
        self.outage = Some(outage);
        self
    }

    /// The same harness with a rebuild hook.
    pub fn with_rebuild(mut self, rebuild: RebuildFn) -> Self {
        self.rebuild = Some(rebuild);
        self
    }

    /// New nodes on this harness's sessions that sign with `keys`' first key and verify with
    /// all of them. An error if the harness has no [`RebuildFn`].
    pub async fn rebuild_with_keys(&self, keys: &KeyRing) -> Result<Harness, String> {
        let Some(rebuild) = &self.rebuild else {
            return Err(
                "the harness has no rebuild hook (set Capabilities::rotation_skip to skip)".into(),
            );
        };
        let h = rebuild(keys.clone()).await?;
        if h.nodes.is_empty() {
            return Err("the rebuild hook built no node".into());
        }
        Ok(h)
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
    /// A fresh instance enforcing `policy` whose nodes sign tokens with `keys`' first key and
    /// verify with all of them, isolated from every other instance's sessions.
    async fn build(&self, policy: ExpiryPolicy, keys: &KeyRing) -> Result<Harness, String>;
    /// Called once after all checks (drop schemas, delete key prefixes, stop nodes).
    async fn teardown(&self) {}
}

/// Why the reference backend skips the key-rotation check.
const SKIP_MEMORY_ROTATION: &str = "a MemoryBackend keeps its sessions inside the instance, and a \
                                    new key ring needs a new instance that cannot see them \
                                    (session-core's tests run the check on a re-keyable wrapper)";

/// The factory for the in-crate reference backend ([`MemoryBackend`](crate::MemoryBackend)).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryFactory;

#[async_trait]
impl BackendFactory for MemoryFactory {
    fn name(&self) -> String {
        "memory (reference)".into()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::server_side()
            .in_process()
            .with_time(TimeControl::Paused)
            .without_rotation(SKIP_MEMORY_ROTATION)
    }
    async fn build(&self, policy: ExpiryPolicy, keys: &KeyRing) -> Result<Harness, String> {
        Ok(Harness::single(Arc::new(crate::MemoryBackend::new(
            policy, keys,
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

// ---------------------------------------------------------------------------------------------
// the table

type CheckOutcome = Result<(), String>;
type CheckFn = fn(checks::Ctx) -> BoxFuture<'static, CheckOutcome>;
/// When a check does not apply: `Some(reason)` skips it.
type SkipRule = fn(&Capabilities) -> Option<&'static str>;

/// One entry of the suite.
struct Check {
    name: &'static str,
    run: CheckFn,
    skip: SkipRule,
    /// The check waits for deadlines: it runs under the backend's [`TimeControl`].
    timed: bool,
}

const SKIP_CLIENT_SIDE: &str = "client-side state: the client holds the only copy, so the server \
                                cannot invalidate or merge it (documented trade-off)";

const SKIP_NO_STORE: &str = "no separate store: the sessions live in the serving process (or the \
                             client), so there is nothing a node can lose contact with";

fn applies(_: &Capabilities) -> Option<&'static str> {
    None
}

fn server_side_only(caps: &Capabilities) -> Option<&'static str> {
    (!caps.server_side).then_some(SKIP_CLIENT_SIDE)
}

fn with_outage_hook(caps: &Capabilities) -> Option<&'static str> {
    caps.outage_skip
}

fn with_rebuild_hook(caps: &Capabilities) -> Option<&'static str> {
    caps.rotation_skip
}

/// One table entry: `check!(name, function, skip rule)`, with `timed` for the checks that wait
/// for deadlines.
macro_rules! check {
    ($name:literal, $f:path, $skip:expr) => {
        Check {
            name: $name,
            run: |cx| Box::pin($f(cx)),
            skip: $skip,
            timed: false,
        }
    };
    ($name:literal, $f:path, $skip:expr, timed) => {
        Check {
            name: $name,
            run: |cx| Box::pin($f(cx)),
            skip: $skip,
            timed: true,
        }
    };
}

/// Every check of the suite, in the order it runs: name, check, skip rule (and `timed`).
#[rustfmt::skip]
const SUITE: &[Check] = &[
    check!("round_trip", checks::round_trip, applies),
    check!("typed_values", checks::typed_values, applies),
    check!("delta_applies_set_and_remove", checks::delta_applies, applies),
    check!("unchanged_request_writes_nothing", checks::unchanged_writes_nothing, applies),
    check!("empty_new_session_is_not_persisted", checks::empty_not_persisted, applies),
    check!("touch_when_due", checks::touch_when_due, applies, timed),
    check!("concurrent_disjoint_writes_survive", checks::concurrent_disjoint, server_side_only),
    check!("concurrent_same_key_converges", checks::concurrent_same_key, server_side_only),
    check!("destroy", checks::destroy, applies),
    check!("save_after_destroy_is_gone", checks::save_after_destroy, server_side_only),
    check!("idle_expiry", checks::idle_expiry, applies, timed),
    check!("reads_keep_session_alive", checks::reads_keep_alive, applies, timed),
    check!("absolute_expiry", checks::absolute_expiry, applies, timed),
    check!("save_after_expiry_is_gone", checks::save_after_expiry, applies, timed),
    check!("cycle_id", checks::cycle_id, applies),
    check!("bad_tokens_are_no_session_without_io", checks::bad_tokens, applies),
    check!("key_rotation", checks::key_rotation, with_rebuild_hook),
    check!("large_values", checks::large_values, applies),
    check!("unicode_keys", checks::unicode_keys, applies),
    check!("client_bytes_counted", checks::client_bytes, applies),
    check!("store_outage_is_unavailable", checks::store_outage, with_outage_hook),
];

const NAMES: [&str; SUITE.len()] = {
    let mut names = [""; SUITE.len()];
    let mut i = 0;
    while i < SUITE.len() {
        names[i] = SUITE[i].name;
        i += 1;
    }
    names
};

/// Every check in the suite, by name, in the order [`run`] runs them (for [`run_checks`]).
pub const CHECKS: &[&str] = &NAMES;

/// Time limit for one check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs every check against the factory's backend. Call it on a runtime whose time is not
/// paused: the suite pauses time itself, per check, where the backend allows it.
pub async fn run(factory: Arc<dyn BackendFactory>) -> Report {
    run_checks(factory, CHECKS).await
}

/// Runs the named checks (unknown names fail) against the factory's backend.
pub async fn run_checks(factory: Arc<dyn BackendFactory>, names: &[&'static str]) -> Report {
    let caps = factory.capabilities();
    let mut results = Vec::new();
    for &name in names {
        let outcome = match SUITE.iter().find(|c| c.name == name) {
            None => Outcome::Failed("no such check".into()),
            Some(check) => match (check.skip)(&caps) {
                Some(reason) => Outcome::Skipped(reason),
                None => run_one(check, factory.clone(), caps).await,
            },
        };
        results.push(CheckResult { name, outcome });
    }
    factory.teardown().await;
    Report {
        backend: factory.name(),
        results,
    }
}

/// What a check's task ended with: its result, `None` for a timeout, or why the task died.
type Ended = Result<Option<CheckOutcome>, String>;

async fn run_one(check: &Check, factory: Arc<dyn BackendFactory>, caps: Capabilities) -> Outcome {
    let ended = match (check.timed, caps.time) {
        (true, TimeControl::Paused) => on_paused_runtime(check.run, factory, caps).await,
        (true, TimeControl::Advanced) => {
            let clock = TestClock::new();
            let cx = checks::Ctx::new(factory, caps, Some(clock.clone()));
            let run = check.run;
            in_task(async move { clock.scope(run(cx)).await }).await
        }
        _ => in_task((check.run)(checks::Ctx::new(factory, caps, None))).await,
    };
    match ended {
        Ok(Some(Ok(()))) => Outcome::Passed,
        Ok(Some(Err(m))) => Outcome::Failed(m),
        Ok(None) => Outcome::Failed(format!("timed out after {CHECK_TIMEOUT:?}")),
        Err(m) => Outcome::Failed(m),
    }
}

/// Runs a check in a task of the current runtime, within [`CHECK_TIMEOUT`].
async fn in_task(check: impl std::future::Future<Output = CheckOutcome> + Send + 'static) -> Ended {
    match tokio::spawn(tokio::time::timeout(CHECK_TIMEOUT, check)).await {
        Ok(r) => Ok(r.ok()),
        Err(j) if j.is_panic() => Err("panicked".into()),
        Err(j) => Err(format!("task failed: {j}")),
    }
}

/// Runs a check on a current-thread runtime of its own, in a thread of its own, with tokio
/// time paused and a [`TestClock`] following it as the session clock: every wait in the check
/// (and the backend) is an instant jump of both. The time limit holds in tokio time (a check
/// stuck on a timer fails at once) and in real time (one stuck otherwise).
async fn on_paused_runtime(
    run: CheckFn,
    factory: Arc<dyn BackendFactory>,
    caps: Capabilities,
) -> Ended {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("paused-check".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build();
            let ended = match rt {
                Ok(rt) => rt.block_on(async move {
                    let clock = TestClock::new();
                    let cx = checks::Ctx::new(factory, caps, None);
                    let check = clock.scope(run(cx));
                    Ok(tokio::time::timeout(CHECK_TIMEOUT, check).await.ok())
                }),
                Err(e) => Err(format!("building a paused runtime: {e}")),
            };
            let _ = tx.send(ended);
        });
    if let Err(e) = spawned {
        return Err(format!("starting the check's thread: {e}"));
    }
    match tokio::time::timeout(CHECK_TIMEOUT, rx).await {
        Ok(Ok(ended)) => ended,
        // The thread dropped its sender without sending: the check panicked.
        Ok(Err(_)) => Err("panicked".into()),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_every_check_once() {
        let mut names: Vec<&str> = CHECKS.to_vec();
        assert_eq!(names.len(), SUITE.len());
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SUITE.len(), "a check name appears twice");
        assert!(CHECKS.contains(&"key_rotation") && CHECKS.contains(&"save_after_expiry_is_gone"));
    }

    #[test]
    fn time_control_says_whether_the_session_clock_is_followed() {
        assert!(!Capabilities::server_side().follows_session_clock());
        let paused = Capabilities::client_side(100).with_time(TimeControl::Paused);
        assert!(paused.follows_session_clock());
        assert!(
            Capabilities::server_side()
                .with_time(TimeControl::Advanced)
                .follows_session_clock()
        );
    }
}
