//! `bench soak`: a 3-node instant-copy cluster under steady mixed load for a long time, with a
//! short idle timeout so sessions are created, abandoned and swept all the time. Every few
//! seconds it samples each node's resident memory (`VmRSS` from `/proc/<pid>/status`) and
//! sessions held, and the load's request and error counts, into a CSV file and an SVG chart.
//! Passing means: zero errors, and resident memory flat once the session population has
//! reached its steady state (warm-up).
//!
//! The load is a set of simulated users behind a non-sticky balancer: each logs in on a random
//! node, reads its profile, adds to and reads its cart on random nodes, then logs out or walks
//! away (its session then expires and is swept).
//!
//! Past 600 lines with its tests (the last sixth).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use demo_app::cluster::{ClusterSpec, LocalCluster};
use demo_app::config::BackendKind;
use parking_lot::Mutex;
use plotters::prelude::*;

use crate::client::{self, UserSession};
use crate::error::{BenchError, Context, Result};
use crate::machine;
use crate::openmetrics::Scrape;

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Cluster size.
    pub nodes: usize,
    /// How long to run.
    pub duration: Duration,
    /// The nodes' idle timeout.
    pub idle_timeout: Duration,
    /// The nodes' absolute timeout (`None`: the demo's default, 8 h). Destroyed sessions leave
    /// a tombstone until their absolute deadline, so memory can only reach a steady state
    /// within the run when this is short too.
    pub absolute_timeout: Option<Duration>,
    /// Total requests per second across all users.
    pub rate: u32,
    /// Simulated users at a time.
    pub users: usize,
    /// Time between samples.
    pub sample_every: Duration,
    /// Where `soak.csv` and `soak.svg` go.
    pub out_dir: PathBuf,
}

impl SoakOptions {
    /// The warm-up excluded from the flatness verdict: three idle timeouts (the session
    /// population is steady after one, the allocator after a few sweeps), or one absolute
    /// timeout plus one idle timeout when that is set (tombstones of logged-out sessions live
    /// until their absolute deadline), or a tenth of the run, whichever is longest, at most
    /// half the run.
    pub fn warmup(&self) -> Duration {
        let tombstones = self
            .absolute_timeout
            .map_or(Duration::ZERO, |a| a + self.idle_timeout);
        (self.idle_timeout * 3)
            .max(tombstones)
            .max(self.duration / 10)
            .min(self.duration / 2)
    }
}

/// One sample of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Seconds since the load started.
    pub elapsed_s: f64,
    /// Node id.
    pub node: u16,
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Sessions in the node's memory.
    pub sessions_held: f64,
    /// Tombstones (destroyed ids remembered) in the node's memory.
    pub tombstones: f64,
    /// Requests sent so far (all nodes).
    pub requests: u64,
    /// Errors so far (all nodes).
    pub errors: u64,
}

/// Per-node memory after warm-up.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeMemory {
    /// Node id.
    pub node: u16,
    /// RSS at the end of warm-up (median of three samples), MiB.
    pub start_mib: f64,
    /// RSS at the end (median of the last three samples), MiB.
    pub end_mib: f64,
    /// Largest RSS after warm-up, MiB.
    pub max_mib: f64,
    /// Least-squares slope after warm-up, MiB per hour.
    pub slope_mib_per_h: f64,
}

impl NodeMemory {
    /// Flat: after warm-up the node grew by at most 5 % of its size or 1 MiB, whichever is
    /// more (allocator noise), so a steady leak of a few MiB an hour is caught.
    pub fn is_flat(&self) -> bool {
        self.end_mib - self.start_mib <= (self.start_mib * 0.05).max(1.0)
    }
}

/// What a soak found.
#[derive(Debug, Clone)]
pub struct SoakReport {
    /// The options.
    pub options: SoakOptions,
    /// Every sample.
    pub samples: Vec<Sample>,
    /// Memory per node after warm-up.
    pub memory: Vec<NodeMemory>,
    /// Requests sent.
    pub requests: u64,
    /// Errors (transport failures and unexpected statuses).
    pub errors: u64,
    /// The first few errors.
    pub error_examples: Vec<String>,
    /// Seconds actually run.
    pub ran_s: f64,
    /// When it started (UTC).
    pub started: String,
    /// 1-minute load average at the start and the end.
    pub load: (f64, f64),
}

impl SoakReport {
    /// Zero errors and every node's memory flat.
    pub fn passed(&self) -> bool {
        self.errors == 0 && !self.memory.is_empty() && self.memory.iter().all(NodeMemory::is_flat)
    }
}

/// A small deterministic PRNG (SplitMix64) for the users' choices.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let mut b = [0u8; 8];
        session_core::fill_random(&mut b);
        Rng(u64::from_le_bytes(b))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Debug, Default)]
struct Tally {
    requests: AtomicU64,
    errors: AtomicU64,
    examples: Mutex<Vec<String>>,
}

impl Tally {
    fn check(&self, started: Instant, what: &str, node: usize, got: Result<u16>, want: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let problem = match got {
            Ok(s) if s == want => return,
            Ok(s) => format!("answered {s}, expected {want}"),
            Err(e) => e.to_string(),
        };
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut ex = self.examples.lock();
        if ex.len() < 20 {
            ex.push(format!(
                "t={:.1}s node {} {what}: {problem}",
                started.elapsed().as_secs_f64(),
                node + 1
            ));
        }
    }
}

async fn user_loop(
    urls: Arc<Vec<String>>,
    client: reqwest::Client,
    tally: Arc<Tally>,
    pause: Duration,
    started: Instant,
    deadline: Instant,
    mut rng: Rng,
) {
    let mut n: u64 = 0;
    while Instant::now() < deadline {
        let mut s = UserSession::default();
        let user = format!("soak{}", rng.next() % 1_000_000);
        let node = rng.below(urls.len() as u64) as usize;
        let r = s.login(&client, &urls[node], &user).await.map(|o| o.status);
        tally.check(started, "POST /login", node, r, 200);
        tokio::time::sleep(pause).await;
        let actions = 3 + rng.below(10);
        for _ in 0..actions {
            if Instant::now() >= deadline {
                return;
            }
            let node = rng.below(urls.len() as u64) as usize;
            let base = &urls[node];
            match rng.below(10) {
                0..=5 => {
                    let r = s.profile(&client, base).await;
                    let r = r.and_then(|(o, body)| {
                        if o.status == 200
                            && body.as_ref().and_then(|b| b["user"].as_str()) != Some(&user)
                        {
                            return Err(BenchError(format!(
                                "profile shows another user: {body:?}"
                            )));
                        }
                        Ok(o.status)
                    });
                    tally.check(started, "GET /profile", node, r, 200);
                }
                6..=8 => {
                    n += 1;
                    let sku = format!("sku{}", n % 7);
                    let r = s.add(&client, base, &sku, 1).await.map(|o| o.status);
                    tally.check(started, "POST /cart/items", node, r, 200);
                }
                _ => {
                    let r = s.cart(&client, base).await.map(|o| o.status);
                    tally.check(started, "GET /cart", node, r, 200);
                }
            }
            tokio::time::sleep(pause).await;
        }
        if rng.below(2) == 0 {
            let node = rng.below(urls.len() as u64) as usize;
            let r = s.logout(&client, &urls[node]).await.map(|o| o.status);
            tally.check(started, "POST /logout", node, r, 204);
            tokio::time::sleep(pause).await;
        }
    }
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vmrss(&status)
}

fn parse_vmrss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs the soak on a fresh cluster started from the `demo` binary; writes `soak.csv` and
/// `soak.svg` into the output directory as it goes.
pub async fn run(demo: &Path, options: SoakOptions) -> Result<SoakReport> {
    std::fs::create_dir_all(&options.out_dir)
        .context(format!("creating {}", options.out_dir.display()))?;
    let mut spec = ClusterSpec::new(options.nodes, BackendKind::Instantcopy);
    spec.idle_timeout = Some(options.idle_timeout);
    if let Some(abs) = options.absolute_timeout {
        // The cluster's spec has no absolute timeout: a base config file carries it (the
        // spec's `DEMO_*` variables still set everything else).
        let path = options.out_dir.join("soak-config.toml");
        let toml = format!(
            "# written by `bench soak`\n[session]\nabsolute_timeout = \"{}ms\"\n",
            abs.as_millis()
        );
        std::fs::write(&path, toml).context(format!("writing {}", path.display()))?;
        spec.config_file = Some(path);
    }
    let mut cluster = LocalCluster::start(demo, &spec)
        .await
        .context("starting the instant-copy cluster")?;
    let nodes: Vec<(u16, u32, String)> = cluster
        .nodes
        .iter()
        .filter_map(|n| n.pid().map(|p| (n.id, p, n.url.clone())))
        .collect();
    for (id, pid, url) in &nodes {
        eprintln!("soak: node {id} pid {pid} url {url}");
    }
    let outcome = drive(&options, &nodes).await;
    cluster.stop(Duration::from_secs(10)).await;
    let report = outcome?;
    let svg = chart(&report)?;
    let path = options.out_dir.join("soak.svg");
    std::fs::write(&path, svg).context(format!("writing {}", path.display()))?;
    Ok(report)
}

async fn drive(options: &SoakOptions, nodes: &[(u16, u32, String)]) -> Result<SoakReport> {
    let client = client::http_client()?;
    let urls: Arc<Vec<String>> = Arc::new(nodes.iter().map(|n| n.2.clone()).collect());
    let tally = Arc::new(Tally::default());
    let started_at = machine::utc_now();
    let load_start = machine::loadavg().map_or(0.0, |l| l[0]);
    let started = Instant::now();
    let deadline = started + options.duration;
    let pause = Duration::from_secs_f64(options.users as f64 / f64::from(options.rate.max(1)));
    let mut seed = Rng::seeded();
    let mut tasks = Vec::new();
    for _ in 0..options.users {
        tasks.push(tokio::spawn(user_loop(
            urls.clone(),
            client.clone(),
            tally.clone(),
            pause,
            started,
            deadline,
            Rng(seed.next()),
        )));
    }
    let csv_path = options.out_dir.join("soak.csv");
    let mut csv = std::io::BufWriter::new(
        std::fs::File::create(&csv_path).context(format!("creating {}", csv_path.display()))?,
    );
    writeln!(
        csv,
        "elapsed_s,node,pid,rss_kib,sessions_held,tombstones,requests,errors"
    )
    .context("writing the CSV")?;
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(options.sample_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let elapsed_s = started.elapsed().as_secs_f64();
        for (id, pid, url) in nodes {
            let rss = rss_kib(*pid)
                .ok_or_else(|| BenchError(format!("node {id} (pid {pid}) is gone")))?;
            let scrape = match client.get(format!("{url}/metrics")).send().await {
                Ok(r) => r.text().await.ok().map(|t| Scrape::parse(&t)),
                Err(_) => None,
            };
            let gauge = |name: &str| scrape.as_ref().map_or(f64::NAN, |m| m.sum(name));
            let held = gauge("session_instantcopy_sessions_held");
            let tombstones = gauge("session_instantcopy_tombstones_held");
            let s = Sample {
                elapsed_s,
                node: *id,
                rss_kib: rss,
                sessions_held: held,
                tombstones,
                requests: tally.requests.load(Ordering::Relaxed),
                errors: tally.errors.load(Ordering::Relaxed),
            };
            writeln!(
                csv,
                "{:.1},{},{},{},{},{},{},{}",
                s.elapsed_s,
                s.node,
                pid,
                s.rss_kib,
                s.sessions_held,
                s.tombstones,
                s.requests,
                s.errors
            )
            .context("writing the CSV")?;
            samples.push(s);
        }
        csv.flush().context("writing the CSV")?;
        let last = samples.last().map_or(0, |s| s.requests);
        if (elapsed_s as u64) % 60 < options.sample_every.as_secs().max(1) {
            eprintln!(
                "soak: {:>5.0} s  requests {last}  errors {}  rss {}",
                elapsed_s,
                tally.errors.load(Ordering::Relaxed),
                samples
                    .iter()
                    .rev()
                    .take(nodes.len())
                    .map(|s| format!("{:.1} MiB", s.rss_kib as f64 / 1024.0))
                    .collect::<Vec<_>>()
                    .join(" / ")
            );
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let ran_s = started.elapsed().as_secs_f64();
    let warm = options.warmup().as_secs_f64();
    let memory = nodes
        .iter()
        .filter_map(|(id, _, _)| node_memory(*id, &samples, warm))
        .collect();
    let errors = tally.errors.load(Ordering::Relaxed);
    let examples = tally.examples.lock().clone();
    Ok(SoakReport {
        options: options.clone(),
        samples,
        memory,
        requests: tally.requests.load(Ordering::Relaxed),
        errors,
        error_examples: examples,
        ran_s,
        started: started_at,
        load: (load_start, machine::loadavg().map_or(0.0, |l| l[0])),
    })
}

fn median3(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Memory figures of one node from the samples after `warm_s`.
pub fn node_memory(node: u16, samples: &[Sample], warm_s: f64) -> Option<NodeMemory> {
    let pts: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.node == node && s.elapsed_s >= warm_s)
        .map(|s| (s.elapsed_s, s.rss_kib as f64 / 1024.0))
        .collect();
    if pts.len() < 3 {
        return None;
    }
    let ys: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    Some(NodeMemory {
        node,
        start_mib: median3(&ys[..3]),
        end_mib: median3(&ys[ys.len() - 3..]),
        max_mib: ys.iter().copied().fold(0.0, f64::max),
        slope_mib_per_h: slope * 3600.0,
    })
}

/// The chart: RSS, sessions held and tombstones held per node against minutes, with the end of
/// warm-up marked.
pub fn chart(report: &SoakReport) -> Result<String> {
    let title = format!(
        "Soak: {} instant-copy nodes, {:.0} min, idle timeout {} s, absolute {}, {} req/s",
        report.options.nodes,
        report.ran_s / 60.0,
        report.options.idle_timeout.as_secs(),
        report
            .options
            .absolute_timeout
            .map_or_else(|| "8 h".to_string(), |d| format!("{} s", d.as_secs())),
        report.options.rate
    );
    let nodes: Vec<u16> = {
        let mut v: Vec<u16> = report.samples.iter().map(|s| s.node).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    if nodes.is_empty() {
        return Err(BenchError::msg("soak chart: no samples"));
    }
    let x_max = (report.ran_s / 60.0).max(0.1);
    let warm = report.options.warmup().as_secs_f64() / 60.0;
    let series = |f: &dyn Fn(&Sample) -> f64, node: u16| -> Vec<(f64, f64)> {
        report
            .samples
            .iter()
            .filter(|s| s.node == node && f(s).is_finite())
            .map(|s| (s.elapsed_s / 60.0, f(s)))
            .collect()
    };
    let rss = |s: &Sample| s.rss_kib as f64 / 1024.0;
    let held = |s: &Sample| s.sessions_held;
    let tombstones = |s: &Sample| s.tombstones;
    type Metric<'a> = &'a dyn Fn(&Sample) -> f64;
    let panels: [(&str, &str, Metric<'_>); 3] = [
        ("Resident memory per node", "RSS (MiB)", &rss),
        ("Sessions held per node", "sessions", &held),
        (
            "Tombstones (destroyed ids kept until their absolute deadline) per node",
            "tombstones",
            &tombstones,
        ),
    ];
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
    ];
    let mut svg = String::new();
    {
        let err = |e: &dyn std::fmt::Display| BenchError(format!("soak chart: {e}"));
        let root = SVGBackend::with_string(&mut svg, (960, 1000)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let root = root
            .titled(&title, ("sans-serif", 22))
            .map_err(|e| err(&e))?;
        let areas = root.split_evenly((3, 1));
        for ((ptitle, ydesc, f), area) in panels.iter().zip(areas.iter()) {
            let y_max = report
                .samples
                .iter()
                .map(f)
                .filter(|v| v.is_finite())
                .fold(0.0f64, f64::max)
                .max(1.0)
                * 1.15;
            let mut chart = ChartBuilder::on(area)
                .caption(*ptitle, ("sans-serif", 17))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(64)
                .build_cartesian_2d(0f64..x_max, 0f64..y_max)
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .x_desc("minutes")
                .y_desc(*ydesc)
                .axis_desc_style(("sans-serif", 14))
                .label_style(("sans-serif", 12))
                .draw()
                .map_err(|e| err(&e))?;
            chart
                .draw_series(LineSeries::new(
                    vec![(warm, 0.0), (warm, y_max)],
                    RED.mix(0.7).stroke_width(2),
                ))
                .map_err(|e| err(&e))?
                .label("end of warm-up")
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], RED.mix(0.7).stroke_width(2))
                });
            for (i, node) in nodes.iter().enumerate() {
                let c = colors[i % colors.len()];
                chart
                    .draw_series(LineSeries::new(series(*f, *node), c.stroke_width(2)))
                    .map_err(|e| err(&e))?
                    .label(format!("node {node}"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .label_font(("sans-serif", 13))
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

impl SoakReport {
    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let o = &self.options;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "* **Run**: {} · {:.1} min · {} instant-copy nodes (replication all, ack async) · idle timeout {} s · absolute timeout {} · {} simulated users, {} req/s in total, non-sticky · samples every {} s · warm-up {:.1} min · 1-min load {:.2} → {:.2}",
            self.started,
            self.ran_s / 60.0,
            o.nodes,
            o.idle_timeout.as_secs(),
            o.absolute_timeout.map_or_else(
                || "8 h (default)".to_string(),
                |d| format!("{} s", d.as_secs())
            ),
            o.users,
            o.rate,
            o.sample_every.as_secs(),
            o.warmup().as_secs_f64() / 60.0,
            self.load.0,
            self.load.1
        );
        let _ = writeln!(
            s,
            "* **Requests**: {} · **errors**: {} · **verdict**: {}\n",
            self.requests,
            self.errors,
            if self.passed() {
                "pass (zero errors, RSS flat after warm-up)"
            } else {
                "**fail**"
            }
        );
        let _ = writeln!(
            s,
            "| node | RSS after warm-up MiB | RSS at the end MiB | max MiB | slope MiB/h | flat |"
        );
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|:---:|");
        for m in &self.memory {
            let _ = writeln!(
                s,
                "| {} | {:.1} | {:.1} | {:.1} | {:+.2} | {} |",
                m.node,
                m.start_mib,
                m.end_mib,
                m.max_mib,
                m.slope_mib_per_h,
                if m.is_flat() { "yes" } else { "**no**" }
            );
        }
        for e in &self.error_examples {
            let _ = writeln!(s, "\n* error: {e}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, node: u16, mib: f64) -> Sample {
        Sample {
            elapsed_s: t,
            node,
            rss_kib: (mib * 1024.0) as u64,
            sessions_held: 100.0,
            tombstones: 50.0,
            requests: t as u64 * 10,
            errors: 0,
        }
    }

    #[test]
    fn vmrss_parses() {
        let status = "Name:\tdemo-app\nVmPeak:\t  100 kB\nVmRSS:\t   20480 kB\n";
        assert_eq!(parse_vmrss(status), Some(20480));
        assert_eq!(parse_vmrss("Name: x"), None);
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }

    #[test]
    fn flat_and_growing_memory_are_told_apart() {
        let flat: Vec<Sample> = (0..60)
            .map(|i| sample(f64::from(i) * 5.0, 1, 30.0 + f64::from(i % 3) * 0.2))
            .collect();
        let m = node_memory(1, &flat, 60.0).unwrap();
        assert!(m.is_flat(), "{m:?}");
        assert!(m.slope_mib_per_h.abs() < 5.0, "{m:?}");
        let leak: Vec<Sample> = (0..60)
            .map(|i| sample(f64::from(i) * 5.0, 1, 30.0 + f64::from(i)))
            .collect();
        let m = node_memory(1, &leak, 60.0).unwrap();
        assert!(!m.is_flat(), "{m:?}");
        assert!((m.slope_mib_per_h - 720.0).abs() < 1.0, "{m:?}");
        assert_eq!(node_memory(2, &leak, 60.0), None);
        // A slow leak on a small process: 11 MiB growing 0.6 MiB every 5 minutes.
        let slow: Vec<Sample> = (0..360)
            .map(|i| sample(f64::from(i) * 5.0, 1, 11.0 + f64::from(i) * 0.01))
            .collect();
        let m = node_memory(1, &slow, 180.0).unwrap();
        assert!(!m.is_flat(), "{m:?}");
    }

    #[test]
    fn warmup_is_bounded_by_the_run() {
        let o = |d, idle| SoakOptions {
            nodes: 3,
            duration: Duration::from_secs(d),
            idle_timeout: Duration::from_secs(idle),
            absolute_timeout: None,
            rate: 100,
            users: 10,
            sample_every: Duration::from_secs(5),
            out_dir: PathBuf::from("/tmp"),
        };
        assert_eq!(o(1800, 30).warmup(), Duration::from_secs(180));
        assert_eq!(o(600, 30).warmup(), Duration::from_secs(90));
        assert_eq!(o(60, 30).warmup(), Duration::from_secs(30));
        // Tombstones live one absolute timeout: the warm-up waits them out.
        let short = SoakOptions {
            absolute_timeout: Some(Duration::from_secs(300)),
            ..o(1800, 30)
        };
        assert_eq!(short.warmup(), Duration::from_secs(330));
        let long = SoakOptions {
            absolute_timeout: Some(Duration::from_secs(8 * 3600)),
            ..o(1800, 30)
        };
        assert_eq!(
            long.warmup(),
            Duration::from_secs(900),
            "at most half the run"
        );
    }

    #[test]
    fn report_renders_csv_chart_and_verdict() {
        let samples: Vec<Sample> = (0..40)
            .flat_map(|i| [1u16, 2].map(|n| sample(f64::from(i) * 5.0, n, 25.0)))
            .collect();
        let memory = [1u16, 2]
            .iter()
            .filter_map(|n| node_memory(*n, &samples, 30.0))
            .collect();
        let report = SoakReport {
            options: SoakOptions {
                nodes: 2,
                duration: Duration::from_secs(200),
                idle_timeout: Duration::from_secs(10),
                absolute_timeout: Some(Duration::from_secs(60)),
                rate: 100,
                users: 10,
                sample_every: Duration::from_secs(5),
                out_dir: PathBuf::from("/tmp"),
            },
            samples,
            memory,
            requests: 20_000,
            errors: 0,
            error_examples: vec![],
            ran_s: 200.0,
            started: "2026-01-01 00:00 UTC".into(),
            load: (1.0, 1.2),
        };
        assert!(report.passed());
        let md = report.to_markdown();
        assert!(md.contains("pass (zero errors"), "{md}");
        assert!(md.contains("| 1 | 25.0 | 25.0 | 25.0 |"), "{md}");
        let svg = chart(&report).unwrap();
        assert!(svg.starts_with("<svg"));
        for t in [
            "Resident memory per node",
            "Sessions held per node",
            "Tombstones",
            "node 2",
            "minutes",
        ] {
            assert!(svg.contains(t), "the chart lacks {t:?}");
        }
        let mut failed = report.clone();
        failed.errors = 1;
        assert!(!failed.passed());
    }
}
