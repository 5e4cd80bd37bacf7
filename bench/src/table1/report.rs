//! What a run measured: the per-scheme and scaling results, the machine, and the files they
//! become (results.json, results.md via `tables`, the SVG charts).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::charts::{BarChart, BarSeries, Line, LinePanels, Panel};

use super::*;

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
    pub(super) fn add(&mut self, kind: String, message: String) {
        self.total += 1;
        *self.by_kind.entry(kind).or_default() += 1;
        if self.samples.len() < 8 {
            self.samples.push(message);
        }
    }

    pub(super) fn merge(&mut self, other: ErrorReport) {
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
    pub(super) fn new(scheme: Scheme) -> Self {
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
    pub(super) fn probe() -> Self {
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
    /// Where the nodes' CPU went, per run (with `--profile`; written to `profile.md`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<super::profile::Profile>,
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
        if !self.profiles.is_empty() {
            write(
                "profile.md",
                super::profile::markdown(&self.profiles).as_bytes(),
            )?;
        }
        Ok(files)
    }
}
