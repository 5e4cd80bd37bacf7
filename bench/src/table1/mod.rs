//! `bench table1`: the paper's Table 1, measured.
//!
//! For each scheme (instant copy with `replicas = "all"`, instant copy with one backup, sealed
//! cookie, SQL on PostgreSQL, Redis) [`run`] starts a real N-node [`LocalCluster`] of this
//! binary, logs U virtual users in, then sends R requests of a mixed workload (mostly profile
//! reads, some cart writes). Every request goes to a node chosen at random, as a non-sticky
//! load balancer would send it; each user sends its requests one after another and carries its
//! own session token like a browser (the `sid` cookie, replaced from `Set-Cookie`). Users run
//! concurrently over one keep-alive HTTP client.
//!
//! What is measured, and how (the same accounting for every scheme; `results.md` repeats it
//! under the tables):
//! * latency (p50/p99) of reads and of writes separately, and throughput: by the load
//!   generator, over the workload phase only (logins happen first and are reported separately);
//! * N and D per read and per write: each node's session layer attributes the calls a request
//!   makes to that request and counts it as a read or a write
//!   ([`session_core::cost`], exported as `session_request_*_total{kind}`); the deltas over the
//!   workload, summed over the nodes, are divided by the layer's request count of that kind.
//!   For instant copy N per write also counts the replication round trips (push batches, sent
//!   in the background, so divided over the writes: a node-wide delta, not attributed);
//! * replication (instant copy): updates queued per write (what the protocol implies), updates
//!   sent after coalescing, push batches and sealed bytes, from the per-peer push counters;
//! * client ↔ node bytes: the `Cookie` header line sent and the `Set-Cookie` lines received
//!   per request, by the load generator, for reads and writes;
//! * node ↔ store/peer bytes: the kernel's TCP counters of every connection the nodes opened
//!   to their store or peers ([`sockets`], sampled with `ss`), plus instant copy's gossip
//!   datagrams, divided over the requests (and, in the scaling table, over the writes);
//! * errors: transport errors and unexpected statuses; a 401 after a successful login is a lost
//!   session and counts as an error (the user then logs in again).
//!
//! A second experiment shows the paper's admitted limit: instant copy "all" against one backup
//! at several cluster sizes with a write-heavy workload (replication messages per write and
//! throughput).
//!
//! Services are never faked: SQL and Redis are checked first (TCP connect, then a real connect
//! and `SELECT 1` / `PING`); a scheme whose service is unreachable is reported as skipped with
//! the reason. Each run isolates itself on the shared servers (a fresh PostgreSQL schema, a
//! fresh Redis key prefix) and removes what it created afterwards (`DROP SCHEMA ... CASCADE`;
//! `SCAN MATCH` + `UNLINK`, never a flush), also when interrupted with Ctrl-C (the run then
//! ends with [`Table1Error::Interrupted`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backend_instantcopy::{Ack, Replication};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use serde_json::json;

use crate::charts::{BarChart, BarSeries, ChartError, Line, LinePanels, Panel};
use demo_app::cluster::{ClusterError, ClusterSpec, LocalCluster};
use demo_app::config::BackendKind;

pub mod cli;
pub mod sockets;
mod tables;

pub use tables::{BEGIN_MARKER, END_MARKER, NoGeneratedBlock, generated_block, splice};

/// Default PostgreSQL URL when neither `--database-url` nor `DATABASE_URL` is given.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Default Redis URL when neither `--redis-url` nor `REDIS_URL` is given.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The session cookie the nodes use (the demo's default `session.cookie_name`).
const COOKIE: &str = "sid";
/// The catalogue the virtual users shop from.
const SKUS: usize = 12;

/// One of the compared schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Scheme {
    /// Instant copy, every write pushed to every other node (the paper's scheme).
    #[serde(rename = "instantcopy-all")]
    InstantCopyAll,
    /// Instant copy, each session on its owner and one backup.
    #[serde(rename = "instantcopy-k1")]
    InstantCopyK1,
    /// The whole session sealed in the cookie.
    #[serde(rename = "cookie")]
    Cookie,
    /// PostgreSQL.
    #[serde(rename = "sql")]
    Sql,
    /// Redis.
    #[serde(rename = "redis")]
    Redis,
}

impl Scheme {
    /// Every scheme, in table order.
    pub const ALL: [Scheme; 5] = [
        Scheme::InstantCopyAll,
        Scheme::InstantCopyK1,
        Scheme::Cookie,
        Scheme::Sql,
        Scheme::Redis,
    ];

    /// The name on the command line and in `results.json`.
    pub fn id(self) -> &'static str {
        match self {
            Scheme::InstantCopyAll => "instantcopy-all",
            Scheme::InstantCopyK1 => "instantcopy-k1",
            Scheme::Cookie => "cookie",
            Scheme::Sql => "sql",
            Scheme::Redis => "redis",
        }
    }

    /// The name in the table and the charts.
    pub fn label(self) -> &'static str {
        match self {
            Scheme::InstantCopyAll => "instant copy \"all\"",
            Scheme::InstantCopyK1 => "instant copy k=1",
            Scheme::Cookie => "cookie",
            Scheme::Sql => "SQL (PostgreSQL)",
            Scheme::Redis => "Redis",
        }
    }

    /// Where the session lives.
    pub fn lives(self) -> &'static str {
        match self {
            Scheme::InstantCopyAll => "every node's memory",
            Scheme::InstantCopyK1 => "owner + 1 backup (memory)",
            Scheme::Cookie => "the client (sealed)",
            Scheme::Sql => "PostgreSQL",
            Scheme::Redis => "Redis",
        }
    }

    /// What the client carries (the measured mean size is added in the table).
    pub fn carries(self) -> &'static str {
        match self {
            Scheme::InstantCopyAll | Scheme::InstantCopyK1 => "signed id + owner + version",
            Scheme::Cookie => "the whole session, encrypted",
            Scheme::Sql | Scheme::Redis => "signed session id",
        }
    }

    /// The paper's N and D per read.
    pub fn paper(self) -> &'static str {
        match self {
            Scheme::InstantCopyAll | Scheme::InstantCopyK1 => "N ≤ 1, D = 0",
            Scheme::Cookie => "N = 0, D = 0",
            Scheme::Sql => "N = 0, D = 1",
            Scheme::Redis => "N = 1, D = 0",
        }
    }

    /// The backend the nodes run.
    pub fn backend(self) -> BackendKind {
        match self {
            Scheme::InstantCopyAll | Scheme::InstantCopyK1 => BackendKind::Instantcopy,
            Scheme::Cookie => BackendKind::Cookie,
            Scheme::Sql => BackendKind::Sql,
            Scheme::Redis => BackendKind::Redis,
        }
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

impl std::str::FromStr for Scheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Scheme::ALL
            .into_iter()
            .find(|x| x.id() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scheme {s:?}: expected one of {}",
                    Scheme::ALL.map(Scheme::id).join(", ")
                )
            })
    }
}

/// The request mix, in relative weights (percent by convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mix {
    /// `GET /profile` (read-only).
    pub profile: u32,
    /// `GET /cart` (read-only).
    pub cart: u32,
    /// `POST /cart/items` (a write).
    pub add_item: u32,
    /// `DELETE /cart/items/{sku}` (a write).
    pub remove_item: u32,
}

impl Mix {
    /// The main table's workload: mostly profile reads, some cart writes.
    pub const READ_MOSTLY: Mix = Mix {
        profile: 75,
        cart: 10,
        add_item: 12,
        remove_item: 3,
    };
    /// The scaling experiment's workload: 60 % writes.
    pub const WRITE_HEAVY: Mix = Mix {
        profile: 30,
        cart: 10,
        add_item: 45,
        remove_item: 15,
    };

    fn total(&self) -> u32 {
        self.profile + self.cart + self.add_item + self.remove_item
    }

    /// The operation for a draw in `0..total`.
    fn pick(&self, draw: u32) -> Op {
        if draw < self.profile {
            Op::Profile
        } else if draw < self.profile + self.cart {
            Op::Cart
        } else if draw < self.profile + self.cart + self.add_item {
            Op::AddItem
        } else {
            Op::RemoveItem
        }
    }

    /// The share of writes, in percent.
    pub fn write_percent(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            t => f64::from(self.add_item + self.remove_item) * 100.0 / f64::from(t),
        }
    }

    /// "75% GET /profile, 10% GET /cart, ..." (shares of the total).
    pub fn describe(&self) -> String {
        let t = f64::from(self.total().max(1));
        [
            (self.profile, "GET /profile"),
            (self.cart, "GET /cart"),
            (self.add_item, "POST /cart/items"),
            (self.remove_item, "DELETE /cart/items/{sku}"),
        ]
        .iter()
        .filter(|(w, _)| *w > 0)
        .map(|(w, r)| format!("{:.0}% {r}", f64::from(*w) * 100.0 / t))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct Table1Options {
    /// Nodes per cluster in the main table.
    pub nodes: usize,
    /// Virtual users (concurrent).
    pub users: usize,
    /// Workload requests per scheme (spread over the users).
    pub requests: usize,
    /// The schemes, in table order.
    pub schemes: Vec<Scheme>,
    /// The main workload.
    pub mix: Mix,
    /// Cluster sizes of the scaling experiment (empty: no scaling experiment).
    pub scaling_nodes: Vec<usize>,
    /// Virtual users per scaling run.
    pub scaling_users: usize,
    /// Requests per scaling run.
    pub scaling_requests: usize,
    /// The scaling workload.
    pub scaling_mix: Mix,
    /// PostgreSQL for the SQL scheme.
    pub database_url: String,
    /// Redis for the Redis scheme.
    pub redis_url: String,
    /// Seed of the workload's random choices (users use `seed` + their index).
    pub seed: u64,
    /// How long the service checks wait.
    #[serde(with = "humantime_serde")]
    pub service_timeout: Duration,
}

impl Default for Table1Options {
    fn default() -> Self {
        Self::full()
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

impl Table1Options {
    /// The full run: 3 nodes, 50 users, 100 000 requests, scaling at 2, 4 and 8 nodes (20 users,
    /// 20 000 requests each). Service
    /// URLs from `DATABASE_URL` / `REDIS_URL`, else the local defaults.
    pub fn full() -> Self {
        Table1Options {
            nodes: 3,
            users: 50,
            requests: 100_000,
            schemes: Scheme::ALL.to_vec(),
            mix: Mix::READ_MOSTLY,
            scaling_nodes: vec![2, 4, 8],
            scaling_users: 20,
            scaling_requests: 20_000,
            scaling_mix: Mix::WRITE_HEAVY,
            database_url: env_or("DATABASE_URL", DEFAULT_DATABASE_URL),
            redis_url: env_or("REDIS_URL", DEFAULT_REDIS_URL),
            seed: 1,
            service_timeout: Duration::from_secs(3),
        }
    }

    /// A quick run (seconds, for tests and smoke checks): 2 nodes, 4 users, 120 requests,
    /// scaling at 2 and 4 nodes with 60 requests each.
    pub fn quick() -> Self {
        Table1Options {
            nodes: 2,
            users: 4,
            requests: 120,
            scaling_nodes: vec![2, 4],
            scaling_users: 4,
            scaling_requests: 60,
            ..Self::full()
        }
    }

    /// Checks the numbers.
    pub fn validate(&self) -> Result<(), Table1Error> {
        let bad = |m: String| Err(Table1Error::Options(m));
        if !(1..=64).contains(&self.nodes) {
            return bad(format!("--nodes must be 1 to 64, not {}", self.nodes));
        }
        if self.users == 0 || self.requests == 0 {
            return bad("--users and --requests must be at least 1".into());
        }
        if self.schemes.is_empty() && self.scaling_nodes.is_empty() {
            return bad("nothing to run: no scheme and no scaling size".into());
        }
        if let Some(n) = self.scaling_nodes.iter().find(|n| !(2..=64).contains(*n)) {
            return bad(format!("scaling sizes must be 2 to 64 nodes, not {n}"));
        }
        if !self.scaling_nodes.is_empty() && (self.scaling_users == 0 || self.scaling_requests == 0)
        {
            return bad("scaling users and requests must be at least 1".into());
        }
        if self.mix.total() == 0 || self.scaling_mix.total() == 0 {
            return bad("a request mix has no weight".into());
        }
        Ok(())
    }

    /// A copy without passwords in the service URLs (for `results.json`).
    fn redacted(&self) -> Self {
        let mut o = self.clone();
        o.database_url = redact(&self.database_url);
        o.redis_url = redact(&self.redis_url);
        o
    }
}

/// Why `compare` stopped.
#[derive(Debug, thiserror::Error)]
pub enum Table1Error {
    /// Invalid options.
    #[error("invalid options: {0}")]
    Options(String),
    /// A cluster did not start.
    #[error("{run}: the cluster did not start: {source}")]
    Cluster {
        /// Which run.
        run: String,
        /// Why.
        #[source]
        source: ClusterError,
    },
    /// A node's `/metrics` or `/status.json` could not be read (did it die?).
    #[error("{run}: reading {url}: {message}")]
    Scrape {
        /// Which run.
        run: String,
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The load generator itself failed (its HTTP client, a task panicked).
    #[error("{run}: the load generator failed: {message}")]
    Load {
        /// Which run.
        run: String,
        /// Why.
        message: String,
    },
    /// Preparing a service (schema) failed after it answered the check.
    #[error("{run}: preparing {what}: {message}")]
    Prepare {
        /// Which run.
        run: String,
        /// What was being prepared.
        what: String,
        /// Why.
        message: String,
    },
    /// Ctrl-C: the run's nodes were stopped and its schema or key prefix removed.
    #[error("{run}: interrupted")]
    Interrupted {
        /// Which run.
        run: String,
    },
    /// Writing the results.
    #[error("writing {}: {source}", path.display())]
    Output {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Drawing a chart.
    #[error(transparent)]
    Chart(#[from] ChartError),
    /// Encoding `results.json`.
    #[error("encoding results.json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Latency statistics of a set of requests, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencyStats {
    /// Requests measured.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl LatencyStats {
    /// Statistics of samples in microseconds (nearest-rank percentiles).
    pub fn from_micros(samples: &mut [u32]) -> Self {
        if samples.is_empty() {
            return LatencyStats::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let rank = |p: f64| {
            let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
            f64::from(samples[i]) / 1000.0
        };
        let sum: u64 = samples.iter().map(|s| u64::from(*s)).sum();
        LatencyStats {
            count: n as u64,
            mean_ms: sum as f64 / n as f64 / 1000.0,
            p50_ms: rank(0.50),
            p90_ms: rank(0.90),
            p99_ms: rank(0.99),
            max_ms: rank(1.0),
        }
    }
}

/// Errors seen by the load generator.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ErrorReport {
    /// All errors (transport errors and unexpected statuses).
    pub total: u64,
    /// Requests that got no response (connection refused, reset, timeout).
    pub transport: u64,
    /// 401s after a successful login: the session was lost.
    pub lost_sessions: u64,
    /// Counts per kind, e.g. `"GET /profile → 401"` or `"POST /login: transport"`.
    pub by_kind: BTreeMap<String, u64>,
    /// The first few error messages.
    pub samples: Vec<String>,
}

impl ErrorReport {
    fn add(&mut self, kind: String, message: String) {
        self.total += 1;
        *self.by_kind.entry(kind).or_default() += 1;
        if self.samples.len() < 8 {
            self.samples.push(message);
        }
    }

    fn merge(&mut self, other: ErrorReport) {
        self.total += other.total;
        self.transport += other.transport;
        self.lost_sessions += other.lost_sessions;
        for (k, v) in other.by_kind {
            *self.by_kind.entry(k).or_default() += v;
        }
        for s in other.samples {
            if self.samples.len() < 8 {
                self.samples.push(s);
            }
        }
    }
}

/// Reads or writes of one run, measured like for like across schemes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindStats {
    /// Requests of this kind the load generator sent (reads: `GET`; writes: `POST`, `DELETE`).
    pub requests: u64,
    /// Their latency, as the load generator saw it.
    pub latency: LatencyStats,
    /// Requests of this kind the nodes' session layer counted (a write is a request that
    /// created, changed, cycled or destroyed its session; a cart removal of an item that is not
    /// in the cart is a read by that rule).
    pub layer_requests: f64,
    /// Network calls made by these requests themselves, per request (attributed by the layer:
    /// `session_request_network_calls_total{kind}`); background replication is not in it.
    pub n_per_request: f64,
    /// Database calls made by these requests, per request (`session_request_db_calls_total`).
    pub d_per_request: f64,
    /// Session header bytes client → node per request (the `Cookie` header line).
    pub client_bytes_up: f64,
    /// Session header bytes node → client per request (`Set-Cookie` header lines).
    pub client_bytes_down: f64,
}

/// Bytes between the nodes and their store or peers over the workload, from the kernel's TCP
/// counters ([`sockets`]) plus instant copy's gossip datagrams (its own counter).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BackendWire {
    /// What the nodes talk to: `"peers"`, `"Redis"`, `"PostgreSQL"` or `"nothing"`.
    pub target: &'static str,
    /// TCP payload bytes, both directions, on the connections the nodes opened to it.
    pub tcp_bytes: u64,
    /// Gossip (UDP) bytes sent by the nodes (instant copy; 0 otherwise).
    pub gossip_bytes: f64,
    /// Those connections at the end of the workload.
    pub connections: usize,
    /// Connections that closed during the workload (their last bytes are not counted).
    pub closed_connections: usize,
    /// `(tcp_bytes + gossip_bytes)` per workload request.
    pub bytes_per_request: f64,
    /// The same per write (the layer's count): the scaling table's measure.
    pub bytes_per_write: f64,
}

/// Instant copy's replication traffic during the workload (summed over the nodes).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplicationStats {
    /// Updates queued for peers (one per write and peer it replicates to, before coalescing).
    pub queued: f64,
    /// Updates sent to peers (after per-batch coalescing).
    pub updates: f64,
    /// Push batches (HTTP requests between nodes).
    pub batches: f64,
    /// Sealed push bytes.
    pub bytes: f64,
    /// Updates queued per write: what the protocol implies (n − 1 for "all", at most k + 1
    /// for k backups), before coalescing.
    pub queued_per_write: f64,
    /// Updates per write request: the paper's replication messages per write.
    pub messages_per_write: f64,
    /// Push batches per write request: round trips (a batch and its acknowledgement), the
    /// part of N per write the requests do not make themselves.
    pub batches_per_write: f64,
    /// Push bytes per write request.
    pub bytes_per_write: f64,
}

/// Everything measured in one run of one cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Measured {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Virtual users.
    pub users: usize,
    /// Requests sent in the workload phase (the asked number plus any re-login).
    pub requests: u64,
    /// Of which writes (cart writes and re-logins).
    pub writes: u64,
    /// Re-logins after a lost session or a failed login.
    pub relogins: u64,
    /// Duration of the workload phase.
    pub seconds: f64,
    /// Requests per second in the workload phase.
    pub throughput_rps: f64,
    /// Latency of every workload request that got a response.
    pub latency: LatencyStats,
    /// Latency per route.
    pub routes: BTreeMap<String, LatencyStats>,
    /// Latency of the initial logins.
    pub login_latency: LatencyStats,
    /// Mean bytes of session token the client sent per workload request.
    pub client_bytes_mean: f64,
    /// The same seen by the nodes (`session_client_bytes_sum / _count` deltas), which also
    /// counts requests that carried no token.
    pub server_client_bytes_mean: Option<f64>,
    /// The paper's N: network calls per request.
    pub n_per_request: f64,
    /// The paper's D: database calls per request.
    pub d_per_request: f64,
    /// Network calls during the workload (all nodes).
    pub network_calls: f64,
    /// Database calls during the workload (all nodes).
    pub db_calls: f64,
    /// Instant copy's replication traffic.
    pub replication: Option<ReplicationStats>,
    /// The reads of the workload.
    pub reads: KindStats,
    /// The writes of the workload.
    pub writes_stats: KindStats,
    /// Network calls per write, like for like: the calls the write requests made themselves
    /// plus, for instant copy, the replication round trips (push batches) per write.
    pub n_per_write_total: f64,
    /// Bytes between the nodes and their store or peers (`None` with the reason in
    /// `backend_wire_error` when the kernel counters could not be read).
    pub backend_wire: Option<BackendWire>,
    /// Why `backend_wire` is missing.
    pub backend_wire_error: Option<String>,
    /// Errors (initial logins included).
    pub errors: ErrorReport,
    /// Deltas of every `session_*` series over the workload, summed over the nodes.
    pub counter_deltas: BTreeMap<String, f64>,
    /// Time to start the cluster and see every node ready.
    pub cluster_start_secs: f64,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct SchemeResult {
    /// The scheme.
    pub scheme: Scheme,
    /// Its label.
    pub label: &'static str,
    /// Where the session lives.
    pub lives: &'static str,
    /// What the client carries.
    pub carries: &'static str,
    /// The paper's N and D per read.
    pub paper: &'static str,
    /// Why it did not run (service unreachable).
    pub skipped: Option<String>,
    /// The numbers, when it ran.
    pub measured: Option<Measured>,
    /// The PostgreSQL schema or Redis key prefix this run used.
    pub isolation: Option<String>,
    /// What the cleanup did (or why it failed).
    pub cleanup: Option<String>,
}

impl SchemeResult {
    fn new(scheme: Scheme) -> Self {
        SchemeResult {
            scheme,
            label: scheme.label(),
            lives: scheme.lives(),
            carries: scheme.carries(),
            paper: scheme.paper(),
            skipped: None,
            measured: None,
            isolation: None,
            cleanup: None,
        }
    }
}

/// One point of the scaling experiment.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingResult {
    /// Cluster size.
    pub nodes: usize,
    /// `"all"` or `"k=1"`.
    pub replication: String,
    /// The numbers.
    pub measured: Measured,
}

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical cores available to this process.
    pub cores: usize,
    /// CPU model, when known.
    pub cpu: Option<String>,
    /// Operating system.
    pub os: &'static str,
    /// Kernel release, when known.
    pub kernel: Option<String>,
    /// 1/5/15-minute load average before the run.
    pub load_before: Option<[f64; 3]>,
    /// The same after the run.
    pub load_after: Option<[f64; 3]>,
    /// When the run started (UTC, RFC 3339).
    pub started_utc: String,
}

impl Machine {
    fn probe() -> Self {
        let machine = crate::machine::Machine::detect();
        let known = |v: String| (v != "unknown").then_some(v);
        Machine {
            cores: machine.cpus,
            cpu: known(machine.cpu_model),
            os: std::env::consts::OS,
            kernel: known(machine.kernel),
            load_before: crate::machine::loadavg(),
            load_after: None,
            started_utc: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        }
    }
}

/// The whole result: what `results.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// demo-app's version.
    pub version: &'static str,
    /// The options (service URLs without passwords).
    pub options: Table1Options,
    /// The machine.
    pub machine: Machine,
    /// One row per scheme.
    pub schemes: Vec<SchemeResult>,
    /// The scaling experiment.
    pub scaling: Vec<ScalingResult>,
    /// Wall time of the whole comparison.
    pub duration_secs: f64,
    /// The command line that produced it (the CLI fills it in; a library caller may).
    pub command: Option<String>,
}

/// Runs the comparison: every scheme of `opts`, then the scaling experiment. `binary` is the
/// demo-app executable the nodes run (`std::env::current_exe()` from the CLI). With `progress`
/// a progress bar is drawn on stderr (when it is a terminal); one line per finished run is
/// printed to stderr either way.
pub async fn run(
    binary: &Path,
    opts: &Table1Options,
    progress: bool,
) -> Result<Report, Table1Error> {
    opts.validate()?;
    let started = Instant::now();
    let mut machine = Machine::probe();
    let total: u64 = opts.schemes.len() as u64 * (opts.users + opts.requests) as u64
        + opts.scaling_nodes.len() as u64 * 2 * (opts.scaling_users + opts.scaling_requests) as u64;
    let bar = if progress {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} requests, eta {eta} · {msg}",
        ) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    } else {
        ProgressBar::hidden()
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Table1Error::Load {
            run: "setup".into(),
            message: format!("building the HTTP client: {e}"),
        })?;
    let ctx = Ctx {
        binary,
        opts,
        client,
        bar: bar.clone(),
        interrupt: Interrupt::watch(),
    };
    let mut schemes = Vec::new();
    for scheme in &opts.schemes {
        let result = run_scheme(&ctx, *scheme).await;
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                bar.finish_and_clear();
                return Err(e);
            }
        };
        let line = match (&result.skipped, &result.measured) {
            (Some(reason), _) => format!("{}: skipped ({reason})", scheme.label()),
            (None, Some(m)) => format!("{}: {}", scheme.label(), summary(m)),
            (None, None) => format!("{}: no result", scheme.label()),
        };
        bar.suspend(|| eprintln!("{line}"));
        schemes.push(result);
    }
    let mut scaling = Vec::new();
    for &nodes in &opts.scaling_nodes {
        for replication in [Replication::All, Replication::Backups(1)] {
            let name = replication_name(replication);
            let run_name = format!("scaling: instant copy {name}, {nodes} nodes");
            let mut spec = ClusterSpec::new(nodes, BackendKind::Instantcopy);
            spec.replication = replication;
            spec.ack = Ack::Async;
            let m = match cluster_run(
                &ctx,
                &run_name,
                &spec,
                opts.scaling_users,
                opts.scaling_requests,
                opts.scaling_mix,
            )
            .await
            {
                Ok(m) => m,
                Err(e) => {
                    bar.finish_and_clear();
                    return Err(e);
                }
            };
            bar.suspend(|| eprintln!("{run_name}: {}", summary(&m)));
            scaling.push(ScalingResult {
                nodes,
                replication: name.to_owned(),
                measured: m,
            });
        }
    }
    bar.finish_and_clear();
    machine.load_after = crate::machine::loadavg();
    Ok(Report {
        version: env!("CARGO_PKG_VERSION"),
        options: opts.redacted(),
        machine,
        schemes,
        scaling,
        duration_secs: started.elapsed().as_secs_f64(),
        command: None,
    })
}

fn replication_name(r: Replication) -> &'static str {
    match r {
        Replication::All => "all",
        Replication::Backups(_) => "k=1",
    }
}

fn summary(m: &Measured) -> String {
    let mut s = format!(
        "{} requests in {:.1} s, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, N {:.3}, D {:.3}, {} errors",
        m.requests,
        m.seconds,
        m.throughput_rps,
        m.latency.p50_ms,
        m.latency.p99_ms,
        m.n_per_request,
        m.d_per_request,
        m.errors.total
    );
    if let Some(r) = &m.replication {
        let _ = write!(
            s,
            ", {:.2} replication messages per write",
            r.messages_per_write
        );
    }
    s
}

/// What every run needs.
struct Ctx<'a> {
    binary: &'a Path,
    opts: &'a Table1Options,
    client: reqwest::Client,
    bar: ProgressBar,
    interrupt: Interrupt,
}

/// A name for this run's schema / key prefix: `compare_<pid>_<random>`.
fn unique_name() -> String {
    let mut r = [0u8; 5];
    session_core::fill_random(&mut r);
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    format!("compare_{}_{hex}", std::process::id())
}

async fn run_scheme(ctx: &Ctx<'_>, scheme: Scheme) -> Result<SchemeResult, Table1Error> {
    let opts = ctx.opts;
    let mut result = SchemeResult::new(scheme);
    let run_name = scheme.label().to_owned();
    let mut spec = ClusterSpec::new(opts.nodes, scheme.backend());
    match scheme {
        Scheme::InstantCopyAll => spec.replication = Replication::All,
        Scheme::InstantCopyK1 => spec.replication = Replication::Backups(1),
        Scheme::Cookie => {}
        Scheme::Sql => {
            if let Err(reason) = check_postgres(&opts.database_url, opts.service_timeout).await {
                result.skipped = Some(reason);
            } else {
                let schema = unique_name();
                backend_sql::testing::create_schema(&opts.database_url, &schema)
                    .await
                    .map_err(|message| Table1Error::Prepare {
                        run: run_name.clone(),
                        what: format!("the schema {schema}"),
                        message,
                    })?;
                spec.database_url = Some(opts.database_url.clone());
                spec.sql_schema = Some(schema.clone());
                result.isolation = Some(schema);
            }
        }
        Scheme::Redis => {
            if let Err(reason) = check_redis(&opts.redis_url, opts.service_timeout).await {
                result.skipped = Some(reason);
            } else {
                let prefix = format!("{}:", unique_name());
                spec.redis_url = Some(opts.redis_url.clone());
                spec.redis_prefix = Some(prefix.clone());
                result.isolation = Some(prefix);
            }
        }
    }
    if result.skipped.is_some() {
        ctx.bar.inc((opts.users + opts.requests) as u64);
        return Ok(result);
    }
    spec.ack = Ack::Async;
    let measured = cluster_run(ctx, &run_name, &spec, opts.users, opts.requests, opts.mix).await;
    if let Some(name) = &result.isolation {
        let cleanup = match scheme {
            Scheme::Sql => backend_sql::testing::drop_schema(&opts.database_url, name)
                .await
                .map(|()| format!("dropped the schema {name}")),
            Scheme::Redis => backend_redis::testing::delete_keys_under(&opts.redis_url, name)
                .await
                .map(|n| format!("deleted {n} keys under {name}")),
            _ => Ok(String::new()),
        };
        result.cleanup = Some(match cleanup {
            Ok(done) => done,
            Err(e) => {
                let msg = format!("cleanup of {name} failed: {e}");
                ctx.bar
                    .suspend(|| eprintln!("warning: {}: {msg}", scheme.label()));
                msg
            }
        });
    }
    result.measured = Some(measured?);
    Ok(result)
}

/// Starts a cluster, runs the workload on it, stops it.
async fn cluster_run(
    ctx: &Ctx<'_>,
    run_name: &str,
    spec: &ClusterSpec,
    users: usize,
    requests: usize,
    mix: Mix,
) -> Result<Measured, Table1Error> {
    ctx.bar
        .set_message(format!("{run_name}: starting {} nodes", spec.nodes));
    let t0 = Instant::now();
    let interrupted = || Table1Error::Interrupted {
        run: run_name.to_owned(),
    };
    // An interrupted start drops the half-started cluster, which kills its nodes.
    let mut cluster = tokio::select! {
        c = LocalCluster::start(ctx.binary, spec) => c.map_err(|source| Table1Error::Cluster {
            run: run_name.to_owned(),
            source,
        })?,
        () = ctx.interrupt.wait() => return Err(interrupted()),
    };
    let start_secs = t0.elapsed().as_secs_f64();
    ctx.bar.set_message(run_name.to_owned());
    let urls = cluster.urls();
    let wire = WireTargets::of(&cluster, spec);
    let measured = tokio::select! {
        m = workload(ctx, run_name, &urls, &wire, users, requests, mix) => m,
        () = ctx.interrupt.wait() => Err(interrupted()),
    };
    cluster.stop(Duration::from_secs(10)).await;
    let mut m = measured?;
    m.cluster_start_secs = start_secs;
    Ok(m)
}

/// Whose connections count as node ↔ store/peer traffic, and to which ports.
struct WireTargets {
    target: &'static str,
    pids: Vec<u32>,
    ports: Vec<u16>,
}

impl WireTargets {
    fn of(cluster: &LocalCluster, spec: &ClusterSpec) -> Self {
        let port = |url: &Option<String>, default: u16| {
            url.as_deref()
                .and_then(|u| reqwest::Url::parse(u).ok())
                .and_then(|u| u.port())
                .unwrap_or(default)
        };
        let (target, ports) = match spec.backend {
            BackendKind::Instantcopy => (
                "peers",
                cluster
                    .nodes
                    .iter()
                    .filter_map(|n| n.cluster_addr.map(|a| a.port()))
                    .collect(),
            ),
            BackendKind::Redis => ("Redis", vec![port(&spec.redis_url, 6379)]),
            BackendKind::Sql => ("PostgreSQL", vec![port(&spec.database_url, 5432)]),
            BackendKind::Cookie => ("nothing", Vec::new()),
        };
        WireTargets {
            target,
            pids: cluster.nodes.iter().filter_map(|n| n.pid()).collect(),
            ports,
        }
    }

    fn sampler(&self) -> Result<sockets::Sampler, String> {
        sockets::Sampler::start(self.pids.clone(), self.ports.clone())
    }
}

/// Watches for Ctrl-C from the start of a run; the watch ends when the run does.
struct Interrupt {
    rx: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Interrupt {
    fn watch() -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        // On Unix the handler is installed right here, before anything is created that an
        // interrupt must clean up.
        #[cfg(unix)]
        let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
        let task = tokio::spawn(async move {
            #[cfg(unix)]
            let caught = match signal {
                Some(mut s) => s.recv().await.is_some(),
                None => false,
            };
            #[cfg(not(unix))]
            let caught = tokio::signal::ctrl_c().await.is_ok();
            if caught {
                let _ = tx.send(true);
            } else {
                // The signal cannot be watched: never report an interrupt.
                std::future::pending::<()>().await;
            }
        });
        Interrupt { rx, task }
    }

    /// Resolves once Ctrl-C was pressed.
    async fn wait(&self) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|hit| *hit).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Login,
    Profile,
    Cart,
    AddItem,
    RemoveItem,
}

impl Op {
    fn route(self) -> &'static str {
        match self {
            Op::Login => "POST /login",
            Op::Profile => "GET /profile",
            Op::Cart => "GET /cart",
            Op::AddItem => "POST /cart/items",
            Op::RemoveItem => "DELETE /cart/items/{sku}",
        }
    }

    fn is_write(self) -> bool {
        matches!(self, Op::Login | Op::AddItem | Op::RemoveItem)
    }

    fn from_route(route: &str) -> Option<Op> {
        [
            Op::Login,
            Op::Profile,
            Op::Cart,
            Op::AddItem,
            Op::RemoveItem,
        ]
        .into_iter()
        .find(|op| op.route() == route)
    }
}

/// Bytes of one header line on the HTTP/1.1 wire: `name: value\r\n`.
fn header_line_len(name: &str, value_len: usize) -> u64 {
    (name.len() + 2 + value_len + 2) as u64
}

/// What one user (or the whole phase, merged) saw.
#[derive(Debug, Default)]
struct Tally {
    latencies: BTreeMap<&'static str, Vec<u32>>,
    requests: u64,
    writes: u64,
    relogins: u64,
    token_bytes: u64,
    /// Session header bytes on the wire, `[reads, writes]`: the `Cookie` header lines sent.
    header_bytes_up: [u64; 2],
    /// The same for the `Set-Cookie` header lines received.
    header_bytes_down: [u64; 2],
    errors: ErrorReport,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        for (route, mut l) in other.latencies {
            self.latencies.entry(route).or_default().append(&mut l);
        }
        self.requests += other.requests;
        self.writes += other.writes;
        self.relogins += other.relogins;
        self.token_bytes += other.token_bytes;
        for i in 0..2 {
            self.header_bytes_up[i] += other.header_bytes_up[i];
            self.header_bytes_down[i] += other.header_bytes_down[i];
        }
        self.errors.merge(other.errors);
    }

    /// Latencies of the reads (`false`) or the writes (`true`).
    fn latencies_of(&self, writes: bool) -> Vec<u32> {
        self.latencies
            .iter()
            .filter(|(route, _)| Op::from_route(route).is_some_and(|op| op.is_write() == writes))
            .flat_map(|(_, l)| l.iter().copied())
            .collect()
    }

    fn all_latencies(&self) -> Vec<u32> {
        self.latencies.values().flatten().copied().collect()
    }
}

/// What the user tasks share.
struct Load {
    client: reqwest::Client,
    urls: Vec<String>,
    bar: ProgressBar,
}

/// A browser-like user: one session token, requests one after another.
struct VirtualUser {
    name: String,
    token: Option<String>,
    rng: SmallRng,
}

/// Applies one `Set-Cookie` header to the user's token (a removal cookie clears it).
fn apply_set_cookie(token: &mut Option<String>, header: &str) {
    let first = header.split(';').next().unwrap_or_default();
    let Some((name, value)) = first.split_once('=') else {
        return;
    };
    if name.trim() != COOKIE {
        return;
    }
    let removal = header
        .split(';')
        .skip(1)
        .any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
    let value = value.trim();
    *token = if removal || value.is_empty() {
        None
    } else {
        Some(value.to_owned())
    };
}

impl VirtualUser {
    /// Sends one request to a random node and records what happened.
    async fn send(&mut self, load: &Load, op: Op, tally: &mut Tally) {
        let node = self.rng.random_range(0..load.urls.len());
        let base = &load.urls[node];
        let client = &load.client;
        let req = match op {
            Op::Login => client
                .post(format!("{base}/login"))
                .json(&json!({ "user": self.name })),
            Op::Profile => client.get(format!("{base}/profile")),
            Op::Cart => client.get(format!("{base}/cart")),
            Op::AddItem => {
                let sku = self.rng.random_range(0..SKUS);
                let qty = self.rng.random_range(1..=3u32);
                client
                    .post(format!("{base}/cart/items"))
                    .json(&json!({ "sku": format!("sku-{sku:02}"), "qty": qty }))
            }
            Op::RemoveItem => {
                let sku = self.rng.random_range(0..SKUS);
                client.delete(format!("{base}/cart/items/sku-{sku:02}"))
            }
        };
        let had_token = self.token.is_some();
        let kind = usize::from(op.is_write());
        let req = match &self.token {
            Some(t) => {
                tally.token_bytes += t.len() as u64;
                let value = format!("{COOKIE}={t}");
                tally.header_bytes_up[kind] += header_line_len("Cookie", value.len());
                req.header(reqwest::header::COOKIE, value)
            }
            None => req,
        };
        tally.requests += 1;
        if op.is_write() {
            tally.writes += 1;
        }
        let start = Instant::now();
        let result = async {
            let res = req.send().await?;
            let status = res.status().as_u16();
            let cookies: Vec<String> = res
                .headers()
                .get_all(reqwest::header::SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect();
            res.bytes().await?;
            Ok::<_, reqwest::Error>((status, cookies))
        }
        .await;
        let took = start.elapsed();
        load.bar.inc(1);
        let route = op.route();
        let node_id = node + 1;
        match result {
            Err(e) => {
                tally.errors.transport += 1;
                tally.errors.add(
                    format!("{route}: transport"),
                    format!("{route} on node {node_id}: {e}"),
                );
            }
            Ok((status, cookies)) => {
                let micros = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
                tally.latencies.entry(route).or_default().push(micros);
                for c in &cookies {
                    tally.header_bytes_down[kind] += header_line_len("Set-Cookie", c.len());
                    apply_set_cookie(&mut self.token, c);
                }
                if status != 200 {
                    tally.errors.add(
                        format!("{route} → {status}"),
                        format!("{route} on node {node_id} answered {status}"),
                    );
                    if status == 401 && op != Op::Login && had_token {
                        tally.errors.lost_sessions += 1;
                        self.token = None;
                    }
                } else if op == Op::Login && self.token.is_none() {
                    tally.errors.add(
                        format!("{route}: no cookie"),
                        format!("{route} on node {node_id} answered 200 without a session cookie"),
                    );
                }
            }
        }
    }
}

/// The `session_*` series of every node, summed by series name (labels dropped).
type Scrape = BTreeMap<String, f64>;

/// Sums an OpenMetrics/Prometheus text exposition by metric name (labels dropped), parsed by
/// [`openmetrics::Scrape`](crate::openmetrics::Scrape). Bucket series are skipped. Series with
/// a `kind` label (the per-request costs) are also summed under `name{kind="..."}`.
pub fn sum_by_name(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for sample in crate::openmetrics::Scrape::parse(text).samples {
        if sample.name.ends_with("_bucket") {
            continue;
        }
        if let Some(kind) = sample.label("kind") {
            *out.entry(format!("{}{{kind=\"{kind}\"}}", sample.name))
                .or_insert(0.0) += sample.value;
        }
        *out.entry(sample.name).or_insert(0.0) += sample.value;
    }
    out
}

async fn get_text(client: &reqwest::Client, url: &str, run: &str) -> Result<String, Table1Error> {
    let err = |message: String| Table1Error::Scrape {
        run: run.to_owned(),
        url: url.to_owned(),
        message,
    };
    let res = client
        .get(url)
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    if !res.status().is_success() {
        return Err(err(format!("status {}", res.status())));
    }
    res.text().await.map_err(|e| err(e.to_string()))
}

/// Scrapes every node's `/metrics` and sums the `session_*` series over the nodes.
async fn scrape(ctx: &Ctx<'_>, urls: &[String], run: &str) -> Result<Scrape, Table1Error> {
    let mut total = Scrape::new();
    for url in urls {
        let text = get_text(&ctx.client, &format!("{url}/metrics"), run).await?;
        for (name, v) in sum_by_name(&text) {
            if name.starts_with("session_") {
                *total.entry(name).or_insert(0.0) += v;
            }
        }
    }
    Ok(total)
}

/// Updates still queued for peers, over every node (0 for backends without peers).
async fn queued(ctx: &Ctx<'_>, urls: &[String], run: &str) -> Result<u64, Table1Error> {
    let mut n = 0;
    for url in urls {
        let status_url = format!("{url}/status.json");
        let text = get_text(&ctx.client, &status_url, run).await?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Table1Error::Scrape {
                run: run.to_owned(),
                url: status_url.clone(),
                message: format!("not JSON: {e}"),
            })?;
        n += v["peers"]
            .as_array()
            .map_or(0, |p| p.iter().filter_map(|p| p["queued"].as_u64()).sum());
    }
    Ok(n)
}

/// Scrapes until replication has gone quiet: nothing queued and the counters unchanged over
/// 100 ms (at most 10 s; then the last scrape is used).
async fn scrape_settled(ctx: &Ctx<'_>, urls: &[String], run: &str) -> Result<Scrape, Table1Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = scrape(ctx, urls, run).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let pending = queued(ctx, urls, run).await?;
        let now = scrape(ctx, urls, run).await?;
        if (pending == 0 && now == last) || Instant::now() >= deadline {
            return Ok(now);
        }
        last = now;
    }
}

fn delta(before: &Scrape, after: &Scrape, name: &str) -> f64 {
    after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
}

/// Logs `users` users in, then sends `requests` requests of `mix`, and measures.
async fn workload(
    ctx: &Ctx<'_>,
    run: &str,
    urls: &[String],
    wire: &WireTargets,
    users: usize,
    requests: usize,
    mix: Mix,
) -> Result<Measured, Table1Error> {
    let load = Arc::new(Load {
        client: ctx.client.clone(),
        urls: urls.to_vec(),
        bar: ctx.bar.clone(),
    });
    let join_err = |e: tokio::task::JoinError| Table1Error::Load {
        run: run.to_owned(),
        message: format!("a virtual user task failed: {e}"),
    };
    // Phase 1: every user logs in on a random node.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..users {
        let load = load.clone();
        let mut user = VirtualUser {
            name: format!("user-{i}"),
            token: None,
            rng: SmallRng::seed_from_u64(ctx.opts.seed.wrapping_add(i as u64)),
        };
        set.spawn(async move {
            let mut tally = Tally::default();
            user.send(&load, Op::Login, &mut tally).await;
            (i, user, tally)
        });
    }
    let mut logged_in: Vec<(usize, VirtualUser)> = Vec::with_capacity(users);
    let mut logins = Tally::default();
    while let Some(r) = set.join_next().await {
        let (i, user, tally) = r.map_err(join_err)?;
        logins.merge(tally);
        logged_in.push((i, user));
    }
    logged_in.sort_by_key(|(i, _)| *i);
    let before = scrape_settled(ctx, urls, run).await?;
    let sampler = wire.sampler();

    // Phase 2: the workload, each user's share sent one request after another.
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, mut user) in logged_in {
        let share = requests / users + usize::from(i < requests % users);
        let load = load.clone();
        set.spawn(async move {
            let mut tally = Tally::default();
            for _ in 0..share {
                if user.token.is_none() {
                    tally.relogins += 1;
                    user.send(&load, Op::Login, &mut tally).await;
                }
                let op = mix.pick(user.rng.random_range(0..mix.total()));
                user.send(&load, op, &mut tally).await;
            }
            tally
        });
    }
    let mut tally = Tally::default();
    while let Some(r) = set.join_next().await {
        tally.merge(r.map_err(join_err)?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = scrape_settled(ctx, urls, run).await?;
    let wire_delta = sampler.and_then(sockets::Sampler::finish);

    let reqs = tally.requests.max(1) as f64;
    let d = |name: &str| delta(&before, &after, name);
    let kind_stats = |write: bool| {
        let kind = if write { "write" } else { "read" };
        let i = usize::from(write);
        let series = |name: &str| d(&format!("{name}{{kind=\"{kind}\"}}"));
        let layer = series("session_requests_total");
        let requests = if write {
            tally.writes
        } else {
            tally.requests - tally.writes
        };
        let per = |v: f64, n: f64| if n > 0.0 { v / n } else { 0.0 };
        KindStats {
            requests,
            latency: LatencyStats::from_micros(&mut tally.latencies_of(write)),
            layer_requests: layer,
            n_per_request: per(series("session_request_network_calls_total"), layer),
            d_per_request: per(series("session_request_db_calls_total"), layer),
            client_bytes_up: per(tally.header_bytes_up[i] as f64, requests as f64),
            client_bytes_down: per(tally.header_bytes_down[i] as f64, requests as f64),
        }
    };
    let reads = kind_stats(false);
    let writes_stats = kind_stats(true);
    // Replication is divided over the writes the layer counted (the writes that changed a
    // session, which are what replicates), else over the writes sent.
    let write_count = if writes_stats.layer_requests > 0.0 {
        writes_stats.layer_requests
    } else {
        tally.writes.max(1) as f64
    };
    let (backend_wire, backend_wire_error) = match wire_delta {
        Ok(delta) => {
            let gossip = d("session_instantcopy_gossip_sent_bytes_total");
            let total = delta.bytes as f64 + gossip;
            (
                Some(BackendWire {
                    target: wire.target,
                    tcp_bytes: delta.bytes,
                    gossip_bytes: gossip,
                    connections: delta.connections,
                    closed_connections: delta.closed,
                    bytes_per_request: total / reqs,
                    bytes_per_write: total / write_count,
                }),
                None,
            )
        }
        Err(e) => (None, Some(e)),
    };
    let network_calls = delta(&before, &after, "session_network_calls_total");
    let db_calls = delta(&before, &after, "session_db_calls_total");
    let bytes_count = delta(&before, &after, "session_client_bytes_count");
    let replication = after
        .contains_key("session_instantcopy_push_updates_total")
        .then(|| {
            let writes = write_count;
            let queued = delta(&before, &after, "session_instantcopy_push_queued_total");
            let updates = delta(&before, &after, "session_instantcopy_push_updates_total");
            let batches = delta(&before, &after, "session_instantcopy_push_batches_total");
            let bytes = delta(&before, &after, "session_instantcopy_push_bytes_total");
            ReplicationStats {
                queued,
                queued_per_write: queued / writes,
                updates,
                batches,
                bytes,
                messages_per_write: updates / writes,
                batches_per_write: batches / writes,
                bytes_per_write: bytes / writes,
            }
        });
    let counter_deltas = after
        .keys()
        .map(|k| (k.clone(), delta(&before, &after, k)))
        .collect();
    let mut errors = logins.errors.clone();
    errors.merge(tally.errors.clone());
    let routes = tally
        .latencies
        .iter_mut()
        .map(|(r, l)| ((*r).to_owned(), LatencyStats::from_micros(l)))
        .collect();
    Ok(Measured {
        nodes: urls.len(),
        users,
        requests: tally.requests,
        writes: tally.writes,
        relogins: tally.relogins,
        seconds,
        throughput_rps: tally.requests as f64 / seconds.max(1e-9),
        latency: LatencyStats::from_micros(&mut tally.all_latencies()),
        routes,
        login_latency: LatencyStats::from_micros(&mut logins.all_latencies()),
        client_bytes_mean: tally.token_bytes as f64 / reqs,
        server_client_bytes_mean: (bytes_count > 0.0)
            .then(|| delta(&before, &after, "session_client_bytes_sum") / bytes_count),
        n_per_request: network_calls / reqs,
        d_per_request: db_calls / reqs,
        network_calls,
        db_calls,
        n_per_write_total: writes_stats.n_per_request
            + replication.as_ref().map_or(0.0, |r| r.batches_per_write),
        replication,
        reads,
        writes_stats,
        backend_wire,
        backend_wire_error,
        errors,
        counter_deltas,
        cluster_start_secs: 0.0,
    })
}

/// The URL with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(an unparsable URL)".into(),
    }
}

/// TCP-connects to the URL's host and port (`default_port` when the URL has none). URLs
/// without a host (Unix sockets) pass: the real connect that follows decides.
async fn check_tcp(url: &str, default_port: u16, timeout: Duration) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        return Ok(());
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port().unwrap_or(default_port);
    match tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot connect to {host}:{port}: {e}")),
        Err(_) => Err(format!(
            "cannot connect to {host}:{port}: no answer within {} ms",
            timeout.as_millis()
        )),
    }
}

/// Checks that PostgreSQL answers `SELECT 1`; the error is the reason to skip.
pub async fn check_postgres(url: &str, timeout: Duration) -> Result<(), String> {
    let fail = |why: String| format!("PostgreSQL at {} is unreachable: {why}", redact(url));
    check_tcp(url, 5432, timeout).await.map_err(fail)?;
    let work = async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .map_err(|e| e.to_string())?;
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let _ = conn.close().await;
        if one == 1 {
            Ok(())
        } else {
            Err(format!("SELECT 1 returned {one}"))
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r.map_err(fail),
        Err(_) => Err(fail(format!(
            "no answer to SELECT 1 within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// Checks that Redis answers `PING`; the error is the reason to skip.
pub async fn check_redis(url: &str, timeout: Duration) -> Result<(), String> {
    let fail = |why: String| format!("Redis at {} is unreachable: {why}", redact(url));
    check_tcp(url, 6379, timeout).await.map_err(fail)?;
    let work = async {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut con)
            .await
            .map_err(|e| e.to_string())?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(format!("PING answered {pong:?}"))
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r.map_err(fail),
        Err(_) => Err(fail(format!(
            "no answer to PING within {} ms",
            timeout.as_millis()
        ))),
    }
}

impl Report {
    /// The charts: `(file name, SVG)`.
    pub fn charts(&self) -> Result<Vec<(&'static str, String)>, Table1Error> {
        let mut out = Vec::new();
        if !self.schemes.is_empty() {
            let categories: Vec<String> = self
                .schemes
                .iter()
                .map(|s| {
                    if s.measured.is_some() {
                        s.label.to_owned()
                    } else {
                        format!("{} (skipped)", s.label)
                    }
                })
                .collect();
            let pick = |f: fn(&Measured) -> f64| -> Vec<Option<f64>> {
                self.schemes
                    .iter()
                    .map(|s| s.measured.as_ref().map(f))
                    .collect()
            };
            let conditions = format!(
                "{} nodes, {} users, {} requests",
                self.options.nodes, self.options.users, self.options.requests
            );
            let latency = BarChart {
                title: format!("Request latency per scheme ({conditions})"),
                x_desc: "scheme".into(),
                y_desc: "latency (ms)".into(),
                categories: categories.clone(),
                series: vec![
                    BarSeries {
                        name: "p50".into(),
                        values: pick(|m| m.latency.p50_ms),
                    },
                    BarSeries {
                        name: "p99".into(),
                        values: pick(|m| m.latency.p99_ms),
                    },
                ],
                decimals: 2,
            };
            out.push(("latency.svg", latency.to_svg()?));
            let throughput = BarChart {
                title: format!("Throughput per scheme ({conditions})"),
                x_desc: "scheme".into(),
                y_desc: "requests per second".into(),
                categories,
                series: vec![BarSeries {
                    name: "req/s".into(),
                    values: pick(|m| m.throughput_rps),
                }],
                decimals: 0,
            };
            out.push(("throughput.svg", throughput.to_svg()?));
        }
        if !self.scaling.is_empty() {
            let lines = |f: fn(&Measured) -> f64| -> Vec<Line> {
                ["all", "k=1"]
                    .iter()
                    .map(|name| Line {
                        name: format!("instant copy {name}"),
                        points: self
                            .scaling
                            .iter()
                            .filter(|s| s.replication == *name)
                            .map(|s| (s.nodes as f64, f(&s.measured)))
                            .collect(),
                    })
                    .collect()
            };
            let mut ticks: Vec<f64> = self.scaling.iter().map(|s| s.nodes as f64).collect();
            ticks.dedup();
            let chart = LinePanels {
                title: format!(
                    "Instant copy: replicate to all vs k=1 ({:.0}% writes)",
                    self.options.scaling_mix.write_percent()
                ),
                x_desc: "nodes".into(),
                x_ticks: ticks,
                panels: vec![
                    Panel {
                        title: "replication messages per write".into(),
                        y_desc: "updates sent to peers per write".into(),
                        lines: lines(|m| {
                            m.replication.as_ref().map_or(0.0, |r| r.messages_per_write)
                        }),
                    },
                    Panel {
                        title: "bytes per write".into(),
                        y_desc: "node <-> peer bytes per write".into(),
                        lines: lines(|m| {
                            m.backend_wire.as_ref().map_or(0.0, |w| w.bytes_per_write)
                        }),
                    },
                    Panel {
                        title: "throughput".into(),
                        y_desc: "requests per second".into(),
                        lines: lines(|m| m.throughput_rps),
                    },
                ],
            };
            out.push(("scaling.svg", chart.to_svg()?));
        }
        Ok(out)
    }

    /// Writes `results.json`, `results.md` and the SVG charts into `dir` (created if
    /// missing); returns the files written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, Table1Error> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Table1Error::Output { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut files = Vec::new();
        let mut write = |name: &str, contents: &[u8]| -> Result<(), Table1Error> {
            let path = dir.join(name);
            std::fs::write(&path, contents).map_err(io(&path))?;
            files.push(path);
            Ok(())
        };
        write(
            "results.json",
            serde_json::to_string_pretty(self)?.as_bytes(),
        )?;
        write("results.md", self.markdown().as_bytes())?;
        for (name, svg) in self.charts()? {
            write(name, svg.as_bytes())?;
        }
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_parse_and_describe_themselves() {
        for s in Scheme::ALL {
            assert_eq!(s.id().parse::<Scheme>().unwrap(), s);
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.id().into())
            );
        }
        let e = "memcached".parse::<Scheme>().unwrap_err();
        assert!(e.contains("instantcopy-all"), "{e}");
        assert_eq!(Scheme::Sql.lives(), "PostgreSQL");
        assert_eq!(Scheme::InstantCopyK1.backend(), BackendKind::Instantcopy);
    }

    #[test]
    fn mix_picks_by_weight() {
        let m = Mix::READ_MOSTLY;
        assert_eq!(m.total(), 100);
        let mut counts = BTreeMap::new();
        for d in 0..m.total() {
            *counts.entry(m.pick(d).route()).or_insert(0) += 1;
        }
        assert_eq!(counts["GET /profile"], 75);
        assert_eq!(counts["GET /cart"], 10);
        assert_eq!(counts["POST /cart/items"], 12);
        assert_eq!(counts["DELETE /cart/items/{sku}"], 3);
        assert_eq!(m.write_percent(), 15.0);
        assert_eq!(
            m.describe(),
            "75% GET /profile, 10% GET /cart, 12% POST /cart/items, 3% DELETE /cart/items/{sku}"
        );
        assert_eq!(Mix::WRITE_HEAVY.write_percent(), 60.0);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut s: Vec<u32> = (1..=100).rev().map(|ms| ms * 1000).collect();
        let l = LatencyStats::from_micros(&mut s);
        assert_eq!(l.count, 100);
        assert_eq!(
            (l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(l.mean_ms, 50.5);
        assert_eq!(LatencyStats::from_micros(&mut []), LatencyStats::default());
        let one = LatencyStats::from_micros(&mut [2500]);
        assert_eq!((one.p50_ms, one.p99_ms), (2.5, 2.5));
    }

    #[test]
    fn exposition_sums_by_name_across_labels() {
        let text = "# HELP session_network_calls Calls\n\
                    # TYPE session_network_calls counter\n\
                    session_network_calls_total 7\n\
                    session_instantcopy_push_updates_total{peer=\"2\"} 5\n\
                    session_instantcopy_push_updates_total{peer=\"3\"} 6\n\
                    http_request_duration_seconds_bucket{route=\"/cart/items/{sku}\",le=\"0.005\"} 3\n\
                    http_request_duration_seconds_sum{route=\"/cart\"} 0.25\n\
                    spaced{a=\"x y\"} 2.5\n\
                    session_client_bytes_sum 1.5e3\n\
                    broken{a=\"unterminated 1\n\
                    notanumber abc\n\
                    session_requests_total{kind=\"read\"} 4\n\
                    session_requests_total{kind=\"write\"} 1\n\
                    labelled_total{node=\"1\",kind=\"write\"} 2\n\
                    lookalike_total{subkind=\"read\"} 9\n\
                    # EOF\n";
        let m = sum_by_name(text);
        // Series with a `kind` label are kept apart by kind as well as summed.
        assert_eq!(m["session_requests_total"], 5.0);
        assert_eq!(m["session_requests_total{kind=\"read\"}"], 4.0);
        assert_eq!(m["session_requests_total{kind=\"write\"}"], 1.0);
        assert_eq!(m["labelled_total{kind=\"write\"}"], 2.0);
        assert_eq!(m["lookalike_total"], 9.0);
        assert!(
            !m.keys().any(|k| k.starts_with("lookalike_total{")),
            "{m:?}"
        );
        assert_eq!(m["session_network_calls_total"], 7.0);
        assert_eq!(m["session_instantcopy_push_updates_total"], 11.0);
        assert_eq!(m["http_request_duration_seconds_sum"], 0.25);
        assert_eq!(m["spaced"], 2.5);
        assert_eq!(m["session_client_bytes_sum"], 1500.0);
        assert!(!m.contains_key("http_request_duration_seconds_bucket"));
        assert!(!m.contains_key("broken"));
        assert!(!m.contains_key("notanumber"));
    }

    #[test]
    fn set_cookie_updates_and_clears_the_token() {
        let mut t = None;
        apply_set_cookie(&mut t, "sid=abc.def; Path=/; HttpOnly; SameSite=Lax");
        assert_eq!(t.as_deref(), Some("abc.def"));
        apply_set_cookie(&mut t, "other=zzz; Path=/");
        assert_eq!(t.as_deref(), Some("abc.def"), "other cookies are ignored");
        apply_set_cookie(&mut t, "sid=; Path=/; Max-Age=0");
        assert_eq!(t, None);
        apply_set_cookie(&mut t, "sid=new; Path=/");
        apply_set_cookie(&mut t, "sid=new; Path=/; max-age=0");
        assert_eq!(t, None);
        apply_set_cookie(&mut t, "garbage");
        assert_eq!(t, None);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert!(!redact("not a url ::: s3cret").contains("s3cret"));
    }

    #[test]
    fn options_are_validated() {
        assert!(Table1Options::quick().validate().is_ok());
        assert!(Table1Options::full().validate().is_ok());
        let mut o = Table1Options::quick();
        o.nodes = 0;
        assert!(o.validate().unwrap_err().to_string().contains("--nodes"));
        let mut o = Table1Options::quick();
        o.scaling_nodes = vec![1];
        assert!(o.validate().unwrap_err().to_string().contains("scaling"));
        let mut o = Table1Options::quick();
        o.requests = 0;
        assert!(o.validate().is_err());
        let mut o = Table1Options::quick();
        o.schemes.clear();
        o.scaling_nodes.clear();
        assert!(o.validate().unwrap_err().to_string().contains("nothing"));
        let mut o = Table1Options::quick();
        o.database_url = "postgres://u:pw@h/db".into();
        assert_eq!(o.redacted().database_url, "postgres://u:***@h/db");
    }

    fn measured(p50: f64, n: f64) -> Measured {
        Measured {
            nodes: 3,
            users: 2,
            requests: 10,
            writes: 2,
            seconds: 1.0,
            throughput_rps: 10.0,
            latency: LatencyStats {
                count: 10,
                p50_ms: p50,
                p99_ms: p50 * 3.0,
                ..Default::default()
            },
            client_bytes_mean: 120.0,
            n_per_request: n,
            reads: KindStats {
                requests: 8,
                latency: LatencyStats {
                    count: 8,
                    p50_ms: p50,
                    p99_ms: p50 * 3.0,
                    ..Default::default()
                },
                layer_requests: 8.0,
                n_per_request: 1.0,
                client_bytes_up: 70.0,
                ..Default::default()
            },
            writes_stats: KindStats {
                requests: 2,
                latency: LatencyStats {
                    count: 2,
                    p50_ms: p50 * 2.0,
                    p99_ms: p50 * 6.0,
                    ..Default::default()
                },
                layer_requests: 2.0,
                n_per_request: 2.0,
                client_bytes_up: 70.0,
                client_bytes_down: 130.0,
                ..Default::default()
            },
            n_per_write_total: 2.0,
            backend_wire: Some(BackendWire {
                target: "Redis",
                tcp_bytes: 1800,
                connections: 3,
                bytes_per_request: 180.0,
                bytes_per_write: 900.0,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn table_has_a_row_per_scheme_and_skips_say_why() {
        let mut ran = SchemeResult::new(Scheme::Redis);
        ran.measured = Some(measured(1.25, 1.2));
        let mut skipped = SchemeResult::new(Scheme::Sql);
        skipped.skipped = Some("PostgreSQL at x is unreachable: refused | down".into());
        let report = Report {
            version: "0",
            options: Table1Options::quick(),
            machine: Machine::probe(),
            schemes: vec![ran, skipped],
            scaling: vec![],
            duration_secs: 1.0,
            command: Some("bench table1 --quick".into()),
        };
        let t = report.table();
        let rows: Vec<&str> = t.lines().collect();
        assert_eq!(rows.len(), 4, "{t}");
        assert_eq!(
            rows[2],
            "| Redis | Redis | 1.000 | 2.00 | 0 | 0 | 70 + 0 | 70 + 130 | 180 | 1.25 / 3.75 | 2.50 / 7.50 | 10 | 0 | N = 1, D = 0 |"
        );
        let columns = |r: &str| r.replace("\\|", "").matches('|').count();
        assert_eq!(columns(rows[3]), columns(rows[2]), "{t}");
        assert!(report.markdown().contains("by `bench table1 --quick`"));
        assert!(rows[3].contains("skipped: PostgreSQL at x is unreachable: refused \\| down"));
        assert!(
            report
                .markdown()
                .contains("2 nodes per scheme, 4 virtual users")
        );
        assert!(report.scaling_table().is_empty());
        let charts = report.charts().unwrap();
        let names: Vec<&str> = charts.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["latency.svg", "throughput.svg"]);
        assert!(charts[0].1.contains("SQL (PostgreSQL) (skipped)"));
    }

    #[tokio::test]
    async fn unreachable_services_give_a_reason() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let t = Duration::from_millis(500);
        let e = check_postgres(&format!("postgres://u:pw@127.0.0.1:{port}/db"), t)
            .await
            .unwrap_err();
        assert!(
            e.contains("unreachable") && e.contains(&format!("127.0.0.1:{port}")),
            "{e}"
        );
        assert!(!e.contains("pw"), "the password leaked: {e}");
        let e = check_redis(&format!("redis://127.0.0.1:{port}"), t)
            .await
            .unwrap_err();
        assert!(e.starts_with("Redis at"), "{e}");
        let e = check_redis("::nonsense", t).await.unwrap_err();
        assert!(e.contains("invalid URL"), "{e}");
    }
}
