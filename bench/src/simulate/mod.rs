//! `bench simulate`: instant copy's replication protocol at cluster sizes this machine cannot
//! run (16, 64, 256 nodes, and 2, 4, 8 beside the measured scaling table), as a deterministic
//! discrete-event simulation.
//!
//! Owns the model's parameters ([`SimOptions`]), the replication modes ([`Mode`]) and the
//! top-level loop over sizes and modes ([`run`]). What this is, honestly: a *model* of the
//! protocol, not the nodes' tokio code over a simulated network. It reuses the crate's own
//! rules and constants where they are public — placement by `internals::{pick_backups, score,
//! owner_of}`, [`backend_instantcopy::Config`]'s defaults (batch limits, probe period,
//! failure threshold), coalescing by `internals::join`, sizes by the real wire encoding and
//! seal — and re-states the rest (who a write goes to, when a receiver asks for a whole
//! state, who repairs a session after a loss, how SWIM detects and spreads a death) from
//! `placement.rs`, `write.rs`, `replication.rs`, `repair.rs`, `read.rs` and `gossip.rs`.
//! Time is virtual (nanoseconds in a `BinaryHeap`), randomness comes from one seeded
//! `StdRng` per run, and nothing reads the wall clock: the same options give the same report
//! bit for bit.
//!
//! * [`sizes`]: the session's content and the wire sizes of its updates.
//! * [`events`]: the event queue.
//! * [`cluster`]: nodes, sessions, copies, the write path.
//! * [`read`]: the read path (local copy or fetch).
//! * [`push`]: the per-peer pushers (batching, coalescing, the receiver's merge rule).
//! * [`loss`]: a node's death, SWIM detection and gossip, the leaders' repair.
//! * [`workload`]: the users and the request mix.
//! * [`report`]: per-run numbers, the Markdown, the JSON, the measured rows beside them.
//! * [`chart`]: the SVG.
//! * [`cli`]: the command line.

pub mod chart;
pub mod cli;
pub mod cluster;
pub mod events;
pub mod loss;
pub mod push;
pub mod read;
pub mod report;
pub mod sizes;
pub mod workload;

use std::fmt;

use backend_instantcopy::Config;
use serde::Serialize;

use crate::error::{BenchError, Result};

pub use report::{RunResult, SimReport};

/// How many copies a session gets (the crate's `Replication`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every alive member holds every session (the paper's scheme).
    All,
    /// The owner plus this many backups chosen by rendezvous hashing.
    Backups(u8),
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::All => f.write_str("all"),
            Mode::Backups(k) => write!(f, "k={k}"),
        }
    }
}

impl Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("all") {
            return Ok(Mode::All);
        }
        let digits = t.strip_prefix("k=").unwrap_or(t);
        match digits.parse::<u8>() {
            Ok(k) if (1..=backend_instantcopy::MAX_BACKUPS).contains(&k) => Ok(Mode::Backups(k)),
            _ => Err(format!(
                "{s:?}: a mode is \"all\" or k=N with N from 1 to {}",
                backend_instantcopy::MAX_BACKUPS
            )),
        }
    }
}

/// The model's parameters (every one is printed with the results).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimOptions {
    /// Cluster sizes.
    pub nodes: Vec<usize>,
    /// Replication modes.
    pub modes: Vec<Mode>,
    /// One-way latency of every link (node ↔ node and client ↔ node), µs.
    pub latency_us: f64,
    /// CPU time a node spends on one peer request (push batch or fetch), µs; a node handles
    /// peer requests one at a time.
    pub handle_us: f64,
    /// Extra CPU time per update in a push batch, µs.
    pub handle_update_us: f64,
    /// Target request rate over all users (req/s): each user waits an exponential think time
    /// of mean `users / rate` after each response.
    pub rate: f64,
    /// Virtual users, each with its own session, one request at a time (the measured runs'
    /// 20).
    pub users: usize,
    /// Sessions in the cluster: the users' plus idle ones, so a node loss re-places a
    /// realistic population.
    pub sessions: usize,
    /// Requests per run (the measured scaling runs' 20,000).
    pub requests: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Kill one node after the workload and measure detection and repair.
    pub loss: bool,
    /// The cluster size foca's dissemination is tuned for, which sets how many messages carry
    /// each membership update; `None` (the default): each run's own size, as gossip.rs does.
    /// `Some(16)` models the fixed hint gossip.rs used before.
    pub size_hint: Option<usize>,
}

impl SimOptions {
    /// The full run: 2, 4, 8, 16, 64 and 256 nodes, all / k=1 / k=2.
    pub fn full() -> Self {
        SimOptions {
            nodes: vec![2, 4, 8, 16, 64, 256],
            modes: vec![Mode::All, Mode::Backups(1), Mode::Backups(2)],
            latency_us: 200.0,
            handle_us: 20.0,
            handle_update_us: 2.0,
            rate: 5000.0,
            users: 20,
            sessions: 10_000,
            requests: 20_000,
            seed: 1,
            loss: true,
            size_hint: None,
        }
    }

    /// Checks the parameters, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(BenchError(m));
        if self.nodes.is_empty() || self.modes.is_empty() {
            return bad("--nodes and --modes need at least one value each".into());
        }
        if let Some(n) = self.nodes.iter().find(|n| !(2..=1024).contains(*n)) {
            return bad(format!("--nodes: {n} is outside 2..=1024"));
        }
        for (name, v) in [
            ("--latency-us", self.latency_us),
            ("--handle-us", self.handle_us),
            ("--handle-update-us", self.handle_update_us),
        ] {
            if !v.is_finite() || !(0.0..=1e7).contains(&v) {
                return bad(format!("{name}: {v} is not a time from 0 to 10 s in µs"));
            }
        }
        if !self.rate.is_finite() || self.rate <= 0.0 || self.rate > 1e7 {
            return bad(format!(
                "--rate: {} is not a request rate above 0 (req/s)",
                self.rate
            ));
        }
        if self.size_hint.is_some_and(|h| h == 0 || h > 1_000_000) {
            return bad("--size-hint: a cluster size from 1 to 1,000,000, or auto".into());
        }
        if self.users == 0 || self.requests == 0 {
            return bad("--users and --requests must be at least 1".into());
        }
        if self.sessions < self.users || self.sessions > 10_000_000 {
            return bad(format!(
                "--sessions: {} must be at least --users ({}) and at most 10,000,000",
                self.sessions, self.users
            ));
        }
        Ok(())
    }
}

/// The crate's defaults the model uses, with what they imply (printed with the results).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Protocol {
    /// `Config::max_batch`: most updates a pusher takes from its queue at once.
    pub max_batch: usize,
    /// `Config::max_batch_bytes()`: bytes a push batch aims to stay under.
    pub max_batch_bytes: usize,
    /// `Config::heartbeat_interval`: SWIM's probe period, ms.
    pub probe_period_ms: f64,
    /// `probe_period / 3` (gossip.rs): the direct ping's timeout, ms.
    pub probe_rtt_ms: f64,
    /// `Config::failure_threshold`.
    pub failure_threshold: u32,
    /// `probe_period × failure_threshold` (gossip.rs): suspected → declared down, ms.
    pub suspect_to_down_ms: f64,
    /// `probe_period / 2` (gossip.rs): periodic gossip interval, ms.
    pub gossip_every_ms: f64,
    /// Members each periodic gossip goes to (gossip.rs: 3).
    pub gossip_fanout: usize,
    /// How many messages each node piggybacks a membership update on in a cluster of up to 16
    /// (see [`max_transmissions`] for larger ones).
    pub max_transmissions: u32,
    /// What this implies for a crashed (silent) node, from the first probe that reaches it
    /// to its prober declaring it down: one probe period until the probe is judged failed
    /// (foca judges it at the next probe tick), then the suspicion timeout. Add the wait for
    /// that first probe (under one period: every member probes one member per period) and
    /// the gossip hops that take the news to the others.
    pub down_after_first_probe_ms: f64,
}

impl Protocol {
    /// From `Config::default()`.
    pub fn from_defaults() -> Self {
        let c = Config::default();
        let period = c.heartbeat_interval.as_secs_f64() * 1000.0;
        let max_tx = max_transmissions(16);
        Protocol {
            max_batch: c.max_batch,
            max_batch_bytes: c.max_batch_bytes(),
            probe_period_ms: period,
            probe_rtt_ms: period / 3.0,
            failure_threshold: c.failure_threshold,
            suspect_to_down_ms: period * f64::from(c.failure_threshold),
            gossip_every_ms: period / 2.0,
            gossip_fanout: 3,
            max_transmissions: max_tx,
            down_after_first_probe_ms: period + period * f64::from(c.failure_threshold),
        }
    }
}

/// How many messages each node piggybacks a membership update on in a cluster of
/// `cluster_size`: the crate's own rule (gossip.rs re-tunes foca's `max_transmissions` as
/// members come and go: floor(4 · log10(n + 1)) for at least 16 members).
pub fn max_transmissions(cluster_size: usize) -> u32 {
    u32::from(backend_instantcopy::internals::max_transmissions(cluster_size).get())
}

/// Runs every size and mode, in order; `progress` lines go to stderr.
pub fn run(options: &SimOptions, progress: bool) -> Result<SimReport> {
    options.validate()?;
    let protocol = Protocol::from_defaults();
    let encoder = sizes::Encoder::new()?;
    let mut runs = Vec::new();
    for &n in &options.nodes {
        for &mode in &options.modes {
            if progress {
                eprintln!("simulate: {n} nodes, {mode} ...");
            }
            let r = cluster::Sim::new(options, &protocol, &encoder, n, mode)?.run()?;
            if progress {
                eprintln!(
                    "simulate: {n} nodes, {mode}: {:.2} updates / write, {:.2} round trips / write",
                    r.updates_per_write, r.round_trips_per_write
                );
            }
            runs.push(r);
        }
    }
    Ok(SimReport::new(options.clone(), protocol, &encoder, runs))
}
