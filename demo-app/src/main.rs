//! The `demo-app` command line: `serve`, `check-config`, `cluster` (and `compare`, which
//! forwards to `bench table1`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use backend_instantcopy::{Ack, Replication};
use clap::{Parser, Subcommand};
use demo_app::cluster::{ClusterSpec, LocalCluster};
use demo_app::config::{BackendKind, DemoConfig};

/// Session-sync demo: any session backend from config, a local cluster, and the paper's
/// comparison re-measured.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node (the default command). Config: --config FILE (else the embedded default),
    /// overridden by DEMO_* environment variables (`__` between nested keys).
    Serve {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Load and validate the configuration exactly as `serve` would (file, DEMO_* variables,
    /// secrets), print a summary without secrets, and exit: 0 when `serve` would start, 2 with
    /// the first error otherwise. Binds nothing and contacts no store or peer.
    CheckConfig {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// GET a URL and exit 0 when it answers 200, 1 otherwise (a container health check for
    /// images without curl, e.g. `demo-app probe http://127.0.0.1:8080/readyz`).
    Probe {
        /// The URL to fetch.
        url: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Start N node processes on free loopback ports; stop them all with Ctrl-C.
    Cluster {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Backend: instantcopy, cookie, sql or redis.
        #[arg(long, default_value = "instantcopy")]
        backend: BackendKind,
        /// Instant copy: "all" or a number of backups.
        #[arg(long, default_value = "all")]
        replicas: Replication,
        /// Instant copy: async, one or all.
        #[arg(long, default_value = "async")]
        ack: Ack,
        /// SQL: database URL (default: DATABASE_URL, else the config's).
        #[arg(long)]
        database_url: Option<String>,
        /// Redis: server URL (default: REDIS_URL, else the config's).
        #[arg(long)]
        redis_url: Option<String>,
        /// Base configuration file for every node.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Node log filter.
        #[arg(long, default_value = "info")]
        log: String,
    },
    /// Moved: the measured comparison is `bench table1` (this forwards to the `bench`
    /// binary built next to this one, with the same arguments, `--help` included).
    #[command(hide = true, disable_help_flag = true)]
    Compare {
        /// The arguments of `bench table1`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Cmd::Serve { config: None }) {
        Cmd::Serve { config } => {
            return match serve(config).await {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Cmd::CheckConfig { config } => check_config(config),
        Cmd::Probe { url, timeout } => return probe(&url, Duration::from_secs(timeout)).await,
        Cmd::Cluster {
            nodes,
            backend,
            replicas,
            ack,
            database_url,
            redis_url,
            config,
            log,
        } => {
            let mut spec = ClusterSpec::new(nodes, backend);
            spec.replication = replicas;
            spec.ack = ack;
            spec.database_url = database_url;
            spec.redis_url = redis_url;
            spec.config_file = config;
            spec.log = log;
            spec.show_logs = true;
            cluster(spec).await
        }
        Cmd::Compare { args } => forward_to_bench_table1(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs one node; returns the exit code (0, or 3 when the drain left sessions behind).
async fn serve(file: Option<PathBuf>) -> Result<u8, String> {
    let config = DemoConfig::load(file.as_deref()).map_err(|e| e.to_string())?;
    init_tracing(&config.log);
    let outcome = demo_app::serve(config, demo_app::shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    if let Some(d) = outcome.drain {
        eprintln!(
            "drained: {} sessions held, {} handed off to {} peers, {} left behind{} ({} ms)",
            d.sessions,
            d.handed_off,
            d.peers,
            d.left_behind,
            if d.timed_out {
                ", drain_timeout reached"
            } else {
                ""
            },
            d.elapsed_ms
        );
    }
    Ok(outcome.exit_code())
}

/// `probe`: 0 on a 200, 1 on any other status or no answer (the body goes to stdout either way).
async fn probe(url: &str, timeout: Duration) -> ExitCode {
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match client.get(url).send().await {
        Ok(resp) => {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            println!("{} {}", status.as_u16(), body.trim());
            if status == reqwest::StatusCode::OK {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("no answer from {url}: {e}");
            ExitCode::from(1)
        }
    }
}

/// `check-config`: what `serve` validates before it binds anything.
fn check_config(file: Option<PathBuf>) -> Result<(), String> {
    let config = DemoConfig::load(file.as_deref()).map_err(|e| e.to_string())?;
    let keys = demo_app::config::load_keys(&config).map_err(|e| e.to_string())?;
    println!(
        "node {} app {} backend {} dev {}",
        config.node_id,
        config.app_addr,
        config.backend.kind.as_str(),
        config.dev
    );
    println!(
        "session secrets: {} key(s) from {:?}",
        keys.session.len(),
        keys.source
    );
    if config.backend.kind == BackendKind::Instantcopy {
        let ic = config.instantcopy_config();
        println!(
            "instantcopy: cluster {} advertise {} seeds {:?} replication {:?} ack {:?}",
            ic.cluster_addr,
            ic.advertise_addr.as_deref().unwrap_or("(cluster_addr)"),
            ic.seeds,
            ic.replication,
            ic.ack
        );
    }
    println!("configuration ok");
    Ok(())
}

async fn cluster(spec: ClusterSpec) -> Result<(), String> {
    if spec.nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let mut cluster = LocalCluster::start(&exe, &spec)
        .await
        .map_err(|e| e.to_string())?;
    for n in &cluster.nodes {
        println!(
            "node {} pid {} url {} cluster {}",
            n.id,
            n.pid().map_or_else(|| "-".into(), |p| p.to_string()),
            n.url,
            n.cluster_addr.map_or_else(|| "-".into(), |a| a.to_string()),
        );
    }
    println!("ready");
    demo_app::shutdown_signal().await;
    eprintln!("stopping {} nodes", cluster.nodes.len());
    cluster.stop(Duration::from_secs(10)).await;
    Ok(())
}

/// `demo-app compare` from before the comparison moved to the bench crate: runs the `bench`
/// binary next to this one as `bench table1 ARGS` (replacing this process). Under `cargo run`
/// (which sets `CARGO`) a missing `bench` is built first, into the same target directory and
/// profile; otherwise the error says how to build it.
fn forward_to_bench_table1(args: Vec<std::ffi::OsString>) -> Result<(), String> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let bench = exe.with_file_name("bench");
    if !bench.exists() {
        build_bench(&exe)?;
    }
    let err = std::process::Command::new(&bench)
        .arg("table1")
        .args(args)
        .exec();
    Err(format!("running {}: {err}", bench.display()))
}

/// Builds the `bench` binary next to `exe` (`<target>/<profile>/demo-app`) with the cargo
/// that ran this one.
fn build_bench(exe: &std::path::Path) -> Result<(), String> {
    let how = "the comparison moved to the bench crate: run `cargo run --release -p bench -- \
               table1` (same arguments as `demo-app compare`)";
    let cargo = std::env::var_os("CARGO").ok_or_else(|| how.to_owned())?;
    let profile_dir = exe.parent().ok_or_else(|| how.to_owned())?;
    let target_dir = profile_dir.parent().ok_or_else(|| how.to_owned())?;
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut build = std::process::Command::new(cargo);
    build
        .args(["build", "-p", "bench", "--bin", "bench", "--manifest-path"])
        .arg(&workspace)
        .arg("--target-dir")
        .arg(target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    eprintln!(
        "building bench (the comparison moved there) into {}",
        target_dir.display()
    );
    let status = build
        .status()
        .map_err(|e| format!("running cargo build -p bench: {e}; {how}"))?;
    if !status.success() {
        return Err(format!("building bench failed ({status}); {how}"));
    }
    Ok(())
}
