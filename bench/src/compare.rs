//! `bench compare-peers`: every target, one at a time, in one run on one machine, the same
//! wrk settings for each; repeated with the target order rotated, medians reported, and the
//! ratios to tower-sessions printed as a Markdown table and written to `benches/RESULTS.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use demo_app::config::BackendKind;

use crate::client;
use crate::error::{BenchError, Result};
use crate::machine::{self, Machine};
use crate::peers::PeerKind;
use crate::targets::{Cleanup, Launcher, Target};
use crate::wrk::{self, Route, WrkConfig, WrkResult};

/// What `compare-peers` runs.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// The targets, in table order.
    pub targets: Vec<Target>,
    /// Rounds over all targets.
    pub repeats: usize,
    /// wrk settings.
    pub wrk: WrkConfig,
    /// An unmeasured profile run before the measured ones (fills pools and caches).
    pub warmup: Duration,
    /// Sessions prepared per target and round.
    pub sessions: usize,
}

/// One measured (target, route, round).
#[derive(Debug, Clone)]
pub struct Measurement {
    /// What was measured.
    pub target: Target,
    /// Which route.
    pub route: Route,
    /// Which round (0-based).
    pub round: usize,
    /// wrk's numbers.
    pub result: WrkResult,
    /// The 1-minute load average when the run started.
    pub load_before: f64,
}

/// Everything a comparison measured, with its context.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The options used.
    pub options: CompareOptions,
    /// The server CPUs (`taskset` list), if pinned.
    pub server_pin: Option<String>,
    /// Every run.
    pub runs: Vec<Measurement>,
    /// Targets that could not be measured, and why.
    pub skipped: Vec<(Target, String)>,
    /// The machine.
    pub machine: Machine,
    /// When it started (UTC).
    pub started: String,
    /// Load averages at the start and the end.
    pub load_start: Option<[f64; 3]>,
    /// Load averages at the end.
    pub load_end: Option<[f64; 3]>,
}

/// Runs the comparison. Cleans up the shared servers whatever happens.
pub async fn run(options: CompareOptions, launcher: &Launcher) -> Result<Comparison> {
    let mut cleanup = Cleanup::default();
    let started = machine::utc_now();
    let load_start = machine::loadavg();
    let mut skipped = Vec::new();
    // Ctrl-C stops the measuring (the servers are killed with it) but not the clean-up.
    let result = tokio::select! {
        r = measure(&options, launcher, &mut cleanup, &mut skipped) => r,
        _ = tokio::signal::ctrl_c() => Err(BenchError::msg("interrupted")),
    };
    for problem in cleanup.run(&launcher.services).await {
        eprintln!("cleanup problem: {problem}");
    }
    let runs = result?;
    Ok(Comparison {
        options,
        server_pin: launcher.pin.clone(),
        runs,
        skipped,
        machine: Machine::detect(),
        started,
        load_start,
        load_end: machine::loadavg(),
    })
}

/// Measures every target in every round. A target that fails (its store is down, it dies,
/// a run has errors it cannot answer) is reported, skipped in later rounds, and the others
/// go on.
async fn measure(
    options: &CompareOptions,
    launcher: &Launcher,
    cleanup: &mut Cleanup,
    skipped: &mut Vec<(Target, String)>,
) -> Result<Vec<Measurement>> {
    let client = client::http_client()?;
    let mut runs = Vec::new();
    let n = options.targets.len();
    for round in 0..options.repeats {
        // Rotate the order each round so slow drift of the machine does not favour a target.
        for i in 0..n {
            let target = options.targets[(i + round) % n];
            if skipped.iter().any(|(t, _)| *t == target) {
                continue;
            }
            eprintln!(
                "round {}/{}: {} ({})",
                round + 1,
                options.repeats,
                target.name(),
                target.label()
            );
            match measure_once(options, launcher, cleanup, &client, target, round).await {
                Ok(measured) => {
                    for m in &measured {
                        eprintln!(
                            "  {:<8} {:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}  (load {:.2})",
                            m.route.name(),
                            m.result.rps,
                            m.result.p50_us / 1000.0,
                            m.result.p99_us / 1000.0,
                            m.result.errors(),
                            m.load_before
                        );
                    }
                    runs.extend(measured);
                }
                Err(e) => {
                    eprintln!("  skipping {}: {e}", target.name());
                    runs.retain(|m: &Measurement| m.target != target);
                    skipped.push((target, e.to_string()));
                }
            }
        }
    }
    if runs.is_empty() {
        return Err(BenchError::msg("no target could be measured"));
    }
    Ok(runs)
}

/// Starts `target`, measures the three routes, stops it.
async fn measure_once(
    options: &CompareOptions,
    launcher: &Launcher,
    cleanup: &mut Cleanup,
    client: &reqwest::Client,
    target: Target,
    round: usize,
) -> Result<Vec<Measurement>> {
    let mut server = launcher.start(target, cleanup).await?;
    let outcome = measure_target(options, launcher, client, &server.url, target, round).await;
    let alive = server.is_running();
    let tail = server.log_tail();
    server.stop(Duration::from_secs(15)).await;
    let measured = outcome.map_err(|e| BenchError(format!("{e} (server {tail})")))?;
    if !alive {
        return Err(BenchError(format!("it died during the run: {tail}")));
    }
    Ok(measured)
}

async fn measure_target(
    options: &CompareOptions,
    launcher: &Launcher,
    client: &reqwest::Client,
    url: &str,
    target: Target,
    round: usize,
) -> Result<Vec<Measurement>> {
    let needs_token = target != Target::Peer(PeerKind::Floor);
    let mut tokens = client::setup_sessions(client, url, options.sessions, 16, needs_token).await?;
    if !needs_token {
        // The floor ignores cookies; send one of a typical size so requests weigh the same.
        tokens = (0..options.sessions)
            .map(|i| format!("floor{i:0>17}"))
            .collect();
    }
    let dir = launcher.log_dir.join(target.name());
    if !options.warmup.is_zero() {
        let mut warm = options.wrk.clone();
        warm.duration = options.warmup;
        wrk::run(url, Route::Profile, &tokens, &warm, &dir).await?;
    }
    let mut out = Vec::new();
    for route in Route::ALL {
        let load_before = machine::loadavg().map_or(0.0, |l| l[0]);
        let result = wrk::run(url, route, &tokens, &options.wrk, &dir).await?;
        out.push(Measurement {
            target,
            route,
            round,
            result,
            load_before,
        });
    }
    Ok(out)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Medians over rounds of one (target, route).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Median requests per second.
    pub rps: f64,
    /// Median p50 latency, ms.
    pub p50_ms: f64,
    /// Median p99 latency, ms.
    pub p99_ms: f64,
    /// Errors over all rounds.
    pub errors: u64,
    /// Rounds measured.
    pub rounds: usize,
}

/// A ratio the issue sets a target for.
#[derive(Debug, Clone)]
pub struct Goal {
    /// Ours.
    pub ours: Target,
    /// What we compare against.
    pub peer: Target,
    /// Which route.
    pub route: Route,
    /// The ratio needed (ours / peer req/s).
    pub needed: f64,
}

impl Goal {
    /// The issue's targets.
    pub fn issue_targets() -> Vec<Goal> {
        let ic = Target::Ours(BackendKind::Instantcopy);
        let g = |ours, peer, route, needed| Goal {
            ours,
            peer,
            route,
            needed,
        };
        let mut goals = vec![
            g(ic, Target::Peer(PeerKind::TsMemory), Route::Profile, 1.1),
            g(ic, Target::Peer(PeerKind::Floor), Route::Profile, 0.85),
            g(ic, Target::Peer(PeerKind::TsRedis), Route::Profile, 2.0),
            g(ic, Target::Peer(PeerKind::TsPostgres), Route::Profile, 4.0),
        ];
        for route in Route::ALL {
            goals.push(g(
                Target::Ours(BackendKind::Redis),
                Target::Peer(PeerKind::TsRedis),
                route,
                1.0,
            ));
            goals.push(g(
                Target::Ours(BackendKind::Sql),
                Target::Peer(PeerKind::TsPostgres),
                route,
                1.0,
            ));
        }
        goals
    }
}

/// The ratio pairs of the ratio table: each of ours against its tower-sessions counterpart and
/// the floor.
pub fn pairs() -> Vec<(Target, Target)> {
    let ic = Target::Ours(BackendKind::Instantcopy);
    let floor = Target::Peer(PeerKind::Floor);
    let mem = Target::Peer(PeerKind::TsMemory);
    let redis = Target::Peer(PeerKind::TsRedis);
    let pg = Target::Peer(PeerKind::TsPostgres);
    vec![
        (ic, mem),
        (ic, floor),
        (ic, redis),
        (ic, pg),
        (Target::Ours(BackendKind::Cookie), mem),
        (Target::Ours(BackendKind::Redis), redis),
        (Target::Ours(BackendKind::Sql), pg),
        (mem, floor),
    ]
}

impl Comparison {
    /// Medians of one (target, route), if measured.
    pub fn summary(&self, target: Target, route: Route) -> Option<Summary> {
        let runs: Vec<&Measurement> = self
            .runs
            .iter()
            .filter(|m| m.target == target && m.route == route)
            .collect();
        Some(Summary {
            rps: median(runs.iter().map(|m| m.result.rps).collect())?,
            p50_ms: median(runs.iter().map(|m| m.result.p50_us / 1000.0).collect())?,
            p99_ms: median(runs.iter().map(|m| m.result.p99_us / 1000.0).collect())?,
            errors: runs.iter().map(|m| m.result.errors()).sum(),
            rounds: runs.len(),
        })
    }

    /// `ours / peer` req/s: the median over rounds of the ratio within each round (both
    /// measured minutes apart under the same conditions), if both were measured.
    pub fn ratio(&self, ours: Target, peer: Target, route: Route) -> Option<f64> {
        let by_round = |t: Target| -> BTreeMap<usize, f64> {
            self.runs
                .iter()
                .filter(|m| m.target == t && m.route == route)
                .map(|m| (m.round, m.result.rps))
                .collect()
        };
        let a = by_round(ours);
        let b = by_round(peer);
        median(
            a.iter()
                .filter_map(|(r, x)| b.get(r).filter(|y| **y > 0.0).map(|y| x / y))
                .collect(),
        )
    }

    /// Targets measured, in option order.
    fn measured_targets(&self) -> Vec<Target> {
        self.options
            .targets
            .iter()
            .copied()
            .filter(|t| self.runs.iter().any(|m| m.target == *t))
            .collect()
    }

    /// The results as Markdown: setup, the table, ratios, the issue's targets, every run.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let o = &self.options;
        let loads: Vec<f64> = self.runs.iter().map(|m| m.load_before).collect();
        let load_med = median(loads.clone()).unwrap_or(0.0);
        let load_max = loads.iter().copied().fold(0.0, f64::max);
        let fmt_load = |l: Option<[f64; 3]>| {
            l.map_or("?".into(), |l| {
                format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
            })
        };
        let _ = writeln!(s, "## session-sync vs tower-sessions, side by side\n");
        let _ = writeln!(
            s,
            "* **Date**: {} · **machine**: {}",
            self.started,
            self.machine.summary()
        );
        let _ = writeln!(
            s,
            "* **Load average** (1/5/15 min): {} at the start, {} at the end; 1-min load before each measured run: median {load_med:.2}, max {load_max:.2} (the machine is shared)",
            fmt_load(self.load_start),
            fmt_load(self.load_end)
        );
        let _ = writeln!(
            s,
            "* **Load**: `wrk -t{} -c{} -d{}s` per route{}, servers {}; {} rounds with the target order rotated, each target a fresh process with {} sessions logged in (2 cart lines each) and a {} s warm-up; **medians** over rounds; ratios are medians of the per-round ratios",
            o.wrk.threads,
            o.wrk.connections,
            o.wrk.duration.as_secs(),
            o.wrk
                .pin
                .as_ref()
                .map_or(String::new(), |c| format!(" pinned to CPU {c}")),
            self.server_pin
                .as_ref()
                .map_or("unpinned".to_string(), |c| format!("pinned to CPU {c}")),
            o.repeats,
            o.sessions,
            o.warmup.as_secs()
        );
        let _ = writeln!(
            s,
            "* **Routes**: `POST /login` (new session, id cycled), `GET /profile` (read-only), `POST /cart/items` (read + write); each request carries a distinct prepared session, replayed round-robin\n"
        );

        let _ = writeln!(
            s,
            "| app | login req/s | login p50 / p99 ms | profile req/s | profile p50 / p99 ms | cart req/s | cart p50 / p99 ms | errors |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for t in self.measured_targets() {
            let mut row = format!("| {} ", t.label());
            let mut errors = 0;
            for route in Route::ALL {
                match self.summary(t, route) {
                    Some(x) => {
                        errors += x.errors;
                        let _ = write!(row, "| {:.0} | {:.2} / {:.2} ", x.rps, x.p50_ms, x.p99_ms);
                    }
                    None => row.push_str("| – | – "),
                }
            }
            let _ = writeln!(s, "{row}| {errors} |");
        }

        for (t, why) in &self.skipped {
            let first = why.lines().next().unwrap_or_default();
            let _ = writeln!(s, "\n**Not measured**: {} — {first}", t.label());
        }
        let _ = writeln!(s, "\n### Ratios (req/s, ours ÷ theirs, same run)\n");
        let _ = writeln!(s, "| pair | login | profile | cart |");
        let _ = writeln!(s, "|---|---:|---:|---:|");
        for (a, b) in pairs() {
            let cells: Vec<String> = Route::ALL
                .iter()
                .map(|r| {
                    self.ratio(a, b, *r)
                        .map_or("–".into(), |x| format!("{x:.2}×"))
                })
                .collect();
            if cells.iter().all(|c| c == "–") {
                continue;
            }
            let _ = writeln!(s, "| {} ÷ {} | {} |", short(a), short(b), cells.join(" | "));
        }

        let _ = writeln!(s, "\n### The issue's targets\n");
        let _ = writeln!(s, "| target | measured | needed | met |");
        let _ = writeln!(s, "|---|---:|---:|:---:|");
        for g in Goal::issue_targets() {
            let Some(x) = self.ratio(g.ours, g.peer, g.route) else {
                continue;
            };
            let _ = writeln!(
                s,
                "| {} ÷ {}, {} | {x:.2}× | ≥ {:.2}× | {} |",
                short(g.ours),
                short(g.peer),
                g.route.describe(),
                g.needed,
                if x >= g.needed { "yes" } else { "**no**" }
            );
        }

        let _ = writeln!(s, "\n<details><summary>Every run</summary>\n");
        let _ = writeln!(
            s,
            "| round | app | route | req/s | p50 ms | p99 ms | errors | load before |"
        );
        let _ = writeln!(s, "|---:|---|---|---:|---:|---:|---:|---:|");
        for m in &self.runs {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.0} | {:.3} | {:.3} | {} | {:.2} |",
                m.round + 1,
                m.target.name(),
                m.route.name(),
                m.result.rps,
                m.result.p50_us / 1000.0,
                m.result.p99_us / 1000.0,
                m.result.errors(),
                m.load_before
            );
        }
        let _ = writeln!(s, "\n</details>");
        s
    }
}

fn short(t: Target) -> &'static str {
    match t {
        Target::Peer(PeerKind::Floor) => "floor",
        Target::Peer(PeerKind::TsMemory) => "ts MemoryStore",
        Target::Peer(PeerKind::TsRedis) => "ts Redis",
        Target::Peer(PeerKind::TsPostgres) => "ts Postgres",
        Target::Ours(BackendKind::Instantcopy) => "instant copy",
        Target::Ours(BackendKind::Cookie) => "cookie",
        Target::Ours(BackendKind::Redis) => "our Redis",
        Target::Ours(BackendKind::Sql) => "our Postgres",
    }
}

/// Writes `markdown` to `path` (creating the directory).
pub fn write_results(path: &PathBuf, markdown: &str) -> Result<()> {
    use crate::error::Context;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).context(format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, markdown).context(format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(rps: f64) -> WrkResult {
        WrkResult {
            requests: rps as u64,
            seconds: 1.0,
            rps,
            p50_us: 500.0,
            p99_us: 2000.0,
            socket_errors: 0,
            bad_status: 0,
        }
    }

    fn comparison() -> Comparison {
        let ic = Target::Ours(BackendKind::Instantcopy);
        let mem = Target::Peer(PeerKind::TsMemory);
        let mut runs = Vec::new();
        // Round 0: 12k vs 10k; round 1: 9k vs 10k; round 2: 13k vs 10k → ratios 1.2, 0.9, 1.3.
        for (round, ours) in [12_000.0, 9_000.0, 13_000.0].into_iter().enumerate() {
            for route in Route::ALL {
                runs.push(Measurement {
                    target: ic,
                    route,
                    round,
                    result: result(ours),
                    load_before: 1.0,
                });
                runs.push(Measurement {
                    target: mem,
                    route,
                    round,
                    result: result(10_000.0),
                    load_before: 1.0,
                });
            }
        }
        Comparison {
            options: CompareOptions {
                targets: vec![mem, ic],
                repeats: 3,
                wrk: WrkConfig {
                    threads: 1,
                    connections: 32,
                    duration: Duration::from_secs(10),
                    pin: Some("1".into()),
                },
                warmup: Duration::from_secs(2),
                sessions: 1000,
            },
            server_pin: Some("0".into()),
            runs,
            skipped: vec![(
                Target::Peer(PeerKind::TsRedis),
                "starting ts-redis: connection refused\nmore".into(),
            )],
            machine: Machine::detect(),
            started: "2026-01-01 00:00 UTC".into(),
            load_start: Some([1.0, 1.0, 1.0]),
            load_end: None,
        }
    }

    #[test]
    fn medians_and_paired_ratios() {
        let c = comparison();
        let ic = Target::Ours(BackendKind::Instantcopy);
        let mem = Target::Peer(PeerKind::TsMemory);
        let s = c.summary(ic, Route::Profile).unwrap();
        assert_eq!((s.rps, s.rounds, s.errors), (12_000.0, 3, 0));
        let r = c.ratio(ic, mem, Route::Profile).unwrap();
        assert!((r - 1.2).abs() < 1e-9, "{r}");
        assert_eq!(
            c.ratio(ic, Target::Peer(PeerKind::Floor), Route::Profile),
            None
        );
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0]), Some(2.0));
    }

    #[test]
    fn markdown_has_table_ratios_and_verdicts() {
        let md = comparison().to_markdown();
        assert!(
            md.contains("| tower-sessions 0.15 MemoryStore | 10000 |"),
            "{md}"
        );
        assert!(
            md.contains("| instant copy ÷ ts MemoryStore | 1.20× | 1.20× | 1.20× |"),
            "{md}"
        );
        assert!(
            md.contains("| instant copy ÷ ts MemoryStore, GET /profile | 1.20× | ≥ 1.10× | yes |"),
            "{md}"
        );
        assert!(
            !md.contains("ts Redis, GET"),
            "unmeasured goals are left out: {md}"
        );
        assert!(md.contains("2026-01-01"));
        assert!(md.contains("wrk -t1 -c32 -d10s"));
        assert!(
            md.contains("**Not measured**: tower-sessions 0.14 + redis-store 0.16 — starting ts-redis: connection refused\n"),
            "{md}"
        );
    }
}
