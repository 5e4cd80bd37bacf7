//! Test support (feature `testing`): the conformance-suite factory, throwaway Redis servers and
//! Redis Clusters started on loopback ports, and key-prefix cleanup for shared servers.
//!
//! ```no_run
//! use std::sync::Arc;
//! use backend_redis::testing::{RedisCluster, RedisFactory};
//! # #[tokio::main] async fn main() -> Result<(), String> {
//! // Against the shared server (REDIS_URL), under a unique key prefix deleted afterwards:
//! session_core::testing::run(Arc::new(RedisFactory::single(session_core::testing::redis_url())))
//!     .await
//!     .assert_passed();
//! // Against a fresh 3-master Redis Cluster on loopback ports, stopped afterwards:
//! let cluster = RedisCluster::start(3)?;
//! session_core::testing::run(Arc::new(RedisFactory::owning_cluster(cluster)))
//!     .await
//!     .assert_passed();
//! # Ok(()) }
//! ```
//!
//! Past 600 lines because it starts and stops a throwaway Redis Cluster for the tests (config
//! files, slots, readiness) beside the factory and the key-prefix cleanup.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::IntoConnectionInfo;
use session_core::testing::{
    BackendFactory, Capabilities, Harness, RebuildFn, TimeControl, unique_name,
};
use session_core::{ExpiryPolicy, KeyRing, SessionBackend, SessionError};

use crate::{RedisBackend, RedisConfig, Topology, redact_url};

/// The environment variable naming an existing Redis Cluster to test against
/// (comma-separated `redis://host:port` seeds) instead of starting one.
pub const CLUSTER_NODES_ENV: &str = "REDIS_CLUSTER_NODES";

/// The seeds in [`CLUSTER_NODES_ENV`], if set and not empty.
pub fn cluster_nodes_from_env() -> Option<Vec<String>> {
    let v = std::env::var(CLUSTER_NODES_ENV).ok()?;
    let nodes: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    (!nodes.is_empty()).then_some(nodes)
}

/// Builds Redis backends for the conformance suite, all under one unique key prefix that
/// [`teardown`](BackendFactory::teardown) deletes.
///
/// Each harness has two backends with separate connections on the same store, like two app
/// nodes behind a load balancer, signing with the key ring the suite gives; its rebuild hook
/// connects two more to the same prefix with another ring. The expiry checks wait in real
/// time: deadlines are stamped and compared by the Redis server's clock.
///
/// [`backend`](RedisFactory::backend) gives more backends on the same prefix with the
/// factory's own [`keys`](RedisFactory::keys), for tests outside the suite.
pub struct RedisFactory {
    config: RedisConfig,
    keys: KeyRing,
    label: String,
    owned: Mutex<Option<RedisCluster>>,
}

impl std::fmt::Debug for RedisFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFactory")
            .field("label", &self.label)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisFactory {
    fn with_config(config: RedisConfig, label: String, owned: Option<RedisCluster>) -> Self {
        let prefix = format!("{}:", unique_name("sstest"));
        RedisFactory {
            config: config.with_key_prefix(prefix),
            keys: KeyRing::generate(),
            label,
            owned: Mutex::new(owned),
        }
    }

    /// Backends on the single server at `url`.
    pub fn single(url: impl Into<String>) -> Self {
        let url = url.into();
        let label = format!("redis (single server {})", redact_url(&url));
        Self::with_config(RedisConfig::single(url), label, None)
    }

    /// Backends on an existing Redis Cluster, by its seed nodes.
    pub fn cluster<S: Into<String>>(nodes: impl IntoIterator<Item = S>) -> Self {
        let config = RedisConfig::cluster(nodes);
        let label = format!("redis cluster ({} seeds)", config.cluster_nodes.len());
        Self::with_config(config, label, None)
    }

    /// Backends on a cluster this factory owns and stops at teardown.
    pub fn owning_cluster(cluster: RedisCluster) -> Self {
        let config = RedisConfig::cluster(cluster.urls());
        let label = format!(
            "redis cluster ({} local masters)",
            config.cluster_nodes.len()
        );
        Self::with_config(config, label, Some(cluster))
    }

    /// The cluster named by [`CLUSTER_NODES_ENV`], or else a fresh 3-master cluster started
    /// here (which needs `redis-server` and `redis-cli` on the `PATH`).
    pub fn cluster_from_env_or_start() -> Result<Self, String> {
        match cluster_nodes_from_env() {
            Some(nodes) => Ok(Self::cluster(nodes)),
            None => Ok(Self::owning_cluster(RedisCluster::start(3)?)),
        }
    }

    /// The configuration every backend of this factory uses (unique key prefix included).
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// The key ring [`backend`](RedisFactory::backend) signs with (the suite's builds use the
    /// ring the suite gives them).
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// One more backend on the same store, prefix and keys.
    pub async fn backend(&self, policy: ExpiryPolicy) -> Result<RedisBackend, SessionError> {
        RedisBackend::connect(self.config.clone(), policy, &self.keys).await
    }
}

#[async_trait]
impl BackendFactory for RedisFactory {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn capabilities(&self) -> Capabilities {
        let caps = Capabilities::server_side().with_time(TimeControl::Real(REAL_TIME));
        if self.config.url.is_some() {
            caps
        } else {
            caps.without_outage(
                "a Redis Cluster client learns every master's address from the cluster itself, \
                 so no proxy can stand in between; the single-server run covers the outage path",
            )
        }
    }

    async fn build(&self, policy: ExpiryPolicy, keys: &KeyRing) -> Result<Harness, String> {
        let Some(url) = &self.config.url else {
            return direct_harness(self.config.clone(), policy, keys.clone()).await;
        };
        let mut nodes: Vec<Arc<dyn SessionBackend>> =
            vec![Arc::new(connect(self.config.clone(), policy, keys).await?)];
        // The second node reaches Redis through a proxy the outage check can take down.
        let target = session_core::testing::url_addr(url, 6379)
            .ok_or_else(|| "cannot resolve the Redis address from its URL".to_string())?;
        let proxy = Arc::new(
            session_core::testing::TcpProxy::start(target)
                .await
                .map_err(|e| format!("starting the outage proxy: {e}"))?,
        );
        let mut proxied = self.config.clone();
        proxied.url = Some(session_core::testing::with_host_port(
            url,
            "127.0.0.1",
            proxy.addr.port(),
        ));
        proxied.response_timeout = std::time::Duration::from_millis(500);
        proxied.connection_timeout = std::time::Duration::from_millis(500);
        nodes.push(Arc::new(connect(proxied, policy, keys).await?));
        Ok(Harness::of(nodes)
            .with_rebuild(rebuild_hook(self.config.clone(), policy))
            .with_outage(proxy.outage()))
    }

    async fn teardown(&self) {
        match delete_prefix(&self.config).await {
            Ok(n) => tracing::debug!(deleted = n, "deleted the test key prefix"),
            Err(e) => eprintln!("warning: could not delete test keys: {e}"),
        }
        let owned = self
            .owned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(owned);
    }
}

/// Why the expiry checks of the Redis backend wait in real time.
const REAL_TIME: &str = "the scripts stamp and compare deadlines with the Redis server's clock \
                         (TIME) and keys expire by the server's PEXPIREAT, neither of which \
                         follows the session clock; the client does real network I/O";

async fn connect(
    config: RedisConfig,
    policy: ExpiryPolicy,
    keys: &KeyRing,
) -> Result<RedisBackend, String> {
    RedisBackend::connect(config, policy, keys)
        .await
        .map_err(|e| format!("connecting: {e} ({:?})", std::error::Error::source(&e)))
}

/// Two backends connected straight to `config`'s store with `keys`, rebuildable with another
/// ring on the same prefix.
async fn direct_harness(
    config: RedisConfig,
    policy: ExpiryPolicy,
    keys: KeyRing,
) -> Result<Harness, String> {
    let mut nodes: Vec<Arc<dyn SessionBackend>> = Vec::with_capacity(2);
    for _ in 0..2 {
        nodes.push(Arc::new(connect(config.clone(), policy, &keys).await?));
    }
    Ok(Harness::of(nodes).with_rebuild(rebuild_hook(config, policy)))
}

fn rebuild_hook(config: RedisConfig, policy: ExpiryPolicy) -> RebuildFn {
    Arc::new(move |keys| Box::pin(direct_harness(config.clone(), policy, keys)))
}

/// A glob pattern matching exactly the keys that start with `prefix` (glob characters in the
/// prefix escaped, so `a*` matches keys starting with `a*`, not every key starting with `a`).
pub fn prefix_pattern(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('*');
    p
}

/// Deletes every key under the configuration's key prefix (`SCAN MATCH` + `UNLINK` on the
/// server, or on every master of a cluster). Never flushes anything. Returns how many keys
/// were deleted.
pub async fn delete_prefix(config: &RedisConfig) -> Result<u64, String> {
    let topology = config.validate().map_err(|e| e.to_string())?;
    let pattern = prefix_pattern(&config.key_prefix);
    let urls = match topology {
        Topology::Single(url) => vec![url],
        Topology::Cluster(seeds) => cluster_masters(&seeds).await?,
    };
    let mut deleted = 0;
    for url in urls {
        deleted += scan_under(&url, &pattern, true).await?;
    }
    Ok(deleted)
}

/// Deletes every key under `prefix` on the single Redis server at `url` (`SCAN MATCH` +
/// `UNLINK`; never a flush): the one cleanup every test, benchmark and comparison run uses for
/// the prefix it wrote under. Returns how many keys were deleted. Errors never show the URL's
/// password.
pub async fn delete_keys_under(url: &str, prefix: &str) -> Result<u64, String> {
    scan_under(url, &prefix_pattern(prefix), true).await
}

/// Counts the keys under `prefix` on the Redis server at `url` (to check a cleanup).
pub async fn count_keys_under(url: &str, prefix: &str) -> Result<u64, String> {
    scan_under(url, &prefix_pattern(prefix), false).await
}

/// Keys matching `pattern` on one server, counted, or with `delete` unlinked (one key per
/// `UNLINK`: a cluster node refuses multi-key commands across slots).
async fn scan_under(url: &str, pattern: &str, delete: bool) -> Result<u64, String> {
    let client =
        redis::Client::open(url).map_err(|e| format!("Redis URL {}: {e}", redact_url(url)))?;
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("connecting to {}: {e}", redact_url(url)))?;
    let mut cursor: u64 = 0;
    let mut count = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(&mut con)
            .await
            .map_err(|e| format!("SCAN: {e}"))?;
        if delete && !keys.is_empty() {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("UNLINK").arg(k);
            }
            let n: Vec<u64> = pipe
                .query_async(&mut con)
                .await
                .map_err(|e| format!("UNLINK: {e}"))?;
            count += n.iter().sum::<u64>();
        } else if !delete {
            count += keys.len() as u64;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(count);
        }
    }
}

/// The URLs of a cluster's masters, from `CLUSTER NODES` on the first reachable seed (the
/// seed's credentials are kept).
async fn cluster_masters(seeds: &[String]) -> Result<Vec<String>, String> {
    let mut last = String::from("no seed nodes");
    for seed in seeds {
        let text: String = match async {
            let client = redis::Client::open(seed.as_str())?;
            let mut con = client.get_multiplexed_async_connection().await?;
            redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async::<String>(&mut con)
                .await
        }
        .await
        {
            Ok(t) => t,
            Err(e) => {
                last = format!("{}: {e}", redact_url(seed));
                continue;
            }
        };
        let base = seed
            .as_str()
            .into_connection_info()
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for line in text.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(addr), Some(flags)) = (cols.get(1), cols.get(2)) else {
                continue;
            };
            if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
                continue;
            }
            let hostport = addr.split(['@', ',']).next().unwrap_or_default();
            let Some((host, port)) = hostport.rsplit_once(':') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let redis = base.redis_settings();
            let auth = match (redis.username(), redis.password()) {
                (Some(u), Some(p)) => format!("{u}:{p}@"),
                (None, Some(p)) => format!(":{p}@"),
                _ => String::new(),
            };
            out.push(format!("redis://{auth}{host}:{port}"));
        }
        return Ok(out);
    }
    Err(format!("no cluster seed answered CLUSTER NODES ({last})"))
}

// ---------------------------------------------------------------------------------------------
// throwaway servers

fn check_installed() -> Result<(), String> {
    for tool in ["redis-server", "redis-cli"] {
        let ok = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Err(format!(
                "`{tool}` is not installed or not on the PATH: the Redis backend's tests start their \
                 own Redis servers and a 3-master Redis Cluster with it (Debian/Ubuntu: \
                 `apt-get install redis-server`, which ships redis-server and redis-cli), or set \
                 {CLUSTER_NODES_ENV} to an existing cluster's nodes"
            ));
        }
    }
    Ok(())
}

/// A loopback port that is free now, below 55535, whose cluster bus port (+10000) is free too.
fn free_port() -> Result<u16, String> {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding a port: {e}"))?;
        let port = l.local_addr().map_err(|e| e.to_string())?.port();
        if port >= 55535 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return Ok(port);
        }
    }
    Err("found no free loopback port pair".into())
}

fn ping(port: u16) -> Result<(), String> {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}")).map_err(|e| e.to_string())?;
    let mut con = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .map_err(|e| e.to_string())?;
    let pong: String = redis::cmd("PING")
        .query(&mut con)
        .map_err(|e| e.to_string())?;
    (pong == "PONG")
        .then_some(())
        .ok_or_else(|| format!("PING answered {pong:?}"))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// One `redis-server` child process we own (not daemonized), on a loopback port.
struct Node {
    port: u16,
    child: Option<Child>,
    cluster: bool,
    dir: PathBuf,
}

impl Node {
    fn spawn(dir: &Path, port: u16, cluster: bool) -> Result<Child, String> {
        let p = port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &p,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--daemonize", "no", "--loglevel", "notice"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join(format!("redis-{port}.log")));
        if cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"])
                .arg("--cluster-config-file")
                .arg(dir.join(format!("nodes-{port}.conf")));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting redis-server on port {port}: {e}"))
    }

    /// Starts a server on `port`, waiting until it answers PING.
    fn start_on(dir: &Path, port: u16, cluster: bool) -> Result<Node, String> {
        let mut node = Node {
            port,
            child: Some(Self::spawn(dir, port, cluster)?),
            cluster,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if ping(port).is_ok() {
                return Ok(node);
            }
            let exited = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                node.child = None;
                return Err(format!(
                    "redis-server on port {port} exited ({status}); log:\n{}",
                    log_tail(&dir.join(format!("redis-{port}.log")))
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server on port {port} did not answer PING in 15 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Starts a server on a free port (trying other ports if one was taken meanwhile).
    fn start(dir: &Path, cluster: bool) -> Result<Node, String> {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::start_on(dir, free_port()?, cluster) {
                Ok(n) => return Ok(n),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self) -> Result<(), String> {
        self.kill();
        let mut fresh = Self::start_on(&self.dir, self.port, self.cluster)?;
        self.child = fresh.child.take();
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn temp_dir(kind: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(unique_name(kind));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

/// A throwaway single `redis-server` (no persistence) on a free loopback port, owned by the
/// test: it can be killed and restarted, and is stopped when dropped.
pub struct RedisServer {
    node: Node,
    dir: PathBuf,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.node.port)
            .finish()
    }
}

impl RedisServer {
    /// Starts the server and waits until it answers. Blocks the calling thread (up to ~15 s).
    pub fn start() -> Result<Self, String> {
        check_installed()?;
        let dir = temp_dir("redis-server")?;
        let node = Node::start(&dir, false)?;
        Ok(RedisServer { node, dir })
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.node.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.node.port
    }

    /// Kills the server (SIGKILL) and reaps it; its data is gone.
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// Starts the server again on the same port (empty, no scripts cached).
    pub fn restart(&mut self) -> Result<(), String> {
        self.node.restart()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.node.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A throwaway Redis Cluster of `n` masters (no replicas, no persistence) on free loopback
/// ports: `redis-server --cluster-enabled yes` children owned by the test, joined with
/// `redis-cli --cluster create`, ready once every node reports `cluster_state:ok`. Dropping it
/// kills and reaps every node and removes its directory.
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("ports", &self.ports())
            .finish()
    }
}

impl RedisCluster {
    /// Starts and joins the cluster. Blocks the calling thread (a few seconds). Fails with a
    /// clear message if `redis-server`/`redis-cli` are missing.
    pub fn start(masters: usize) -> Result<Self, String> {
        if masters < 3 {
            return Err("Redis Cluster needs at least 3 masters".into());
        }
        check_installed()?;
        let dir = temp_dir("redis-cluster")?;
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            dir,
        };
        for _ in 0..masters {
            let node = Node::start(&cluster.dir, true)?;
            cluster.nodes.push(node);
        }
        let addrs: Vec<String> = cluster
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running redis-cli --cluster create: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        cluster.wait_ok(Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn wait_ok(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        for port in self.ports() {
            loop {
                let state = (|| -> Result<String, String> {
                    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                        .map_err(|e| e.to_string())?;
                    let mut con = client
                        .get_connection_with_timeout(Duration::from_millis(500))
                        .map_err(|e| e.to_string())?;
                    redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query::<String>(&mut con)
                        .map_err(|e| e.to_string())
                })();
                match state {
                    Ok(info) if info.contains("cluster_state:ok") => break,
                    other if Instant::now() > deadline => {
                        return Err(format!(
                            "node 127.0.0.1:{port} did not reach cluster_state:ok in {limit:?}: {other:?}"
                        ));
                    }
                    _ => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        Ok(())
    }

    /// Kills node `i` (SIGKILL): the slots it serves become unreachable.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(n) = self.nodes.get_mut(i) {
            n.kill();
        }
    }

    /// Restarts node `i` on its port; it rejoins with the same node id and slots (from its
    /// cluster config file) but empty. Waits until the cluster reports `cluster_state:ok`.
    pub fn restart_node(&mut self, i: usize) -> Result<(), String> {
        self.nodes
            .get_mut(i)
            .ok_or_else(|| format!("no node {i}"))?
            .restart()?;
        self.wait_ok(Duration::from_secs(30))
    }

    /// The nodes' ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// `redis://127.0.0.1:<port>` for every node.
    pub fn urls(&self) -> Vec<String> {
        self.ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_patterns_escape_globs() {
        assert_eq!(prefix_pattern("s:"), "s:*");
        assert_eq!(prefix_pattern("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }

    #[test]
    fn free_ports_leave_room_for_the_bus() {
        let p = free_port().unwrap();
        assert!(p < 55535);
    }
}
