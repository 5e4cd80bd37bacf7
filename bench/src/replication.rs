//! `bench replication`: replication lag and messages per write on a real instant-copy cluster.
//!
//! Starts N demo nodes (`demo-app serve` processes), logs users in on node 1, then drives cart
//! writes at a fixed rate (open loop: a write is started every `1/rate` s whatever the previous
//! one is doing) against node 1 only. Two lag measurements:
//!
//! * **Visibility probes** (every mode): while the load runs, a probe logs a new user in on
//!   node 1 and, from the moment the response arrives, polls every other node's `/status.json`
//!   until the new session shows in `sessions_held` on every replica (all other nodes with
//!   `replication = "all"`, any `k` of them with `replication = k`). The load only changes existing sessions,
//!   so the count moves only with the probe's push: this is the true push visibility, measured
//!   from outside, with the polling round trip as its resolution. (Reading the session on a
//!   replica would not do: a replica whose copy is older than the client's token fetches it from
//!   the owner, which hides the lag.)
//! * **Acknowledgement lag** (`ack = one` or `all` only: the backend records it for writes that
//!   wait): node 1's `session_instantcopy_replication_lag_seconds` histogram, the time from
//!   queuing an update for a replica to that replica's acknowledgement.
//!
//! Messages per write come from `push_batches_total` (HTTP requests between nodes) and
//! `push_updates_total` (updates they carried) over the writes made (the load's and the
//! probes').

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_instantcopy::{Ack, Replication};
use demo_app::cluster::{ClusterSpec, LocalCluster};
use demo_app::config::BackendKind;
use tokio::sync::Semaphore;

use crate::client::{self, UserSession};
use crate::error::{BenchError, Context, Result};
use crate::openmetrics::{Scrape, quantile_between};

/// The lag histogram's name in `/metrics`.
pub const LAG: &str = "session_instantcopy_replication_lag_seconds";

/// What to run.
#[derive(Debug, Clone)]
pub struct ReplicationOptions {
    /// Cluster size.
    pub nodes: usize,
    /// Writes per second on node 1.
    pub rate: u32,
    /// How long to write.
    pub duration: Duration,
    /// Replication factor.
    pub replication: Replication,
    /// Acknowledgement level.
    pub ack: Ack,
    /// Sessions written to, round-robin.
    pub sessions: usize,
}

/// What it measured.
#[derive(Debug, Clone)]
pub struct ReplicationReport {
    /// The options.
    pub options: ReplicationOptions,
    /// Writes answered 200.
    pub writes: u64,
    /// Writes that failed (status or transport).
    pub failed: u64,
    /// Ticks skipped because 256 writes were already in flight.
    pub skipped: u64,
    /// Writes per second achieved.
    pub achieved_rate: f64,
    /// Write latency seen by the client, p50 / p99 in ms.
    pub write_ms: (f64, f64),
    /// Replica updates acknowledged during the run (histogram observations).
    pub lag_count: f64,
    /// Lag p50 (interpolated, bucket ceiling) in ms.
    pub lag_p50_ms: (f64, f64),
    /// Lag p99 (interpolated, bucket ceiling) in ms.
    pub lag_p99_ms: (f64, f64),
    /// Peer HTTP messages (push batches) per write.
    pub batches_per_write: f64,
    /// Updates pushed per write.
    pub updates_per_write: f64,
    /// Sessions held per node at the end (all equal when every copy arrived).
    pub sessions_held: Vec<f64>,
    /// Visibility probes that completed.
    pub probes: usize,
    /// Probes not visible on every replica within a second.
    pub probe_timeouts: usize,
    /// Probe visibility (login answered → seen on every replica), p50 / p99 / max, ms.
    pub visible_ms: (f64, f64, f64),
    /// Median round trip of one replica poll (the probes' resolution), ms.
    pub poll_ms: f64,
}

/// What the visibility probes saw.
#[derive(Debug, Default)]
struct Probes {
    visible_ms: Vec<f64>,
    timeouts: usize,
    poll_ms: Vec<f64>,
}

async fn held(client: &reqwest::Client, url: &str) -> Result<f64> {
    let v: serde_json::Value = client
        .get(format!("{url}/status.json"))
        .send()
        .await
        .context(format!("GET {url}/status.json"))?
        .json()
        .await
        .context(format!("reading {url}/status.json"))?;
    v["sessions_held"]
        .as_f64()
        .ok_or_else(|| BenchError(format!("{url}/status.json has no sessions_held")))
}

/// Logs a new user in on `owner` every `every` until `until`, timing how long after the
/// response `copies` of the other nodes hold the new session (every one of them with
/// `replication = "all"`; its `k` backups with `replication = k`, which the harness cannot
/// name from outside, so it waits for any `k` nodes' counts to grow).
async fn probe(
    owner: String,
    replicas: Vec<String>,
    copies: usize,
    every: Duration,
    until: Instant,
) -> Result<Probes> {
    let copies = copies.clamp(1, replicas.len().max(1));
    let client = client::http_client()?;
    let mut out = Probes::default();
    let mut i = 0u64;
    while Instant::now() < until {
        let mut base = Vec::new();
        for r in &replicas {
            base.push(held(&client, r).await?);
        }
        let mut s = UserSession::default();
        i += 1;
        let o = s.login(&client, &owner, &format!("probe{i}")).await?;
        let answered = Instant::now();
        if o.status != 200 {
            return Err(BenchError(format!("probe login answered {}", o.status)));
        }
        let mut waiting: Vec<usize> = (0..replicas.len()).collect();
        let mut holding = 0;
        let mut seen = answered;
        while holding < copies && answered.elapsed() < Duration::from_secs(1) {
            let mut still = Vec::new();
            for k in waiting {
                let t = Instant::now();
                let h = held(&client, &replicas[k]).await?;
                out.poll_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                if h > base[k] {
                    seen = Instant::now();
                    holding += 1;
                } else {
                    still.push(k);
                }
            }
            waiting = still;
        }
        if holding >= copies {
            out.visible_ms
                .push(seen.duration_since(answered).as_secs_f64() * 1000.0);
        } else {
            out.timeouts += 1;
        }
        tokio::time::sleep(every).await;
    }
    Ok(out)
}

async fn scrape(client: &reqwest::Client, url: &str) -> Result<Scrape> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .context(format!("GET {url}/metrics"))?
        .text()
        .await
        .context(format!("reading {url}/metrics"))?;
    Ok(Scrape::parse(&text))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// Runs the measurement on a fresh cluster started from the `demo` binary.
pub async fn run(demo: &Path, options: ReplicationOptions) -> Result<ReplicationReport> {
    if options.nodes < 2 {
        return Err(BenchError::msg("replication needs at least 2 nodes"));
    }
    let mut spec = ClusterSpec::new(options.nodes, BackendKind::Instantcopy);
    spec.replication = options.replication;
    spec.ack = options.ack;
    let mut cluster = LocalCluster::start(demo, &spec)
        .await
        .context("starting the instant-copy cluster")?;
    let outcome = measure(&cluster.urls(), &options).await;
    cluster.stop(Duration::from_secs(10)).await;
    outcome
}

async fn measure(urls: &[String], options: &ReplicationOptions) -> Result<ReplicationReport> {
    let client = client::http_client()?;
    let node1 = urls
        .first()
        .ok_or_else(|| BenchError::msg("the cluster has no nodes"))?
        .clone();
    let tokens = client::setup_sessions(&client, &node1, options.sessions, 16, true).await?;
    // Let the set-up's pushes land before the first scrape.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = scrape(&client, &node1).await?;

    let tokens: Arc<Vec<String>> = Arc::new(tokens);
    let copies = match options.replication {
        Replication::All => urls.len() - 1,
        Replication::Backups(k) => usize::from(k),
    };
    let probes = tokio::spawn(probe(
        node1.clone(),
        urls[1..].to_vec(),
        copies,
        Duration::from_millis(20),
        Instant::now() + options.duration,
    ));
    let in_flight = Arc::new(Semaphore::new(256));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<f64>>();
    let period = Duration::from_secs_f64(1.0 / f64::from(options.rate.max(1)));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut skipped: u64 = 0;
    while start.elapsed() < options.duration {
        tick.tick().await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        let token = tokens[(sent as usize) % tokens.len()].clone();
        let sku = format!("s{}", sent % 5);
        sent += 1;
        let (client, base, tx) = (client.clone(), node1.clone(), tx.clone());
        tokio::spawn(async move {
            let mut s = UserSession { token };
            let t0 = Instant::now();
            let ok = matches!(s.add(&client, &base, &sku, 1).await, Ok(o) if o.status == 200);
            let _ = tx.send(ok.then(|| t0.elapsed().as_secs_f64() * 1000.0));
            drop(permit);
        });
    }
    drop(tx);
    let elapsed = start.elapsed().as_secs_f64();
    let mut probes = probes
        .await
        .map_err(|e| BenchError(format!("the probe task failed: {e}")))??;
    let mut latencies = Vec::new();
    let mut failed = 0;
    while let Some(r) = rx.recv().await {
        match r {
            Some(ms) => latencies.push(ms),
            None => failed += 1,
        }
    }
    // The last pushes are acknowledged within milliseconds; give them a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = scrape(&client, &node1).await?;
    let mut held_by_node = Vec::new();
    for url in urls {
        held_by_node.push(held(&client, url).await?);
    }

    latencies.sort_by(f64::total_cmp);
    let writes = latencies.len() as u64;
    // Every write pushes: the load's cart writes and the probes' logins (session creations).
    let pushing_writes = writes + probes.visible_ms.len() as u64 + probes.timeouts as u64;
    let per_write = |name: &str| {
        if pushing_writes == 0 {
            0.0
        } else {
            (after.sum(name) - before.sum(name)) / pushing_writes as f64
        }
    };
    let (b, a) = (before.buckets(LAG), after.buckets(LAG));
    let to_ms = |x: Option<(f64, f64)>| x.map_or((f64::NAN, f64::NAN), |(v, c)| (v * 1e3, c * 1e3));
    Ok(ReplicationReport {
        options: options.clone(),
        writes,
        failed,
        skipped,
        achieved_rate: writes as f64 / elapsed,
        write_ms: (percentile(&latencies, 0.5), percentile(&latencies, 0.99)),
        lag_count: a.last().map_or(0.0, |x| x.1) - b.last().map_or(0.0, |x| x.1),
        lag_p50_ms: to_ms(quantile_between(&b, &a, 0.5)),
        lag_p99_ms: to_ms(quantile_between(&b, &a, 0.99)),
        batches_per_write: per_write("session_instantcopy_push_batches_total"),
        updates_per_write: per_write("session_instantcopy_push_updates_total"),
        sessions_held: held_by_node,
        probes: probes.visible_ms.len(),
        probe_timeouts: probes.timeouts,
        visible_ms: {
            probes.visible_ms.sort_by(f64::total_cmp);
            (
                percentile(&probes.visible_ms, 0.5),
                percentile(&probes.visible_ms, 0.99),
                probes.visible_ms.last().copied().unwrap_or(0.0),
            )
        },
        poll_ms: {
            probes.poll_ms.sort_by(f64::total_cmp);
            percentile(&probes.poll_ms, 0.5)
        },
    })
}

impl ReplicationReport {
    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let o = &self.options;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "| nodes | replication / ack | target rate | achieved | writes ok / failed / skipped | write p50 / p99 ms | visible on all replicas p50 / p99 / max ms (probes) | ack lag p50 ms | ack lag p99 ms | updates / write | messages / write | sessions held per node |"
        );
        let _ = writeln!(
            s,
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        let held: Vec<String> = self
            .sessions_held
            .iter()
            .map(|h| format!("{h:.0}"))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} / {} | {}/s | {:.0}/s | {} / {} / {} | {:.2} / {:.2} | {:.2} / {:.2} / {:.2} ({} probes, {} timeouts, poll {:.2}) | {} | {} | {:.2} | {:.2} | {} |",
            o.nodes,
            match o.replication {
                Replication::All => "all".to_string(),
                Replication::Backups(k) => k.to_string(),
            },
            o.ack,
            o.rate,
            self.achieved_rate,
            self.writes,
            self.failed,
            self.skipped,
            self.write_ms.0,
            self.write_ms.1,
            self.visible_ms.0,
            self.visible_ms.1,
            self.visible_ms.2,
            self.probes,
            self.probe_timeouts,
            self.poll_ms,
            fmt_quantile(self.lag_p50_ms),
            fmt_quantile(self.lag_p99_ms),
            self.updates_per_write,
            self.batches_per_write,
            held.join(" / ")
        );
        s
    }

    /// True when every probe completed and the p99 of probe visibility is under `ms`.
    pub fn p99_under(&self, ms: f64) -> bool {
        self.probes > 0 && self.probe_timeouts == 0 && self.visible_ms.1 < ms
    }
}

fn fmt_quantile((v, ceil): (f64, f64)) -> String {
    if v.is_nan() {
        "–".into()
    } else if ceil.is_infinite() {
        format!("> {v:.2}")
    } else {
        format!("{v:.2} (≤ {ceil:.2})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn quantiles_print_with_their_ceiling() {
        assert_eq!(fmt_quantile((0.31, 0.4)), "0.31 (≤ 0.40)");
        assert_eq!(fmt_quantile((3276.8, f64::INFINITY)), "> 3276.80");
        assert_eq!(fmt_quantile((f64::NAN, f64::NAN)), "–");
    }
}
