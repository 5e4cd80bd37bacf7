//! The `bench` command line: `compare-peers`, `table1`, `simulate`, `replication`, `soak`, and
//! `peer` (the tower-sessions and floor apps, started by `compare-peers`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use backend_instantcopy::{Ack, Replication};
use bench::compare::{self, CompareOptions};
use bench::error::{BenchError, Result};
use bench::operations::{self, OperationsOptions};
use bench::peers::{self, PeerConfig, PeerKind};
use bench::replication::{self, ReplicationOptions};
use bench::soak::{self, SoakOptions};
use bench::targets::{Binaries, Cleanup, Launcher, Services, Target};
use bench::wrk::Route;
use bench::wrk::WrkConfig;
use bench::{machine, results};
use clap::{Parser, Subcommand};

/// Benchmarks of session-sync against tower-sessions, replication lag and soak.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

fn duration(s: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 10s, 30m)"))
}

#[derive(Subcommand)]
enum Cmd {
    /// Every target side by side with wrk; prints the Markdown table and writes RESULTS.md.
    ComparePeers {
        /// Rounds over all targets (medians are reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Measured time per route and round.
        #[arg(long, default_value = "10s", value_parser = duration)]
        duration: Duration,
        /// Unmeasured profile load before each target's runs.
        #[arg(long, default_value = "2s", value_parser = duration)]
        warmup: Duration,
        /// wrk connections.
        #[arg(long, default_value_t = 32)]
        connections: u32,
        /// wrk threads.
        #[arg(long, default_value_t = 1)]
        threads: u32,
        /// Sessions prepared per target and round.
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        /// Only these targets (comma-separated: floor, ts-memory, ts-redis, ts-postgres,
        /// ours-instantcopy, ours-cookie, ours-redis, ours-sql).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// CPUs for the server processes (taskset list); empty = unpinned.
        #[arg(long, default_value = "0")]
        server_cpus: String,
        /// CPUs for wrk (taskset list); empty = unpinned.
        #[arg(long, default_value = "1")]
        wrk_cpus: String,
        /// Wait (up to --wait-max) for the 1-minute load average to drop below this first.
        #[arg(long, default_value_t = 1.5)]
        wait_load: f64,
        /// Longest wait for a quiet machine.
        #[arg(long, default_value = "10m", value_parser = duration)]
        wait_max: Duration,
        /// The demo-app binary (default: DEMO_APP_BIN, else next to this executable, built if
        /// missing).
        #[arg(long)]
        demo_bin: Option<PathBuf>,
        /// Results file (default: benches/RESULTS.md in the workspace).
        #[arg(long)]
        results: Option<PathBuf>,
        /// Print the table only; do not touch the results file.
        #[arg(long)]
        no_results: bool,
        /// The results file section to write (several comparisons can live side by side).
        #[arg(long, default_value = "compare-peers")]
        section: String,
        /// A line printed under the heading (e.g. what differs in this run).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Replication lag and messages per write on an instant-copy cluster.
    Replication {
        /// Cluster size.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Writes per second on node 1.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// How long to write.
        #[arg(long, default_value = "20s", value_parser = duration)]
        duration: Duration,
        /// "all" or a number of backups.
        #[arg(long, default_value = "all")]
        replicas: Replication,
        /// async, one or all.
        #[arg(long, default_value = "async")]
        ack: Ack,
        /// Sessions written to, round-robin.
        #[arg(long, default_value_t = 200)]
        sessions: usize,
        /// The demo-app binary.
        #[arg(long)]
        demo_bin: Option<PathBuf>,
        /// Results file (default: benches/RESULTS.md in the workspace).
        #[arg(long)]
        results: Option<PathBuf>,
        /// Print only; do not touch the results file.
        #[arg(long)]
        no_results: bool,
    },
    /// Operations numbers of instant copy: restart to ready, drain, anti-entropy bytes, join,
    /// membership convergence, failure detection, gossip bytes at rest.
    Operations {
        /// Session counts, comma-separated [default: 10000,100000; --quick: 500].
        #[arg(long, value_delimiter = ',')]
        sessions: Option<Vec<usize>>,
        /// Cluster sizes for the membership numbers [default: 3,8; --quick: 3].
        #[arg(long, value_delimiter = ',')]
        membership_nodes: Option<Vec<usize>>,
        /// Small numbers, for a smoke run.
        #[arg(long)]
        quick: bool,
        /// Results file (default: benches/RESULTS.md in the workspace).
        #[arg(long)]
        results: Option<PathBuf>,
        /// Print only; do not touch the results file.
        #[arg(long)]
        no_results: bool,
    },
    /// A long run of a 3-node instant-copy cluster under mixed load; RSS and errors to CSV + SVG.
    Soak {
        /// How long.
        #[arg(long, default_value = "30m", value_parser = duration)]
        duration: Duration,
        /// Output directory for soak.csv and soak.svg (default: benches/soak in the workspace).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Cluster size.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// The nodes' session idle timeout.
        #[arg(long, default_value = "30s", value_parser = duration)]
        idle_timeout: Duration,
        /// The nodes' absolute session timeout (default: the demo's 8 h). Logged-out sessions
        /// keep a tombstone until their absolute deadline, so memory is steady within the run
        /// only when this is short too.
        #[arg(long, value_parser = duration)]
        absolute_timeout: Option<Duration>,
        /// Total requests per second.
        #[arg(long, default_value_t = 300)]
        rate: u32,
        /// Simulated users at a time.
        #[arg(long, default_value_t = 30)]
        users: usize,
        /// Sampling interval.
        #[arg(long, default_value = "5s", value_parser = duration)]
        sample_every: Duration,
        /// The demo-app binary.
        #[arg(long)]
        demo_bin: Option<PathBuf>,
        /// Results file (default: benches/RESULTS.md in the workspace).
        #[arg(long)]
        results: Option<PathBuf>,
        /// Print only; do not touch the results file.
        #[arg(long)]
        no_results: bool,
    },
    /// Start one target with prepared sessions and wrk scripts, and keep it running until
    /// Ctrl-C (for profiling with perf or valgrind, or running wrk by hand).
    Hold {
        /// The target (floor, ts-memory, ts-redis, ts-postgres, ours-instantcopy, ...).
        #[arg(long)]
        target: String,
        /// Sessions to prepare.
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        /// CPUs for the server (taskset list); empty = unpinned.
        #[arg(long, default_value = "0")]
        server_cpus: String,
        /// Run the server under this command (e.g. "valgrind --tool=callgrind").
        #[arg(long, default_value = "")]
        wrap: String,
        /// Directory for the wrk scripts.
        #[arg(long, default_value = "/tmp/bench-hold")]
        dir: PathBuf,
        /// The demo-app binary.
        #[arg(long)]
        demo_bin: Option<PathBuf>,
    },
    /// Instructions per request (valgrind callgrind) of one route on some targets.
    Instructions {
        /// Targets (comma-separated; default: floor, ts-memory, ours-instantcopy).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// The route: login, profile or cart.
        #[arg(long, default_value = "profile")]
        route: String,
        /// Counted time (under valgrind the server is ~50x slower).
        #[arg(long, default_value = "10s", value_parser = duration)]
        duration: Duration,
        /// Sessions prepared.
        #[arg(long, default_value_t = 300)]
        sessions: usize,
        /// Where dumps go.
        #[arg(long, default_value = "/tmp/bench-callgrind")]
        dir: PathBuf,
        /// The demo-app binary.
        #[arg(long)]
        demo_bin: Option<PathBuf>,
    },
    /// The paper's Table 1, measured: every scheme as a real multi-node cluster under the same
    /// non-sticky workload; results.json, results.md and SVG charts go to --out.
    Table1(bench::table1::cli::Args),
    /// Instant copy's replication protocol at 2 to 256 nodes, simulated (deterministic,
    /// virtual time): messages and bytes per write, detection and repair after a node loss;
    /// results.json, results.md and scaling.svg go to --out.
    Simulate(bench::simulate::cli::Args),
    /// Serve one peer app (used by compare-peers).
    #[command(hide = true)]
    Peer {
        /// Which app.
        #[arg(long, value_enum)]
        kind: PeerKind,
        /// Listen address.
        #[arg(long)]
        addr: SocketAddr,
        /// Redis server (ts-redis).
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis_url: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn hold(
    launcher: &Launcher,
    target: Target,
    sessions: usize,
    dir: &std::path::Path,
    cleanup: &mut Cleanup,
) -> Result<()> {
    let server = launcher.start(target, cleanup).await?;
    let client = bench::client::http_client()?;
    let needs_token = target != Target::Peer(PeerKind::Floor);
    let outcome = async {
        let tokens =
            bench::client::setup_sessions(&client, &server.url, sessions.max(1), 16, needs_token)
                .await?;
        for route in Route::ALL {
            let path = bench::wrk::write_script(route, &tokens, dir)?;
            println!(
                "{:<8} wrk -t1 -c32 -d10s -s {} {}",
                route.name(),
                path.display(),
                server.url
            );
        }
        println!(
            "{} pid {} url {} (Ctrl-C stops it)",
            target.name(),
            server.pid().map_or_else(|| "-".into(), |p| p.to_string()),
            server.url
        );
        demo_app::shutdown_signal().await;
        Ok::<(), BenchError>(())
    }
    .await;
    server.stop(std::time::Duration::from_secs(30)).await;
    outcome
}

fn pin(cpus: &str) -> Option<String> {
    (!cpus.trim().is_empty()).then(|| cpus.trim().to_owned())
}

async fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Table1(args) => bench::table1::cli::run(args).await.map_err(BenchError::msg),
        Cmd::Simulate(args) => bench::simulate::cli::run(args),
        Cmd::ComparePeers {
            repeats,
            duration,
            warmup,
            connections,
            threads,
            sessions,
            only,
            server_cpus,
            wrk_cpus,
            wait_load,
            wait_max,
            demo_bin,
            results: results_path,
            no_results,
            section,
            note,
        } => {
            let targets = if only.is_empty() {
                Target::all()
            } else {
                only.iter()
                    .map(|s| Target::parse(s.trim()))
                    .collect::<Result<Vec<_>>>()?
            };
            if repeats == 0 || sessions == 0 {
                return Err(BenchError::msg(
                    "--repeats and --sessions must be at least 1",
                ));
            }
            let launcher = Launcher {
                binaries: Binaries::locate(demo_bin)?,
                services: Services::from_env(),
                pin: pin(&server_cpus),
                wrapper: vec![],
                log_dir: std::env::temp_dir().join(format!("bench-{}", std::process::id())),
                demo_env: vec![],
            };
            let (load, quiet) = machine::wait_for_quiet(wait_load, wait_max).await;
            if !quiet {
                eprintln!(
                    "warning: the 1-minute load average is still {load:.2} after waiting; measuring anyway"
                );
            }
            let options = CompareOptions {
                targets,
                repeats,
                wrk: WrkConfig {
                    threads,
                    connections,
                    duration,
                    pin: pin(&wrk_cpus),
                },
                warmup,
                sessions,
            };
            let comparison = compare::run(options, &launcher).await?;
            let mut md = comparison.to_markdown();
            if !note.is_empty() {
                md = md.replacen("\n\n", &format!("\n\n{note}\n\n"), 1);
            }
            println!("{md}");
            if !no_results {
                let path = results_path.unwrap_or_else(results::default_path);
                results::update(&path, &section, &md)?;
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        }
        Cmd::Replication {
            nodes,
            rate,
            duration,
            replicas,
            ack,
            sessions,
            demo_bin,
            results: results_path,
            no_results,
        } => {
            let binaries = Binaries::locate(demo_bin)?;
            let options = ReplicationOptions {
                nodes,
                rate,
                duration,
                replication: replicas,
                ack,
                sessions: sessions.max(1),
            };
            let started = machine::utc_now();
            let load = machine::loadavg().map_or(0.0, |l| l[0]);
            let (options_nodes, options_secs) = (options.nodes, options.duration.as_secs());
            let replicas_name = match replicas {
                Replication::All => "all".to_string(),
                Replication::Backups(k) => k.to_string(),
            };
            let report = replication::run(&binaries.demo, options).await?;
            let md = format!(
                "## Replication lag (instant copy, {} nodes, replication {} / ack {})\n\n* **Date**: {started} · **machine**: {} · 1-min load {load:.2}\n* Writes (`POST /cart/items`) at a fixed open-loop rate on node 1 only, for {} s. **Visible on all replicas**: every 20 ms a probe logs a new user in on node 1 and polls each replica's `/status.json` until its `sessions_held` includes the new session (the load changes only existing sessions), timed from the login response; resolution = one poll round trip. **Ack lag**: node 1's `replication_lag_seconds` histogram (update queued → replica acknowledged; the backend records it only when writes wait for acks), interpolated inside its doubling bucket, the bucket ceiling in brackets. **Messages** = peer HTTP requests (push batches), **updates** = session updates they carried, per write (load and probes)\n\n{}",
                options_nodes,
                replicas_name,
                ack,
                machine::Machine::detect().summary(),
                options_secs,
                report.to_markdown()
            );
            println!("{md}");
            println!(
                "p99 lag under 2 ms: {}",
                if report.p99_under(2.0) { "yes" } else { "no" }
            );
            if !no_results {
                let path = results_path.unwrap_or_else(results::default_path);
                let name = format!("replication-{replicas_name}-{ack}");
                results::update(&path, &name, &md)?;
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        }
        Cmd::Operations {
            sessions,
            membership_nodes,
            quick,
            results: results_path,
            no_results,
        } => {
            let mut options = if quick {
                OperationsOptions::quick()
            } else {
                OperationsOptions::full()
            };
            if let Some(s) = sessions {
                options.sessions = s;
            }
            if let Some(m) = membership_nodes {
                options.membership_sizes = m.into_iter().filter(|n| *n >= 3).collect();
            }
            let started = machine::utc_now();
            let load = machine::loadavg().map_or(0.0, |l| l[0]);
            let report = operations::run(&options).await?;
            let md = format!(
                "## Operations (instant copy, in-process nodes on loopback, production timings)\n\n* **Date**: {started} · **machine**: {} · 1-min load {load:.2}\n* `cargo run --release -p bench -- operations`; see `bench/src/operations.rs` for how each number is taken.\n\n{}",
                machine::Machine::detect().summary(),
                report.to_markdown()
            );
            println!("{md}");
            if !no_results {
                let path = results_path.unwrap_or_else(results::default_path);
                results::update(&path, "operations", &md)?;
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        }
        Cmd::Soak {
            duration,
            out,
            nodes,
            idle_timeout,
            absolute_timeout,
            rate,
            users,
            sample_every,
            demo_bin,
            results: results_path,
            no_results,
        } => {
            let binaries = Binaries::locate(demo_bin)?;
            let results_path = results_path.unwrap_or_else(results::default_path);
            // Runs with and without a short absolute timeout keep separate files and sections.
            let name = match absolute_timeout {
                None => "soak".to_string(),
                Some(d) => format!("soak-absolute-{}s", d.as_secs()),
            };
            let out = out.unwrap_or_else(|| {
                results_path
                    .parent()
                    .map_or_else(|| PathBuf::from(&name), |d| d.join(&name))
            });
            let options = SoakOptions {
                nodes,
                duration,
                idle_timeout,
                absolute_timeout,
                rate,
                users: users.max(1),
                sample_every,
                out_dir: out.clone(),
            };
            let report = soak::run(&binaries.demo, options).await?;
            // Link the files relative to the results file when they sit beside it.
            let rel = |p: PathBuf| {
                results_path
                    .parent()
                    .and_then(|d| p.strip_prefix(d).ok().map(std::path::Path::to_path_buf))
                    .unwrap_or(p)
                    .display()
                    .to_string()
            };
            let md = format!(
                "## Soak (instant copy)\n\n![RSS and sessions held per node]({}) · samples: [`{}`]({})\n\n{}",
                rel(out.join("soak.svg")),
                rel(out.join("soak.csv")),
                rel(out.join("soak.csv")),
                report.to_markdown()
            );
            println!("{md}");
            eprintln!(
                "wrote {} and {}",
                out.join("soak.csv").display(),
                out.join("soak.svg").display()
            );
            if !no_results {
                results::update(&results_path, &name, &md)?;
                eprintln!("wrote {}", results_path.display());
            }
            if report.passed() {
                Ok(())
            } else {
                Err(BenchError::msg(
                    "soak failed: errors or growing memory (see the table)",
                ))
            }
        }
        Cmd::Instructions {
            only,
            route,
            duration,
            sessions,
            dir,
            demo_bin,
        } => {
            let route = Route::ALL
                .into_iter()
                .find(|r| r.name() == route)
                .ok_or_else(|| {
                    BenchError(format!("unknown route {route:?} (login, profile, cart)"))
                })?;
            let names = if only.is_empty() {
                vec![
                    "floor".into(),
                    "ts-memory".into(),
                    "ours-instantcopy".into(),
                ]
            } else {
                only
            };
            let targets = names
                .iter()
                .map(|s| Target::parse(s.trim()))
                .collect::<Result<Vec<_>>>()?;
            let launcher = Launcher {
                binaries: Binaries::locate(demo_bin)?,
                services: Services::from_env(),
                pin: None,
                wrapper: vec![],
                log_dir: dir,
                demo_env: vec![],
            };
            println!("| target | route | requests | instructions / request | dump |");
            println!("|---|---|---:|---:|---|");
            for target in targets {
                let c =
                    bench::callgrind::count(&launcher, target, route, duration, sessions.max(1))
                        .await?;
                println!(
                    "| {} | {} | {} | {:.0} | {} |",
                    target.name(),
                    route.describe(),
                    c.requests,
                    c.per_request(),
                    c.dump.display()
                );
            }
            Ok(())
        }
        Cmd::Hold {
            target,
            sessions,
            server_cpus,
            wrap,
            dir,
            demo_bin,
        } => {
            let target = Target::parse(&target)?;
            let launcher = Launcher {
                binaries: Binaries::locate(demo_bin)?,
                services: Services::from_env(),
                pin: pin(&server_cpus),
                wrapper: wrap.split_whitespace().map(str::to_owned).collect(),
                log_dir: dir.clone(),
                demo_env: vec![],
            };
            let mut cleanup = Cleanup::default();
            let held = hold(&launcher, target, sessions, &dir, &mut cleanup).await;
            for problem in cleanup.run(&launcher.services).await {
                eprintln!("cleanup problem: {problem}");
            }
            held
        }
        Cmd::Peer {
            kind,
            addr,
            redis_url,
        } => {
            let config = PeerConfig { addr, redis_url };
            peers::serve(kind, &config, demo_app::shutdown_signal()).await
        }
    }
}
