//! The `demo-app` command line: `serve`, `cluster` and `compare`.

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
        Cmd::Serve { config } => serve(config).await,
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn serve(file: Option<PathBuf>) -> Result<(), String> {
    let config = DemoConfig::load(file.as_deref()).map_err(|e| e.to_string())?;
    init_tracing(&config.log);
    demo_app::serve(config, demo_app::shutdown_signal())
        .await
        .map_err(|e| e.to_string())
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
