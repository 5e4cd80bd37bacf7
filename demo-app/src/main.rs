//! The `demo-app` command line: `serve`, `check-config`, `cluster` and `compare`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use backend_instantcopy::{Ack, Replication};
use clap::{Parser, Subcommand};
use demo_app::cluster::{ClusterSpec, LocalCluster};
use demo_app::compare::{CompareOptions, Scheme};
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
    /// Run every scheme as a real cluster under the same non-sticky workload and print the
    /// paper's Table 1 with measured numbers; results.json, results.md and SVG charts go to
    /// --out.
    Compare {
        /// Nodes per cluster [default: 3, --quick: 2].
        #[arg(long)]
        nodes: Option<usize>,
        /// Concurrent virtual users [default: 50, --quick: 4].
        #[arg(long)]
        users: Option<usize>,
        /// Workload requests per scheme [default: 100000, --quick: 120].
        #[arg(long)]
        requests: Option<usize>,
        /// Directory for results.json, results.md and the charts.
        #[arg(long, default_value = "compare-results")]
        out: PathBuf,
        /// Also copy results.md into this Markdown file (the README), between its
        /// `<!-- compare:begin ... -->` and `<!-- compare:end -->` lines.
        #[arg(long)]
        readme: Option<PathBuf>,
        /// Small numbers, for a smoke run in seconds.
        #[arg(long)]
        quick: bool,
        /// Schemes to run, comma-separated [default: all of instantcopy-all, instantcopy-k1,
        /// cookie, sql, redis].
        #[arg(long, value_delimiter = ',')]
        schemes: Option<Vec<Scheme>>,
        /// Cluster sizes of the all-vs-k=1 scaling runs, comma-separated [default: 2,4,8,
        /// --quick: 2,4]; 0 skips them.
        #[arg(long, value_delimiter = ',')]
        scaling_nodes: Option<Vec<usize>>,
        /// Requests per scaling run [default: 20000, --quick: 60].
        #[arg(long)]
        scaling_requests: Option<usize>,
        /// Virtual users per scaling run [default: 20, --quick: 4].
        #[arg(long)]
        scaling_users: Option<usize>,
        /// PostgreSQL for the SQL scheme [default: DATABASE_URL, else
        /// postgres://postgres@127.0.0.1:5432/postgres].
        #[arg(long)]
        database_url: Option<String>,
        /// Redis for the Redis scheme [default: REDIS_URL, else redis://127.0.0.1:6379].
        #[arg(long)]
        redis_url: Option<String>,
        /// Seed of the workload's random choices.
        #[arg(long, default_value_t = 1)]
        seed: u64,
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
        Cmd::Compare {
            nodes,
            users,
            requests,
            out,
            readme,
            quick,
            schemes,
            scaling_nodes,
            scaling_requests,
            scaling_users,
            database_url,
            redis_url,
            seed,
        } => {
            let mut opts = if quick {
                CompareOptions::quick()
            } else {
                CompareOptions::full()
            };
            opts.nodes = nodes.unwrap_or(opts.nodes);
            opts.users = users.unwrap_or(opts.users);
            opts.requests = requests.unwrap_or(opts.requests);
            opts.schemes = schemes.unwrap_or(opts.schemes);
            if let Some(sizes) = scaling_nodes {
                opts.scaling_nodes = sizes.into_iter().filter(|n| *n != 0).collect();
            }
            opts.scaling_requests = scaling_requests.unwrap_or(opts.scaling_requests);
            opts.scaling_users = scaling_users.unwrap_or(opts.scaling_users);
            opts.database_url = database_url.unwrap_or(opts.database_url);
            opts.redis_url = redis_url.unwrap_or(opts.redis_url);
            opts.seed = seed;
            compare(opts, out, readme).await
        }
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

async fn compare(
    opts: CompareOptions,
    out: PathBuf,
    readme: Option<PathBuf>,
) -> Result<(), String> {
    init_tracing("warn");
    // Check the README before spending minutes measuring.
    let readme = match readme {
        Some(path) => {
            let doc = std::fs::read_to_string(&path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            demo_app::compare::splice(&doc, "").map_err(|e| format!("{}: {e}", path.display()))?;
            Some(path)
        }
        None => None,
    };
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut report = demo_app::compare::run(&exe, &opts, progress)
        .await
        .map_err(|e| e.to_string())?;
    // The command as a reader would type it (service URLs are not on the line: they come
    // from the environment or flags, and a flag's password is redacted).
    let args: Vec<String> = std::env::args()
        .skip(1)
        .map(|a| {
            if a.contains("://") {
                demo_app::compare::redact(&a)
            } else {
                a
            }
        })
        .collect();
    report.command = Some(format!("demo-app {}", args.join(" ")));
    println!("{}", report.markdown());
    let files = report.write(&out).map_err(|e| e.to_string())?;
    for f in files {
        eprintln!("wrote {}", f.display());
    }
    if let Some(path) = readme {
        let doc = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let spliced = demo_app::compare::splice(&doc, &report.markdown())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::write(&path, spliced).map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("updated the generated tables in {}", path.display());
    }
    Ok(())
}
