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

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backend_instantcopy::{Ack, Replication};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::charts::ChartError;
use demo_app::cluster::{ClusterError, ClusterSpec, LocalCluster};
use demo_app::config::BackendKind;

pub mod cli;
mod generator;
mod options;
pub mod profile;
mod report;
mod scrape;
mod services;
pub mod sockets;
mod tables;

pub use options::{DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, Mix, Scheme, Table1Options};
pub use report::{
    BackendWire, ErrorReport, KindStats, LatencyStats, Machine, Measured, ReplicationStats, Report,
    ScalingResult, SchemeResult,
};
pub use scrape::sum_by_name;
pub use services::{check_postgres, check_redis, redact};
pub use tables::{BEGIN_MARKER, END_MARKER, NoGeneratedBlock, generated_block, splice};
use {generator::*, scrape::*};

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
    /// `perf` could not sample the run's nodes (`--profile`).
    #[error("{run}: profiling: {message}")]
    Profile {
        /// Which run.
        run: String,
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
    if opts.profile.is_some() {
        profile::check().await.map_err(Table1Error::Options)?;
    }
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
        profiles: parking_lot::Mutex::new(Vec::new()),
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
        profiles: std::mem::take(&mut *ctx.profiles.lock()),
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
    /// The profiles of the runs so far (with `--profile`).
    profiles: parking_lot::Mutex<Vec<profile::Profile>>,
}

/// The near-cache capacity of the `instantcopy-k1-near` scheme: more than the sessions a run
/// creates, so the run measures the cache's hits and refreshes, not its evictions.
const NEAR_CACHE_CAPACITY: usize = 100_000;

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
        Scheme::InstantCopyK1Near => {
            spec.replication = Replication::Backups(1);
            spec.extra_env.push((
                "DEMO_BACKEND__INSTANTCOPY__NEAR_CACHE_CAPACITY".into(),
                NEAR_CACHE_CAPACITY.to_string(),
            ));
        }
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
    let profile_error = |message| Table1Error::Profile {
        run: run_name.to_owned(),
        message,
    };
    // Dropping the cluster on an early return kills its nodes.
    let recorder = match &ctx.opts.profile {
        Some(dir) => Some(
            profile::Recorder::start(dir, run_name, &wire.pids)
                .await
                .map_err(profile_error)?,
        ),
        None => None,
    };
    let measured = tokio::select! {
        m = workload(ctx, run_name, &urls, &wire, users, requests, mix) => m,
        () = ctx.interrupt.wait() => Err(interrupted()),
    };
    // The sampler stops before the nodes do, so their shutdown is not in the profile.
    let profiled = match (recorder, &measured) {
        (Some(recorder), Ok(m)) => Some(recorder.finish(m.requests).await),
        _ => None,
    };
    cluster.stop(Duration::from_secs(10)).await;
    let mut m = measured?;
    if let Some(profiled) = profiled {
        let p = profiled.map_err(profile_error)?;
        ctx.bar.suspend(|| {
            eprintln!(
                "{run_name}: profiled, {:.0} µs of node CPU per request ({})",
                p.cpu_us_per_request,
                p.report.display()
            )
        });
        ctx.profiles.lock().push(p);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use {options::*, report::*};

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
            profiles: Vec::new(),
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
