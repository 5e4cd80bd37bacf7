//! The systems under test, each started as its own process on a free loopback port: the demo
//! node (`demo-app serve`, configured through `DEMO_*` variables) with each backend, the
//! tower-sessions apps and the floor (`bench peer --kind ...`). Also the clean-up of what runs
//! leave on the shared PostgreSQL and Redis servers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use demo_app::config::BackendKind;
use tokio::process::{Child, Command};

use crate::error::{BenchError, Context, Result};
use crate::peers::PeerKind;

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A tower-sessions app or the floor.
    Peer(PeerKind),
    /// The demo node with one of our backends.
    Ours(BackendKind),
}

impl Target {
    /// Every target, peers first (the order of the results table).
    pub fn all() -> Vec<Target> {
        vec![
            Target::Peer(PeerKind::Floor),
            Target::Peer(PeerKind::TsMemory),
            Target::Peer(PeerKind::TsRedis),
            Target::Peer(PeerKind::TsPostgres),
            Target::Ours(BackendKind::Instantcopy),
            Target::Ours(BackendKind::Cookie),
            Target::Ours(BackendKind::Redis),
            Target::Ours(BackendKind::Sql),
        ]
    }

    /// Short name (`floor`, `ts-memory`, `ours-instantcopy`, ...), also accepted by `--only`.
    pub fn name(self) -> String {
        match self {
            Target::Peer(p) => p.as_str().to_owned(),
            Target::Ours(b) => format!("ours-{}", b.as_str()),
        }
    }

    /// What the results table calls it.
    pub fn label(self) -> &'static str {
        match self {
            Target::Peer(PeerKind::Floor) => "floor: axum, no session layer",
            Target::Peer(PeerKind::TsMemory) => "tower-sessions 0.15 MemoryStore",
            Target::Peer(PeerKind::TsRedis) => "tower-sessions 0.14 + redis-store 0.16",
            Target::Peer(PeerKind::TsPostgres) => {
                "tower-sessions 0.14 + sqlx-store 0.15 (Postgres)"
            }
            Target::Ours(BackendKind::Instantcopy) => "session-sync instant copy (1 node)",
            Target::Ours(BackendKind::Cookie) => "session-sync sealed cookie",
            Target::Ours(BackendKind::Redis) => "session-sync Redis",
            Target::Ours(BackendKind::Sql) => "session-sync SQL (Postgres)",
        }
    }

    /// Parses [`name`](Target::name).
    pub fn parse(s: &str) -> Result<Target> {
        Target::all()
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                let names: Vec<String> = Target::all().into_iter().map(Target::name).collect();
                BenchError(format!(
                    "unknown target {s:?}; expected one of {}",
                    names.join(", ")
                ))
            })
    }

    /// True when the target needs the PostgreSQL server.
    pub fn uses_postgres(self) -> bool {
        matches!(
            self,
            Target::Peer(PeerKind::TsPostgres) | Target::Ours(BackendKind::Sql)
        )
    }

    /// True when the target needs the Redis server.
    pub fn uses_redis(self) -> bool {
        matches!(
            self,
            Target::Peer(PeerKind::TsRedis) | Target::Ours(BackendKind::Redis)
        )
    }
}

/// The executables: this harness (floor, ts-memory and ts-redis apps), the demo, and the
/// tower-sessions Postgres app.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// This executable.
    pub bench: PathBuf,
    /// `demo-app`.
    pub demo: PathBuf,
    /// `ts-postgres-peer`.
    pub ts_postgres: PathBuf,
}

impl Binaries {
    /// Finds the binaries. The demo: `explicit`, else `DEMO_APP_BIN`, else `demo-app` next to
    /// this executable; the Postgres peer: `TS_POSTGRES_PEER_BIN`, else `ts-postgres-peer` next
    /// to this executable. When one is missing and this is a release build, it is built there
    /// (so one `cargo run --release -p bench -- compare-peers` does it all).
    pub fn locate(explicit: Option<PathBuf>) -> Result<Self> {
        let bench = std::env::current_exe().context("cannot find this executable")?;
        let dir = bench
            .parent()
            .ok_or_else(|| BenchError::msg("this executable has no directory"))?
            .to_path_buf();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let demo = locate_demo(explicit)?;
        let ts_postgres = find(
            std::env::var_os("TS_POSTGRES_PEER_BIN").map(PathBuf::from),
            &dir,
            "ts-postgres-peer",
            &root.join("ts-postgres-peer/Cargo.toml"),
            &[],
        )?;
        Ok(Binaries {
            bench,
            demo,
            ts_postgres,
        })
    }
}

/// The demo-app binary: `explicit`, else `DEMO_APP_BIN`, else `demo-app` next to this
/// executable (built there when missing and this is a release build).
pub fn locate_demo(explicit: Option<PathBuf>) -> Result<PathBuf> {
    let bench = std::env::current_exe().context("cannot find this executable")?;
    let dir = bench
        .parent()
        .ok_or_else(|| BenchError::msg("this executable has no directory"))?;
    find(
        explicit.or_else(|| std::env::var_os("DEMO_APP_BIN").map(PathBuf::from)),
        dir,
        "demo-app",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"),
        &["-p", "demo-app"],
    )
}

/// `explicit`, else `name` in `dir` (built from `manifest` when missing).
fn find(
    explicit: Option<PathBuf>,
    dir: &Path,
    name: &str,
    manifest: &Path,
    package: &[&str],
) -> Result<PathBuf> {
    let path = match explicit {
        Some(p) => p,
        None => {
            let sibling = dir.join(name);
            if !sibling.exists() {
                build(dir, name, manifest, package)?;
            }
            sibling
        }
    };
    if !path.exists() {
        return Err(BenchError(format!(
            "{name} binary {} not found: build it with `cargo build --release --manifest-path {}`",
            path.display(),
            manifest.display()
        )));
    }
    Ok(path)
}

fn build(profile_dir: &Path, name: &str, manifest: &Path, package: &[&str]) -> Result<()> {
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let (true, Some(target_dir)) = (release, profile_dir.parent()) else {
        return Err(BenchError(format!(
            "{name} is not built next to this (non-release) executable: run this with \
             `cargo run --release -p bench`, or build {name} and set its path"
        )));
    };
    eprintln!("building {name} (release) into {}", target_dir.display());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release"])
        .args(package)
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .context(format!("running cargo build for {name}"))?;
    if !status.success() {
        return Err(BenchError(format!("building {name} failed ({status})")));
    }
    Ok(())
}

/// The shared servers.
#[derive(Debug, Clone)]
pub struct Services {
    /// PostgreSQL URL (`DATABASE_URL` or the default).
    pub database_url: String,
    /// Redis URL (`REDIS_URL` or the default).
    pub redis_url: String,
}

impl Services {
    /// `DATABASE_URL` / `REDIS_URL` or the workspace defaults.
    pub fn from_env() -> Self {
        Services {
            database_url: session_core::testing::database_url(),
            redis_url: session_core::testing::redis_url(),
        }
    }
}

/// What runs left on the shared servers (a schema per SQL run, a key prefix per Redis run),
/// removed by [`Cleanup::run`]. Names come from `unique_name` (lower-case ASCII, digits, `_`).
#[derive(Debug, Default)]
pub struct Cleanup {
    schemas: Vec<String>,
    prefixes: Vec<String>,
}

impl Cleanup {
    /// Drops every schema and deletes every key prefix recorded so far; reports each failure
    /// and keeps going.
    pub async fn run(&mut self, services: &Services) -> Vec<String> {
        let mut problems = Vec::new();
        for schema in std::mem::take(&mut self.schemas) {
            if let Err(e) = drop_schema(&services.database_url, &schema).await {
                problems.push(e.to_string());
            }
        }
        for prefix in std::mem::take(&mut self.prefixes) {
            if let Err(e) = delete_prefix(&services.redis_url, &prefix).await {
                problems.push(e.to_string());
            }
        }
        problems
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b':')
    {
        return Err(BenchError(format!(
            "refusing to clean up odd name {name:?}"
        )));
    }
    Ok(())
}

/// `DROP SCHEMA IF EXISTS "schema" CASCADE` (a schema this harness created), with the cleanup
/// the tests use (`backend_sql::testing::drop_schema`).
pub async fn drop_schema(database_url: &str, schema: &str) -> Result<()> {
    check_name(schema)?;
    backend_sql::testing::drop_schema(database_url, schema)
        .await
        .map_err(|e| BenchError(format!("cleanup: {e}")))
}

/// Deletes every key starting with `prefix` (`SCAN MATCH` + `UNLINK`; never a flush), with the
/// cleanup the tests use (`backend_redis::testing::delete_keys_under`).
pub async fn delete_prefix(redis_url: &str, prefix: &str) -> Result<u64> {
    check_name(prefix)?;
    backend_redis::testing::delete_keys_under(redis_url, prefix)
        .await
        .map_err(|e| BenchError(format!("cleanup: {e}")))
}

fn free_addr() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    l.local_addr().context("finding a free port")
}

/// A started target.
#[derive(Debug)]
pub struct Running {
    /// What runs.
    pub target: Target,
    /// Its base URL.
    pub url: String,
    child: Child,
    log: PathBuf,
}

/// How to start targets.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The executables.
    pub binaries: Binaries,
    /// The shared servers.
    pub services: Services,
    /// CPUs for the server processes (`taskset -c` list), if pinned.
    pub pin: Option<String>,
    /// A command the server is run under (e.g. `valgrind --tool=callgrind`), for profiling.
    pub wrapper: Vec<String>,
    /// Where the servers' logs go.
    pub log_dir: PathBuf,
    /// Extra `DEMO_*` variables for our node (e.g. a soak's idle timeout).
    pub demo_env: Vec<(String, String)>,
}

impl Launcher {
    /// Starts `target` and waits until it answers `/healthz`. Resources it will create on the
    /// shared servers are recorded in `cleanup` first, so a failed start is cleaned up too.
    pub async fn start(&self, target: Target, cleanup: &mut Cleanup) -> Result<Running> {
        let addr = free_addr()?;
        let program = match target {
            Target::Peer(PeerKind::TsPostgres) => &self.binaries.ts_postgres,
            Target::Peer(_) => &self.binaries.bench,
            Target::Ours(_) => &self.binaries.demo,
        };
        // taskset (and valgrind) exec the program: the child's pid is the server's.
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(cpus) = &self.pin {
            argv.extend(["taskset".into(), "-c".into(), cpus.into()]);
        }
        argv.extend(self.wrapper.iter().map(Into::into));
        argv.push(program.into());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd.env_remove("RUST_LOG");
        match target {
            Target::Peer(PeerKind::TsPostgres) => {
                let schema = session_core::testing::unique_name("bench_ts");
                cleanup.schemas.push(schema.clone());
                cmd.arg("--addr")
                    .arg(addr.to_string())
                    .arg("--database-url")
                    .arg(&self.services.database_url)
                    .arg("--pg-schema")
                    .arg(schema);
            }
            Target::Peer(kind) => {
                cmd.arg("peer")
                    .arg("--kind")
                    .arg(kind.as_str())
                    .arg("--addr")
                    .arg(addr.to_string())
                    .arg("--redis-url")
                    .arg(&self.services.redis_url);
            }
            Target::Ours(kind) => {
                cmd.arg("serve");
                let secret = demo_app::cluster::random_secret();
                let mut env: Vec<(String, String)> = vec![
                    ("DEMO_NODE_ID".into(), "1".into()),
                    ("DEMO_APP_ADDR".into(), addr.to_string()),
                    ("DEMO_DEV".into(), "false".into()),
                    ("DEMO_SESSION__SECURE".into(), "false".into()),
                    ("DEMO_LOG".into(), "warn".into()),
                    ("SESSION_SECRET".into(), secret),
                    ("DEMO_BACKEND__KIND".into(), kind.as_str().into()),
                ];
                match kind {
                    BackendKind::Instantcopy => {
                        let cluster = free_addr()?;
                        env.push((
                            "DEMO_BACKEND__INSTANTCOPY__CLUSTER_ADDR".into(),
                            cluster.to_string(),
                        ));
                        env.push((
                            "DEMO_BACKEND__INSTANTCOPY__MEMBERS".into(),
                            format!("[{{id=1, addr=\"{cluster}\"}}]"),
                        ));
                    }
                    BackendKind::Sql => {
                        let schema = session_core::testing::unique_name("bench_ours");
                        cleanup.schemas.push(schema.clone());
                        env.push((
                            "DEMO_BACKEND__SQL__URL".into(),
                            self.services.database_url.clone(),
                        ));
                        env.push(("DEMO_BACKEND__SQL__SCHEMA".into(), schema));
                    }
                    BackendKind::Redis => {
                        let prefix = format!("{}:", session_core::testing::unique_name("bench"));
                        cleanup.prefixes.push(prefix.clone());
                        env.push((
                            "DEMO_BACKEND__REDIS__URL".into(),
                            self.services.redis_url.clone(),
                        ));
                        env.push(("DEMO_BACKEND__REDIS__KEY_PREFIX".into(), prefix));
                    }
                    BackendKind::Cookie => {}
                }
                env.extend(self.demo_env.iter().cloned());
                cmd.envs(env);
            }
        }
        std::fs::create_dir_all(&self.log_dir)
            .context(format!("creating {}", self.log_dir.display()))?;
        let log = self.log_dir.join(format!("{}.log", target.name()));
        let log_file =
            std::fs::File::create(&log).context(format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true);
        let child = cmd.spawn().context(format!("starting {}", target.name()))?;
        let mut running = Running {
            target,
            url: format!("http://{addr}"),
            child,
            log,
        };
        running.wait_ready(Duration::from_secs(60)).await?;
        Ok(running)
    }
}

impl Running {
    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .context("HTTP client")?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ok = client
                .get(format!("{}/healthz", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError(format!(
                    "{} exited during start-up ({status}): {}",
                    self.target.name(),
                    log_tail(&self.log)
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BenchError(format!(
                    "{} did not answer /healthz within {} s: {}",
                    self.target.name(),
                    timeout.as_secs(),
                    log_tail(&self.log)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of the process's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Stops the process gracefully (SIGTERM: the Redis peer deletes its keys, our node
    /// flushes), killing it after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            use nix::sys::signal::{Signal, kill};
            use nix::unistd::Pid;
            // Fails only if it already exited.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(8)..].join("\n");
    if tail.is_empty() {
        format!("(log {} is empty)", path.display())
    } else {
        format!("log {}:\n{tail}", path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_round_trip() {
        for t in Target::all() {
            assert_eq!(Target::parse(&t.name()).unwrap(), t);
        }
        let e = Target::parse("nope").unwrap_err().to_string();
        assert!(
            e.contains("ts-memory") && e.contains("ours-instantcopy"),
            "{e}"
        );
    }

    #[test]
    fn cleanup_refuses_odd_names() {
        assert!(check_name("bench_ts_123_abcdef").is_ok());
        assert!(check_name("bench_1_ab:").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("x\"; DROP TABLE y").is_err());
        assert!(check_name("*").is_err());
    }
}
