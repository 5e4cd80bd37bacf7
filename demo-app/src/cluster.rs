//! A local cluster of real node processes on free loopback ports (`demo-app cluster`, the
//! `compare` mode and the multi-node tests).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use backend_instantcopy::{Ack, Replication};
use tokio::process::{Child, Command};

use crate::config::BackendKind;

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Number of nodes (ids 1..=nodes).
    pub nodes: usize,
    /// The backend every node runs.
    pub backend: BackendKind,
    /// Instant copy: replication.
    pub replication: Replication,
    /// Instant copy: ack level.
    pub ack: Ack,
    /// SQL: database URL (otherwise `DATABASE_URL` or the config file's).
    pub database_url: Option<String>,
    /// SQL: schema to use (isolates a run).
    pub sql_schema: Option<String>,
    /// Redis: server URL (otherwise `REDIS_URL` or the config file's).
    pub redis_url: Option<String>,
    /// Redis: key prefix (isolates a run).
    pub redis_prefix: Option<String>,
    /// A base configuration file for every node.
    pub config_file: Option<PathBuf>,
    /// Session idle timeout override (e.g. short for soak tests).
    pub idle_timeout: Option<Duration>,
    /// Log filter for the nodes.
    pub log: String,
    /// Forward the nodes' logs to this process's stderr (otherwise they are discarded).
    pub show_logs: bool,
    /// More `DEMO_*` settings for every node (timings for tests, say).
    pub extra_env: Vec<(String, String)>,
}

impl ClusterSpec {
    /// `nodes` nodes of `backend` with defaults for everything else (instant copy: all/async).
    pub fn new(nodes: usize, backend: BackendKind) -> Self {
        ClusterSpec {
            nodes,
            backend,
            replication: Replication::All,
            ack: Ack::Async,
            database_url: None,
            sql_schema: None,
            redis_url: None,
            redis_prefix: None,
            config_file: None,
            idle_timeout: None,
            log: "warn".into(),
            show_logs: false,
            extra_env: Vec::new(),
        }
    }
}

/// Why a cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Spawning or port allocation failed.
    #[error("cannot start node {node}: {source}")]
    Spawn {
        /// The node id.
        node: u16,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A node did not answer `/healthz` in time.
    #[error("node {node} did not become ready within {secs} s")]
    NotReady {
        /// The node id.
        node: u16,
        /// How long we waited.
        secs: u64,
    },
    /// A node exited while starting (its log, shown with `show_logs`, says why).
    #[error("node {node} exited while starting ({status}); run with logs to see why")]
    Exited {
        /// The node id.
        node: u16,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// A request-level problem.
    #[error("{0}")]
    Other(String),
}

/// One node process.
#[derive(Debug)]
pub struct NodeProcess {
    /// Node id.
    pub id: u16,
    /// The app's base URL, `http://127.0.0.1:port`.
    pub url: String,
    /// The cluster port (instant copy only).
    pub cluster_addr: Option<SocketAddr>,
    child: Option<Child>,
    env: Vec<(String, String)>,
}

impl NodeProcess {
    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }
}

/// N node processes. Dropping it kills every node it started.
#[derive(Debug)]
pub struct LocalCluster {
    /// The nodes, in id order.
    pub nodes: Vec<NodeProcess>,
    binary: PathBuf,
    config_file: Option<PathBuf>,
    show_logs: bool,
    spec: ClusterSpec,
    secret: String,
    seeds: String,
}

/// `n` distinct free loopback addresses, free for TCP and for UDP (an instant-copy node
/// gossips on its cluster port's number): every socket is held until all are chosen, so the
/// kernel cannot hand one port out twice.
fn free_addrs(n: usize) -> std::io::Result<Vec<SocketAddr>> {
    let mut held = Vec::new();
    while held.len() < n {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = tcp.local_addr()?;
        if let Ok(udp) = std::net::UdpSocket::bind(addr) {
            held.push((tcp, udp));
        }
    }
    held.iter().map(|(t, _)| t.local_addr()).collect()
}

/// How many times [`LocalCluster::start`] tries with fresh ports when a node exits while
/// starting (a port chosen free can be taken by another process before the node binds it).
const START_ATTEMPTS: usize = 3;

/// A fresh random cluster secret (48 random bytes, URL-safe base64).
pub fn random_secret() -> String {
    let mut b = [0u8; 48];
    session_core::fill_random(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl LocalCluster {
    /// Spawns the nodes of `spec` from `binary` (the demo-app executable) and waits until every
    /// node answers `/healthz`.
    ///
    /// Ports are chosen free on loopback just before the nodes start; if a node exits while
    /// starting (another process may have taken its port in between), the whole cluster is
    /// stopped and started again on fresh ports, up to three times. A node that keeps exiting
    /// (a bad config, say) fails with [`ClusterError::Exited`].
    pub async fn start(binary: &Path, spec: &ClusterSpec) -> Result<Self, ClusterError> {
        let mut attempt = 1;
        loop {
            match Self::start_once(binary, spec).await {
                Err(ClusterError::Exited { node, status }) if attempt < START_ATTEMPTS => {
                    tracing::warn!(
                        node,
                        %status,
                        attempt,
                        "a node exited while starting; retrying on fresh ports"
                    );
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_once(binary: &Path, spec: &ClusterSpec) -> Result<Self, ClusterError> {
        let secret = random_secret();
        let spawn_err = |node: u16| move |source| ClusterError::Spawn { node, source };
        let addrs = free_addrs(2 * spec.nodes).map_err(spawn_err(1))?;
        let (apps, clusters) = addrs.split_at(spec.nodes);
        // Every node gets every cluster address as a seed, as a DNS name of a headless
        // Service would give them (each node leaves its own out).
        let seeds: Vec<String> = clusters.iter().map(|a| a.to_string()).collect();
        let seeds = seeds.join(",");
        let mut nodes = Vec::new();
        for i in 0..spec.nodes {
            nodes.push(node_process(
                spec,
                i as u16 + 1,
                apps[i],
                clusters[i],
                &seeds,
                &secret,
            ));
        }
        let mut cluster = LocalCluster {
            nodes,
            binary: binary.to_path_buf(),
            config_file: spec.config_file.clone(),
            show_logs: spec.show_logs,
            spec: spec.clone(),
            secret,
            seeds,
        };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        cluster.wait_ready(Duration::from_secs(60)).await?;
        Ok(cluster)
    }
}

/// The process description of node `id`.
fn node_process(
    spec: &ClusterSpec,
    id: u16,
    app: SocketAddr,
    cluster: SocketAddr,
    seeds: &str,
    secret: &str,
) -> NodeProcess {
    let mut env: Vec<(String, String)> = vec![
        ("DEMO_NODE_ID".into(), id.to_string()),
        ("DEMO_APP_ADDR".into(), app.to_string()),
        ("DEMO_DEV".into(), "false".into()),
        ("DEMO_SESSION__SECURE".into(), "false".into()),
        ("DEMO_LOG".into(), spec.log.clone()),
        ("SESSION_SECRET".into(), secret.to_owned()),
        ("DEMO_BACKEND__KIND".into(), spec.backend.as_str().into()),
    ];
    if let Some(t) = spec.idle_timeout {
        env.push((
            "DEMO_SESSION__IDLE_TIMEOUT".into(),
            format!("{}ms", t.as_millis()),
        ));
    }
    match spec.backend {
        BackendKind::Instantcopy => {
            env.push((
                "DEMO_BACKEND__INSTANTCOPY__CLUSTER_ADDR".into(),
                cluster.to_string(),
            ));
            env.push(("DEMO_BACKEND__INSTANTCOPY__SEEDS".into(), seeds.to_owned()));
            env.push((
                "DEMO_BACKEND__INSTANTCOPY__REPLICATION".into(),
                match spec.replication {
                    Replication::All => "\"all\"".into(),
                    Replication::Backups(k) => k.to_string(),
                },
            ));
            env.push((
                "DEMO_BACKEND__INSTANTCOPY__ACK".into(),
                spec.ack.to_string(),
            ));
        }
        BackendKind::Sql => {
            if let Some(u) = &spec.database_url {
                env.push(("DEMO_BACKEND__SQL__URL".into(), u.clone()));
            }
            if let Some(s) = &spec.sql_schema {
                env.push(("DEMO_BACKEND__SQL__SCHEMA".into(), s.clone()));
            }
        }
        BackendKind::Redis => {
            if let Some(u) = &spec.redis_url {
                env.push(("DEMO_BACKEND__REDIS__URL".into(), u.clone()));
            }
            if let Some(p) = &spec.redis_prefix {
                env.push(("DEMO_BACKEND__REDIS__KEY_PREFIX".into(), p.clone()));
            }
        }
        BackendKind::Cookie => {}
    }
    env.extend(spec.extra_env.iter().cloned());
    NodeProcess {
        id,
        url: format!("http://{app}"),
        cluster_addr: (spec.backend == BackendKind::Instantcopy).then_some(cluster),
        child: None,
        env,
    }
}

impl LocalCluster {
    fn spawn(&mut self, i: usize) -> Result<(), ClusterError> {
        let node = &mut self.nodes[i];
        let mut cmd = Command::new(&self.binary);
        cmd.arg("serve");
        if let Some(f) = &self.config_file {
            cmd.arg("--config").arg(f);
        }
        cmd.envs(node.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if self.show_logs {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| ClusterError::Spawn {
            node: node.id,
            source,
        })?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until every running node answers `/healthz` and sees every other running node as
    /// up (instant copy). Nodes killed on purpose are not waited for.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), ClusterError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .map_err(|e| ClusterError::Other(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let running: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect();
        for node in &mut self.nodes {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            loop {
                let ok = client
                    .get(format!("{}/healthz", node.url))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok && all_peers_up(&client, &node.url, &running).await {
                    break;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(ClusterError::Exited {
                        node: node.id,
                        status,
                    });
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(ClusterError::NotReady {
                        node: node.id,
                        secs: timeout.as_secs(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// The app URLs of the nodes.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    /// Crashes node `i` (0-based) with SIGKILL: no flush, no goodbye.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Starts node `i` again with the same ports and settings (empty memory) and waits for it.
    pub async fn restart(&mut self, i: usize) -> Result<(), ClusterError> {
        self.kill(i).await;
        self.spawn(i)?;
        self.wait_ready(Duration::from_secs(60)).await
    }

    /// Stops node `i` gracefully (SIGTERM: it stops taking requests, an instant-copy node
    /// drains) and waits up to `grace` for it to exit, killing it after that. Returns its exit
    /// status (`None` if it was not running or had to be killed).
    pub async fn terminate(
        &mut self,
        i: usize,
        grace: Duration,
    ) -> Option<std::process::ExitStatus> {
        let mut child = self.nodes[i].child.take()?;
        if let Some(pid) = child.id() {
            terminate(pid);
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                None
            }
        }
    }

    /// The session secret every node was started with (hex).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Sets (or, with `None`, removes) an environment variable of node `i` for its next start
    /// ([`start_node`](Self::start_node), [`restart`](Self::restart)): a rolling change of
    /// configuration or secrets.
    pub fn set_env(&mut self, i: usize, key: &str, value: Option<&str>) {
        let env = &mut self.nodes[i].env;
        env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            env.push((key.to_owned(), v.to_owned()));
        }
    }

    /// Starts node `i` (again) with its ports and settings, without waiting for it.
    pub fn start_node(&mut self, i: usize) -> Result<(), ClusterError> {
        if self.nodes[i].child.is_some() {
            return Ok(());
        }
        self.spawn(i)
    }

    /// Waits until node `i` answers `GET /readyz` with 200 (instant copy: its initial sync is
    /// done), or `timeout` passes. Returns the last `/readyz` body.
    pub async fn wait_node_ready(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> Result<serde_json::Value, ClusterError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .map_err(|e| ClusterError::Other(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let node = &mut self.nodes[i];
        loop {
            if let Ok(res) = client.get(format!("{}/readyz", node.url)).send().await {
                let ok = res.status().is_success();
                let body: serde_json::Value = res.json().await.unwrap_or_default();
                if ok {
                    return Ok(body);
                }
            }
            if let Some(child) = node.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(ClusterError::Exited {
                    node: node.id,
                    status,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::NotReady {
                    node: node.id,
                    secs: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Adds a node (the next id) on fresh ports whose seeds are the current members' cluster
    /// addresses, starts it and waits until it answers. Returns its index.
    pub async fn add_node(&mut self) -> Result<usize, ClusterError> {
        let id = self.nodes.len() as u16 + 1;
        let addrs = free_addrs(2).map_err(|source| ClusterError::Spawn { node: id, source })?;
        let node = node_process(
            &self.spec,
            id,
            addrs[0],
            addrs[1],
            &self.seeds,
            &self.secret,
        );
        self.nodes.push(node);
        let i = self.nodes.len() - 1;
        self.spawn(i)?;
        self.wait_node_ready(i, Duration::from_secs(60)).await?;
        Ok(i)
    }

    /// Stops every node gracefully (SIGTERM, so instant-copy nodes flush their pushes), killing
    /// any that has not exited after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        for node in &mut self.nodes {
            if let Some(pid) = node.pid() {
                terminate(pid);
            }
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
            }
        }
    }
}

/// True when the node's status lists no peer that is down (instant-copy nodes probe their
/// peers; a node that just started into a starting cluster needs a heartbeat to see them).
async fn all_peers_up(client: &reqwest::Client, url: &str, running: &[u16]) -> bool {
    let Ok(res) = client.get(format!("{url}/status.json")).send().await else {
        return false;
    };
    if res.status() == reqwest::StatusCode::NOT_FOUND {
        // The operator routes are on an admin address or off: nothing to check here.
        return true;
    }
    let Ok(status) = res.json::<serde_json::Value>().await else {
        return false;
    };
    status["peers"].as_array().is_some_and(|peers| {
        peers.iter().all(|p| {
            p["up"].as_bool() == Some(true)
                || !p["id"]
                    .as_u64()
                    .is_some_and(|id| running.contains(&(id as u16)))
        })
    })
}

/// Sends SIGTERM to a process this cluster started (it then flushes and exits).
fn terminate(pid: u32) {
    #[cfg(unix)]
    {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        if let Ok(pid) = i32::try_from(pid) {
            // Fails only if the process already exited.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    #[cfg(not(unix))]
    let _ = pid;
}
