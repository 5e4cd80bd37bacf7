//! `bench operations`: what an operator waits for, measured on real in-process instant-copy
//! nodes over loopback (each node its own runtime, sockets and gossip, as in the crate's own
//! tests), with the production timings (`Config::default()`: a 500 ms probe period, 3 missed
//! probes to down, anti-entropy every 5 s, a 5 s drain timeout).
//!
//! * **Restart to ready**: a node of a 3-node cluster holding N sessions is killed and started
//!   again at once (faster than failure detection); the time from its start to
//!   `readiness().ready`, and how many sessions it holds by then.
//! * **Drain**: a node of a 3-node `replication = 1` cluster holding N sessions shuts down
//!   gracefully; the drain's own report (handed off, left behind, milliseconds).
//! * **Anti-entropy bytes**: one digest exchange between two nodes that hold the same N sessions,
//!   then one after a node missed the updates of 1 % of them; the bytes the exchange sent
//!   (digest messages, both directions) and what it repaired.
//! * **Join**: a new node given one seed joins a 3-node cluster holding N sessions; time from its
//!   start to its first replica and to ready.
//! * **Membership**: on 3 and on 8 nodes found through one seed, the time until every node sees
//!   every other as alive; gossip bytes per second per node at rest; the time until every
//!   survivor sees a killed (SIGKILL-like: no goodbye) node as not alive, and a drained one as
//!   gone.
//!
//! Every number is printed as it is measured (progress on stderr) and collected into one
//! Markdown section for `benches/RESULTS.md`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_instantcopy::testing::{Discovery, InProcessCluster, route_of, write};
use backend_instantcopy::{Ack, Config, NodeId, Replication};
use futures::StreamExt;
use session_core::{ExpiryPolicy, SessionId};

use crate::error::{BenchError, Result};

/// What to run.
#[derive(Debug, Clone)]
pub struct OperationsOptions {
    /// Session counts for restart, drain, anti-entropy and join (each size is one run).
    pub sessions: Vec<usize>,
    /// Cluster sizes for the membership measurements.
    pub membership_sizes: Vec<usize>,
    /// How long to count gossip bytes at rest.
    pub rest: Duration,
}

impl OperationsOptions {
    /// The numbers the README quotes: 10k and 100k sessions, 3 and 8 nodes.
    pub fn full() -> Self {
        OperationsOptions {
            sessions: vec![10_000, 100_000],
            membership_sizes: vec![3, 8],
            rest: Duration::from_secs(10),
        }
    }

    /// A smoke run in seconds.
    pub fn quick() -> Self {
        OperationsOptions {
            sessions: vec![500],
            membership_sizes: vec![3],
            rest: Duration::from_secs(2),
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub what: String,
    /// The measured value, formatted with its unit.
    pub value: String,
    /// Details (counts, conditions).
    pub note: String,
}

/// Everything measured, in order.
#[derive(Debug, Clone, Default)]
pub struct OperationsReport {
    /// The rows.
    pub rows: Vec<Row>,
}

impl OperationsReport {
    fn push(&mut self, what: String, value: String, note: String) {
        eprintln!("  {what}: {value} ({note})");
        self.rows.push(Row { what, value, note });
    }

    /// A Markdown table of the rows.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from("| measurement | value | details |\n|---|---|---|\n");
        for r in &self.rows {
            let _ = writeln!(out, "| {} | {} | {} |", r.what, r.value, r.note);
        }
        out
    }
}

/// The production timings on top of the test harness's configuration.
fn production(c: &mut Config) {
    let d = Config::default();
    c.connect_timeout = d.connect_timeout;
    c.request_timeout = d.request_timeout;
    c.ack_timeout = d.ack_timeout;
    c.heartbeat_interval = d.heartbeat_interval;
    c.failure_threshold = d.failure_threshold;
    c.sweep_jitter = d.sweep_jitter;
    c.join_timeout = d.join_timeout;
    c.anti_entropy_interval = d.anti_entropy_interval;
    c.drain_timeout = d.drain_timeout;
    c.seed_refresh_interval = d.seed_refresh_interval;
}

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError::msg(e.to_string())
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

async fn cluster(
    n: usize,
    replication: Replication,
    ack: Ack,
    tune: impl Fn(&mut Config),
) -> Result<Arc<InProcessCluster>> {
    let c = InProcessCluster::start_custom(
        n,
        n,
        Discovery::FirstAsSeed,
        ExpiryPolicy::default(),
        |cfg| {
            production(cfg);
            cfg.replication = replication;
            cfg.ack = ack;
            tune(cfg);
        },
    )
    .await
    .map_err(err)?;
    if !c.wait_ready(Duration::from_secs(30)).await {
        return Err(err("the cluster did not become ready within 30 s"));
    }
    Ok(c)
}

/// Creates `n` sessions on node 0 (64 in flight); their tokens.
async fn fill(c: &Arc<InProcessCluster>, n: usize) -> Result<Vec<String>> {
    let started = Instant::now();
    let node = c.node(0);
    let tokens: Vec<std::result::Result<String, _>> = futures::stream::iter(0..n)
        .map(|i| {
            let node = node.clone();
            async move { write(&node, None, "user", i as i64).await }
        })
        .buffered(64)
        .collect()
        .await;
    let tokens: Vec<String> = tokens
        .into_iter()
        .collect::<std::result::Result<_, _>>()
        .map_err(err)?;
    c.settle().await;
    eprintln!(
        "  (created {n} sessions in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(tokens)
}

/// Waits until every running node holds at least `n` sessions (all mode).
async fn wait_held(c: &InProcessCluster, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if c.running().iter().all(|x| x.sessions_held() >= n) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Polls `f` every millisecond; the time it took to hold, or `None` past `timeout`.
async fn time_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if f() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

async fn restart_to_ready(
    report: &mut OperationsReport,
    n: usize,
    replication: Replication,
    ack: Ack,
) -> Result<()> {
    let mode = format!("{replication:?}/{ack:?}");
    eprintln!("restart to ready: {n} sessions, {mode}");
    let c = cluster(3, replication, ack, |_| {}).await?;
    let _tokens = fill(&c, n).await?;
    if replication == Replication::All && !wait_held(&c, n, Duration::from_secs(60)).await {
        return Err(err("replicas never caught up before the restart"));
    }
    let before = c.instance(2).map_or(0, |x| x.sessions_held());
    c.kill(2);
    let started = Instant::now();
    c.restart(2).await.map_err(err)?;
    let node = c.instance(2).ok_or_else(|| err("restarted node missing"))?;
    let ready = time_until(Duration::from_secs(120), || node.readiness().ready)
        .await
        .map(|_| started.elapsed());
    let held = node.sessions_held();
    report.push(
        format!("restart → ready, {n} sessions, {mode}"),
        ready.map_or_else(|| "not within 120 s".into(), ms),
        format!("killed and restarted at once; held {held} of the {before} it held before"),
    );
    Ok(())
}

async fn drain(report: &mut OperationsReport, n: usize) -> Result<()> {
    eprintln!("drain: {n} sessions, replication 1 / ack one");
    let c = cluster(3, Replication::Backups(1), Ack::One, |_| {}).await?;
    let _tokens = fill(&c, n).await?;
    let held = c.instance(0).map_or(0, |x| x.sessions_held());
    let started = Instant::now();
    let d = c
        .drain(0)
        .await
        .ok_or_else(|| err("the drain did not report"))?;
    let wall = started.elapsed();
    report.push(
        format!("drain, {n} sessions, replication 1 / ack one"),
        format!("{} ms", d.elapsed_ms),
        format!(
            "node held {held}; {} handed off to {} peers, {} left behind{}; {} wall",
            d.handed_off,
            d.peers,
            d.left_behind,
            if d.timed_out {
                ", drain_timeout reached"
            } else {
                ""
            },
            ms(wall)
        ),
    );
    Ok(())
}

async fn anti_entropy(report: &mut OperationsReport, n: usize) -> Result<()> {
    eprintln!("anti-entropy: {n} sessions, all / async");
    // Rounds run only when asked here, so each one is measured alone.
    let c = cluster(3, Replication::All, Ack::Async, |cfg| {
        cfg.anti_entropy_interval = Duration::from_secs(3600);
    })
    .await?;
    let tokens = fill(&c, n).await?;
    if !wait_held(&c, n, Duration::from_secs(60)).await {
        return Err(err("replicas never caught up"));
    }
    let n1 = c.instance(0).ok_or_else(|| err("node 1 missing"))?;
    let n3 = c.instance(2).ok_or_else(|| err("node 3 missing"))?;
    let round = |node: backend_instantcopy::InstantCopyNode| async move {
        node.anti_entropy()
            .await
            .into_iter()
            .find(|(peer, _)| *peer == NodeId(1))
            .map(|(_, r)| r)
    };
    let level = round(n3.clone())
        .await
        .ok_or_else(|| err("no exchange with node 1"))?;
    report.push(
        format!("anti-entropy exchange, {n} sessions, 0 differing"),
        format!("{} B", level.digest_bytes),
        format!(
            "{} differences, {} message rounds",
            level.differences, level.rounds
        ),
    );
    // Node 3 misses the updates of 1 % of the sessions.
    n1.faults().lose_pushes_to(NodeId(3));
    let changed = (n / 100).max(1);
    let node = c.node(0);
    let step = tokens.len() / changed;
    let ids: Vec<SessionId> = tokens
        .iter()
        .step_by(step.max(1))
        .take(changed)
        .filter_map(|t| route_of(&c, t).map(|(id, _)| id))
        .collect();
    for t in tokens.iter().step_by(step.max(1)).take(changed) {
        write(&node, Some(t), "cart", 1).await.map_err(err)?;
    }
    c.settle().await;
    n1.faults().deliver_pushes_to(NodeId(3));
    let behind = ids
        .iter()
        .filter(|id| {
            n1.shared().store.read(id, |s| s.digest()) != n3.shared().store.read(id, |s| s.digest())
        })
        .count();
    let diff = round(n3.clone())
        .await
        .ok_or_else(|| err("no exchange with node 1"))?;
    let after = ids
        .iter()
        .filter(|id| {
            n1.shared().store.read(id, |s| s.digest()) != n3.shared().store.read(id, |s| s.digest())
        })
        .count();
    report.push(
        format!("anti-entropy exchange, {n} sessions, 1 % differing"),
        format!("{} B", diff.digest_bytes),
        format!(
            "{behind} copies behind before, {after} after; {} differences found, {} pulled, {} pushed, {} message rounds",
            diff.differences, diff.pulled, diff.pushed, diff.rounds
        ),
    );
    Ok(())
}

async fn join(
    report: &mut OperationsReport,
    n: usize,
    replication: Replication,
    ack: Ack,
) -> Result<()> {
    let mode = format!("{replication:?}/{ack:?}");
    eprintln!("join: {n} sessions, {mode}");
    let c = cluster(3, replication, ack, |_| {}).await?;
    let _tokens = fill(&c, n).await?;
    let started = Instant::now();
    let index = c.add_node(0).await.map_err(err)?;
    let node = c.instance(index).ok_or_else(|| err("new node missing"))?;
    let first = time_until(Duration::from_secs(60), || node.sessions_held() > 0)
        .await
        .map(|_| started.elapsed());
    let ready = time_until(Duration::from_secs(120), || node.readiness().ready)
        .await
        .map(|_| started.elapsed());
    let held_ready = node.sessions_held();
    // In `k` mode the rest of its share arrives by rebalancing, at most `rebalance_rate`
    // sessions a second: wait until its count has not moved for 2 s.
    let mut last = (node.sessions_held(), started.elapsed());
    while started.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = node.sessions_held();
        if now != last.0 {
            last = (now, started.elapsed());
        } else if started.elapsed() - last.1 > Duration::from_secs(2) {
            break;
        }
    }
    report.push(
        format!("join → first replica, {n} sessions, {mode}"),
        first.map_or_else(|| "none within 60 s".into(), ms),
        "one seed; from the node's start".into(),
    );
    report.push(
        format!("join → ready, {n} sessions, {mode}"),
        ready.map_or_else(|| "not within 120 s".into(), ms),
        format!("held {held_ready} when ready"),
    );
    report.push(
        format!("join → full share, {n} sessions, {mode}"),
        ms(last.1),
        format!(
            "held {} (rebalance_rate {}/s)",
            last.0,
            Config::default().rebalance_rate
        ),
    );
    Ok(())
}

async fn membership(report: &mut OperationsReport, n: usize, rest: Duration) -> Result<()> {
    eprintln!("membership: {n} nodes");
    let started = Instant::now();
    let c = InProcessCluster::start_custom(
        n,
        n,
        Discovery::FirstAsSeed,
        ExpiryPolicy::default(),
        production,
    )
    .await
    .map_err(err)?;
    let converged = started.elapsed();
    report.push(
        format!("membership converged, {n} nodes"),
        ms(converged),
        "all started together, one seed each; until every node sees every other alive".into(),
    );
    // At rest: gossip only (no sessions, so no pushes; anti-entropy is TCP and not counted).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = |c: &InProcessCluster| -> Vec<u64> {
        c.running()
            .iter()
            .map(|x| x.shared().gossip_counters.sent_bytes.get())
            .collect()
    };
    let before = sent(&c);
    let t0 = Instant::now();
    tokio::time::sleep(rest).await;
    let secs = t0.elapsed().as_secs_f64();
    let after = sent(&c);
    let rates: Vec<f64> = after
        .iter()
        .zip(&before)
        .map(|(a, b)| (a - b) as f64 / secs)
        .collect();
    let mean = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
    let max = rates.iter().copied().fold(0.0, f64::max);
    report.push(
        format!("gossip at rest, {n} nodes"),
        format!("{mean:.0} B/s per node"),
        format!("max {max:.0} B/s; sealed UDP datagrams sent, over {secs:.0} s"),
    );
    // A crash: no goodbye; the survivors' failure detector must notice.
    let victim = n - 1;
    let victim_id = NodeId(victim as u16 + 1);
    c.kill(victim);
    let survivors: Vec<_> = c.running();
    let detected = time_until(Duration::from_secs(30), || {
        survivors
            .iter()
            .all(|s| !s.shared().members.is_up(victim_id))
    })
    .await;
    let cfg = Config::default();
    report.push(
        format!("failure detection (crash), {n} nodes"),
        detected.map_or_else(|| "not within 30 s".into(), ms),
        format!(
            "until every survivor sees it not alive; probe period {} ms × {} missed",
            cfg.heartbeat_interval.as_millis(),
            cfg.failure_threshold
        ),
    );
    // A graceful leave: announced, so no detection delay.
    let leaver = n - 2;
    let leaver_id = NodeId(leaver as u16 + 1);
    let started = Instant::now();
    let drained = c.drain(leaver).await;
    let drain_ms = started.elapsed();
    let survivors: Vec<_> = c.running();
    let gone = time_until(Duration::from_secs(30), || {
        survivors
            .iter()
            .all(|s| s.shared().members.is_gone(leaver_id))
    })
    .await
    .map(|d| d + drain_ms);
    report.push(
        format!("graceful leave seen by all, {n} nodes"),
        gone.map_or_else(|| "not within 30 s".into(), ms),
        format!(
            "from the start of the drain (itself {}); until every survivor takes it out of placement",
            drained.map_or_else(|| "no report".into(), |d| format!("{} ms", d.elapsed_ms))
        ),
    );
    Ok(())
}

/// Runs every measurement in order.
pub async fn run(options: &OperationsOptions) -> Result<OperationsReport> {
    let mut report = OperationsReport::default();
    for &n in &options.sessions {
        restart_to_ready(&mut report, n, Replication::All, Ack::Async).await?;
        restart_to_ready(&mut report, n, Replication::Backups(1), Ack::One).await?;
        drain(&mut report, n).await?;
        anti_entropy(&mut report, n).await?;
        join(&mut report, n, Replication::All, Ack::Async).await?;
        join(&mut report, n, Replication::Backups(1), Ack::One).await?;
    }
    for &n in &options.membership_sizes {
        membership(&mut report, n, options.rest).await?;
    }
    Ok(report)
}
