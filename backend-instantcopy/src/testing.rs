//! A real multi-node cluster in one process, for tests: every node has its own tokio runtime
//! and its own cluster port on a free loopback port, and talks to the others over real HTTP.
//! [`InProcessCluster::kill`] drops a node's runtime at once (its listener, connections, tasks and
//! memory vanish, as in a crash); [`InProcessCluster::restart`] brings it back on the same port
//! with empty memory.
//!
//! ```
//! use backend_instantcopy::testing::InProcessCluster;
//! use backend_instantcopy::{Ack, Replication};
//! use session_core::{ExpiryPolicy, Session, Commit};
//!
//! # #[tokio::main] async fn main() {
//! let cluster = InProcessCluster::start(3, Replication::Backups(1), Ack::One, ExpiryPolicy::default()).await.unwrap();
//! let s = Session::new(cluster.node(0), None);
//! s.insert("user", "alice").unwrap();
//! let Commit::Issue { token, .. } = s.commit().await.unwrap() else { panic!() };
//! let on_two = Session::new(cluster.node(2), Some(token));
//! assert_eq!(on_two.get::<String>("user").await.unwrap().as_deref(), Some("alice"));
//! # }
//! ```
//!
//! Past 600 lines because the in-process cluster harness (start, kill, restart, partition, add
//! nodes, settle) and the conformance factory share one node launcher; it is test-only code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use session_core::testing::{
    BackendFactory, Capabilities, Harness, OutageFn, RebuildFn, SettleFn, TimeControl,
};
use session_core::{
    Counters, Delta, ExpiryPolicy, KeyRing, Loaded, Saved, SessionBackend, SessionData,
    SessionError,
};

use crate::config::{Ack, Config, Member, NodeId, Replication};
use crate::lifecycle::DrainReport;
use crate::node::InstantCopyNode;

struct Running {
    node: InstantCopyNode,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// One node slot: the running node, or `None` while it is down.
type Slot = Arc<Mutex<Option<Arc<Running>>>>;

/// N instant-copy nodes in this process, each on its own runtime and loopback port.
pub struct InProcessCluster {
    configs: RwLock<Vec<Config>>,
    keys: KeyRing,
    /// Each slot's token key ring (the cluster's ring unless the node was added with another).
    token_keys: RwLock<Vec<KeyRing>>,
    policy: ExpiryPolicy,
    slots: RwLock<Vec<Slot>>,
}

impl std::fmt::Debug for InProcessCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessCluster")
            .field("nodes", &self.len())
            .finish()
    }
}

/// Timings short enough for tests: a dead peer is declared down in about half a second,
/// anti-entropy runs every second.
pub fn test_config(node: u16, members: Vec<Member>, replication: Replication, ack: Ack) -> Config {
    let addr = members
        .iter()
        .find(|m| m.id == NodeId(node))
        .map(|m| m.addr)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    Config {
        node_id: NodeId(node),
        cluster_addr: addr,
        members,
        replication,
        ack,
        connect_timeout: Duration::from_millis(200),
        request_timeout: Duration::from_millis(800),
        ack_timeout: Duration::from_millis(1500),
        heartbeat_interval: Duration::from_millis(150),
        failure_threshold: 3,
        sweep_jitter: Duration::from_millis(20),
        join_timeout: Duration::from_secs(2),
        anti_entropy_interval: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(3),
        seed_refresh_interval: Duration::from_secs(2),
        ..Config::default()
    }
}

/// Binds a TCP listener on a free loopback port whose UDP port is free too (the node binds
/// both).
fn bind_free() -> std::io::Result<std::net::TcpListener> {
    let mut last = None;
    for _ in 0..20 {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        match std::net::UdpSocket::bind(l.local_addr()?) {
            Ok(_) => {
                l.set_nonblocking(true)?;
                return Ok(l);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
}

/// Starts one node on a runtime of its own: `tokens` signs and verifies the clients' tokens,
/// `cluster` seals the peer traffic.
async fn launch(
    config: Config,
    policy: ExpiryPolicy,
    tokens: KeyRing,
    cluster: KeyRing,
    listener: std::net::TcpListener,
) -> Result<Arc<Running>, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(format!("ic-node-{}", config.node_id))
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let started = rt
        .spawn(async move {
            let l = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
            InstantCopyNode::start_with_keys(config, policy, &tokens, &cluster, l)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("start task: {e}"))
        .and_then(|r| r);
    match started {
        Ok(node) => Ok(Arc::new(Running { node, rt: Some(rt) })),
        Err(e) => {
            // A runtime must not be dropped from async code: let it go in the background.
            rt.shutdown_background();
            Err(e)
        }
    }
}

/// How the nodes of a [`InProcessCluster`] find each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// Every node is configured with the full static `members` list (the older form).
    StaticMembers,
    /// Every node is given only the first node's address as its one seed (node 1 too, which
    /// leaves itself out).
    FirstAsSeed,
}

impl InProcessCluster {
    /// Starts `n` nodes (ids 1..=n) and waits until they all see each other.
    pub async fn start(
        n: usize,
        replication: Replication,
        ack: Ack,
        policy: ExpiryPolicy,
    ) -> Result<Arc<Self>, String> {
        Self::start_with(n, n, replication, ack, policy).await
    }

    /// Configures `members` nodes but starts only the first `running` (the rest can join later
    /// with [`restart`](InProcessCluster::restart)).
    pub async fn start_with(
        members: usize,
        running: usize,
        replication: Replication,
        ack: Ack,
        policy: ExpiryPolicy,
    ) -> Result<Arc<Self>, String> {
        Self::start_custom(members, running, Discovery::StaticMembers, policy, |c| {
            c.replication = replication;
            c.ack = ack;
        })
        .await
    }

    /// The general form: `members` node slots, the first `running` started, found through
    /// `discovery`, each configuration adjusted by `tune` (after the test defaults of
    /// [`test_config`]).
    pub async fn start_custom(
        members: usize,
        running: usize,
        discovery: Discovery,
        policy: ExpiryPolicy,
        tune: impl Fn(&mut Config),
    ) -> Result<Arc<Self>, String> {
        Self::start_keyed(
            members,
            running,
            discovery,
            policy,
            KeyRing::generate(),
            tune,
        )
        .await
    }

    /// [`start_custom`](InProcessCluster::start_custom) with a given key ring, for the clients'
    /// tokens and the peer traffic alike.
    pub async fn start_keyed(
        members: usize,
        running: usize,
        discovery: Discovery,
        policy: ExpiryPolicy,
        keys: KeyRing,
        tune: impl Fn(&mut Config),
    ) -> Result<Arc<Self>, String> {
        let listeners: Vec<std::net::TcpListener> = (0..members)
            .map(|_| bind_free())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("bind: {e}"))?;
        let member_list: Vec<Member> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                Ok(Member {
                    id: NodeId(i as u16 + 1),
                    addr: l.local_addr()?,
                })
            })
            .collect::<std::io::Result<_>>()
            .map_err(|e| format!("addr: {e}"))?;
        let configs: Vec<Config> = (1..=members as u16)
            .map(|i| {
                let mut c = match discovery {
                    Discovery::StaticMembers => {
                        test_config(i, member_list.clone(), Replication::All, Ack::Async)
                    }
                    Discovery::FirstAsSeed => {
                        let mut c = test_config(i, Vec::new(), Replication::All, Ack::Async);
                        c.cluster_addr = member_list[i as usize - 1].addr;
                        // Node 1 too: a node leaves its own address out of its seeds, as
                        // every pod of a headless Service does.
                        c.seeds = vec![member_list[0].addr.to_string()];
                        c
                    }
                };
                tune(&mut c);
                c
            })
            .collect();
        let cluster = Arc::new(InProcessCluster {
            token_keys: RwLock::new(vec![keys.clone(); members]),
            keys,
            policy,
            slots: RwLock::new((0..members).map(|_| Arc::new(Mutex::new(None))).collect()),
            configs: RwLock::new(configs),
        });
        // Every listener is bound already, so nodes can start together: a hello to a seed
        // that is still starting waits in its listen queue.
        let starts = listeners
            .into_iter()
            .enumerate()
            .take(running)
            .map(|(i, l)| {
                let config = cluster.config(i);
                let keys = cluster.keys.clone();
                async move {
                    launch(config, policy, keys.clone(), keys, l)
                        .await
                        .map(|r| (i, r))
                }
            });
        for r in futures::future::join_all(starts).await {
            let (i, r) = r?;
            *cluster.slot(i).lock() = Some(r);
        }
        cluster.wait_connected(Duration::from_secs(10)).await;
        Ok(cluster)
    }

    fn slot(&self, i: usize) -> Slot {
        self.slots.read()[i].clone()
    }

    /// The cluster's key ring (tests use it to forge correctly signed tokens and requests).
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The ring node `i` signs and verifies the clients' tokens with (the cluster's ring unless
    /// the node was added by [`add_node_with_token_keys`](Self::add_node_with_token_keys)).
    pub fn token_keys(&self, i: usize) -> KeyRing {
        self.token_keys.read()[i].clone()
    }

    /// Node `i`'s configuration.
    pub fn config(&self, i: usize) -> Config {
        self.configs.read()[i].clone()
    }

    /// Changes node `i`'s configuration for its next (re)start.
    pub fn reconfigure(&self, i: usize, f: impl FnOnce(&mut Config)) {
        f(&mut self.configs.write()[i]);
    }

    /// Number of node slots (running or not).
    pub fn len(&self) -> usize {
        self.configs.read().len()
    }

    /// Always false: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A backend handle for node `i` (0-based); its calls run on the node's runtime and fail
    /// with `Unavailable` while the node is down.
    pub fn node(self: &Arc<Self>, i: usize) -> Arc<dyn SessionBackend> {
        Arc::new(ClusterNode {
            cluster: self.clone(),
            index: i,
        })
    }

    /// The running node `i`, if up.
    pub fn instance(&self, i: usize) -> Option<InstantCopyNode> {
        self.slot(i).lock().as_ref().map(|r| r.node.clone())
    }

    /// Crashes node `i`: its runtime is dropped at once, with no flush and no goodbye.
    pub fn kill(&self, i: usize) {
        self.slot(i).lock().take();
    }

    /// Stops node `i` gracefully: it drains (hands its sessions off, tells the others it
    /// leaves), then its runtime goes.
    pub async fn drain(&self, i: usize) -> Option<DrainReport> {
        let running = self.slot(i).lock().take()?;
        let handle = running.rt.as_ref()?.handle().clone();
        let node = running.node.clone();
        let report = handle.spawn(async move { node.drain().await }).await.ok();
        drop(running);
        report
    }

    /// Starts node `i` from its current config on `listener`, with empty memory.
    async fn relaunch(&self, i: usize, listener: std::net::TcpListener) -> Result<(), String> {
        let r = launch(
            self.config(i),
            self.policy,
            self.token_keys(i),
            self.keys.clone(),
            listener,
        )
        .await?;
        *self.slot(i).lock() = Some(r);
        Ok(())
    }

    /// Starts node `i` again on its old port, with empty memory.
    pub async fn restart(&self, i: usize) -> Result<(), String> {
        let addr = self.config(i).cluster_addr;
        let mut tries = 0;
        let listener = loop {
            let bound = std::net::TcpListener::bind(addr).and_then(|l| {
                // The old runtime's UDP socket must be gone too.
                std::net::UdpSocket::bind(addr)?;
                Ok(l)
            });
            match bound {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    tracing::debug!(error = %e, "port not free yet");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(format!("rebinding {addr}: {e}")),
            }
        };
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        self.relaunch(i, listener).await
    }

    /// Starts node `i` again, with empty memory, on a new port (a pod rescheduled with a new
    /// IP keeps its id but not its address): it finds the cluster through the other nodes'
    /// addresses as seeds.
    pub async fn restart_elsewhere(&self, i: usize) -> Result<(), String> {
        let listener = bind_free().map_err(|e| format!("bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let seeds: Vec<String> = (0..self.len())
            .filter(|&j| j != i)
            .map(|j| self.config(j).cluster_addr.to_string())
            .collect();
        self.reconfigure(i, |c| {
            c.cluster_addr = addr;
            c.advertise_addr = None;
            c.members = Vec::new();
            c.seeds = seeds;
        });
        self.relaunch(i, listener).await
    }

    /// Adds and starts a new node (the next id) whose only seed is node `seed_of`'s address.
    /// Returns its index.
    pub async fn add_node(&self, seed_of: usize) -> Result<usize, String> {
        self.add_node_with_token_keys(seed_of, self.keys.clone())
            .await
    }

    /// [`add_node`](InProcessCluster::add_node) for a node that signs and verifies the clients'
    /// tokens with `tokens` (a rolling deploy of a rotated token secret); its peer traffic
    /// stays on the cluster's ring.
    pub async fn add_node_with_token_keys(
        &self,
        seed_of: usize,
        tokens: KeyRing,
    ) -> Result<usize, String> {
        let listener = bind_free().map_err(|e| format!("bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let seed = self.config(seed_of).cluster_addr;
        let mut c = self.config(seed_of);
        let i = self.len();
        c.node_id = NodeId(i as u16 + 1);
        c.cluster_addr = addr;
        c.members = Vec::new();
        c.seeds = vec![seed.to_string()];
        self.configs.write().push(c.clone());
        self.token_keys.write().push(tokens.clone());
        self.slots.write().push(Arc::new(Mutex::new(None)));
        let r = launch(c, self.policy, tokens, self.keys.clone(), listener).await?;
        *self.slot(i).lock() = Some(r);
        Ok(i)
    }

    /// The running nodes.
    pub fn running(&self) -> Vec<InstantCopyNode> {
        (0..self.len()).filter_map(|i| self.instance(i)).collect()
    }

    /// Waits until every running node sees every other running node as up.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let running = self.running();
            let ids: Vec<NodeId> = running.iter().map(|n| n.node_id()).collect();
            let all = running.iter().all(|n| {
                ids.iter()
                    .all(|id| *id == n.node_id() || n.shared().members.is_up(*id))
            });
            if all {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every running node reports ready.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.running().iter().all(|n| n.readiness().ready) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until no running node has replication in flight.
    pub async fn settle(&self) {
        for _ in 0..500 {
            if self.running().iter().all(|n| n.pending_replication() == 0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Sum of a standard counter over running nodes.
    pub fn total(&self, f: impl Fn(&Counters) -> u64) -> u64 {
        self.running().iter().map(|n| f(&n.counters())).sum()
    }
}

struct ClusterNode {
    cluster: Arc<InProcessCluster>,
    index: usize,
}

impl ClusterNode {
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, SessionError>
    where
        T: Send + 'static,
        F: FnOnce(InstantCopyNode) -> Fut,
        Fut: std::future::Future<Output = Result<T, SessionError>> + Send + 'static,
    {
        let running = self.cluster.slot(self.index).lock().clone();
        let Some(running) = running else {
            return Err(SessionError::Unavailable {
                backend: "instantcopy",
                context: format!("node {} is down", self.index + 1),
                source: None,
            });
        };
        let Some(handle) = running.rt.as_ref().map(|rt| rt.handle().clone()) else {
            return Err(SessionError::backend_msg(
                "instantcopy",
                "node has no runtime",
            ));
        };
        let fut = f(running.node.clone());
        drop(running);
        handle
            .spawn(fut)
            .await
            .map_err(|e| SessionError::Unavailable {
                backend: "instantcopy",
                context: format!("node {} crashed during the call: {e}", self.index + 1),
                source: None,
            })?
    }
}

#[async_trait]
impl SessionBackend for ClusterNode {
    fn scheme(&self) -> &'static str {
        "instantcopy"
    }
    fn policy(&self) -> &ExpiryPolicy {
        &self.cluster.policy
    }
    async fn load(&self, token: &str) -> Result<Option<Loaded>, SessionError> {
        let token = token.to_owned();
        self.run(|n| async move { n.load(&token).await }).await
    }
    async fn create(&self, data: SessionData) -> Result<Saved, SessionError> {
        self.run(|n| async move { n.create(data).await }).await
    }
    async fn save(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        let (l, d) = (loaded.clone(), delta.clone());
        self.run(|n| async move { n.save(&l, &d).await }).await
    }
    async fn cycle_id(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        let (l, d) = (loaded.clone(), delta.clone());
        self.run(|n| async move { n.cycle_id(&l, &d).await }).await
    }
    async fn destroy(&self, loaded: &Loaded) -> Result<(), SessionError> {
        let l = loaded.clone();
        self.run(|n| async move { n.destroy(&l).await }).await
    }
    fn counters(&self) -> Counters {
        self.cluster
            .instance(self.index)
            .map(|n| n.counters())
            .unwrap_or_default()
    }
    fn routing_for_id(&self, id: &session_core::SessionId) -> Vec<u8> {
        self.cluster
            .instance(self.index)
            .map(|n| n.routing_for_id(id))
            .unwrap_or_default()
    }
}

/// Builds instant-copy clusters for the conformance suite.
#[derive(Debug, Clone, Copy)]
pub struct InstantCopyFactory {
    /// Nodes per cluster.
    pub nodes: usize,
    /// Replication mode.
    pub replication: Replication,
    /// Ack level.
    pub ack: Ack,
}

/// Why the expiry checks of instant copy wait in real time.
const REAL_TIME: &str = "every node runs on a runtime of its own and serves requests in its own \
                         tasks, out of reach of the check's session clock, and peers stamp \
                         their messages and judge expiry by their own clocks; a paused runtime \
                         would also auto-advance past in-flight loopback I/O";

#[async_trait]
impl BackendFactory for InstantCopyFactory {
    fn name(&self) -> String {
        format!(
            "instantcopy ({} node{}, replication {}, ack {})",
            self.nodes,
            if self.nodes == 1 { "" } else { "s" },
            self.replication,
            self.ack
        )
    }
    fn capabilities(&self) -> Capabilities {
        let caps = Capabilities::server_side().with_time(TimeControl::Real(REAL_TIME));
        if self.nodes > 1 {
            caps
        } else {
            caps.in_process()
        }
    }
    async fn build(&self, policy: ExpiryPolicy, keys: &KeyRing) -> Result<Harness, String> {
        let cluster = InProcessCluster::start_keyed(
            self.nodes,
            self.nodes,
            Discovery::StaticMembers,
            policy,
            keys.clone(),
            |c| {
                c.replication = self.replication;
                c.ack = self.ack;
            },
        )
        .await?;
        let last = self.nodes - 1;
        let harness = suite_harness(cluster.clone(), (0..self.nodes).collect());
        // The outage: the last node is cut off from every other (both directions, all alive)
        // and holds no copy of its own, so the newest copy is out of its reach.
        let c = cluster;
        let outage: OutageFn = Arc::new(move |down| {
            let c = c.clone();
            Box::pin(async move {
                let Some(cut_off) = c.instance(last) else {
                    return;
                };
                for i in 0..last {
                    let Some(other) = c.instance(i) else { continue };
                    if down {
                        cut_off.faults().cut(other.node_id());
                        other.faults().cut(cut_off.node_id());
                    } else {
                        cut_off.faults().heal(other.node_id());
                        other.faults().heal(cut_off.node_id());
                    }
                }
                if down {
                    // Let requests already past the cut land before the copies go, or one could
                    // bring a copy back.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    cut_off.shared().store.clear();
                }
            })
        });
        Ok(harness.with_outage(outage))
    }
}

/// A harness of the cluster's nodes `indexes`, settling the whole cluster. Its rebuild hook
/// adds as many nodes again, joined to the same cluster, whose token ring is the new one (a
/// rolling deploy of a rotated token secret), and waits until they are up and ready.
fn suite_harness(cluster: Arc<InProcessCluster>, indexes: Vec<usize>) -> Harness {
    let nodes = indexes.iter().map(|&i| cluster.node(i)).collect();
    let c = cluster.clone();
    let settle: SettleFn = Arc::new(move || {
        let c = c.clone();
        Box::pin(async move { c.settle().await })
    });
    let rebuild: RebuildFn = Arc::new(move |keys| {
        let (c, seed, n) = (cluster.clone(), indexes[0], indexes.len());
        Box::pin(async move {
            let mut added = Vec::with_capacity(n);
            for _ in 0..n {
                added.push(c.add_node_with_token_keys(seed, keys.clone()).await?);
            }
            let limit = Duration::from_secs(15);
            if !c.wait_connected(limit).await || !c.wait_ready(limit).await {
                return Err(format!(
                    "the {n} nodes added with the new key ring did not join in {limit:?}"
                ));
            }
            Ok(suite_harness(c, added))
        })
    });
    Harness::of(nodes).with_settle(settle).with_rebuild(rebuild)
}

/// Test helper: one request on `node` that sets `key` to `value` and commits; the token the
/// client must carry next.
pub async fn write(
    node: &Arc<dyn SessionBackend>,
    token: Option<&str>,
    key: &str,
    value: i64,
) -> Result<String, SessionError> {
    let s = session_core::Session::new(node.clone(), token.map(str::to_owned));
    s.insert(key, &value)?;
    match s.commit().await? {
        session_core::Commit::Issue { token, .. } => Ok(token),
        other => Err(SessionError::backend_msg(
            "instantcopy",
            format!("a write issued no token: {other:?}"),
        )),
    }
}

/// Test helper: one request on `node` that reads `key` (and commits, which may re-home the
/// token); the value and the token to carry next.
pub async fn read(
    node: &Arc<dyn SessionBackend>,
    token: &str,
    key: &str,
) -> Result<(Option<i64>, String), SessionError> {
    let s = session_core::Session::new(node.clone(), Some(token.to_owned()));
    let v = s.get(key).await?;
    let t = match s.commit().await? {
        session_core::Commit::Issue { token, .. } => token,
        _ => token.to_owned(),
    };
    Ok((v, t))
}

/// Test helper: the session id and route a token names (verified with the cluster's keys).
pub fn route_of(
    c: &InProcessCluster,
    token: &str,
) -> Option<(session_core::SessionId, crate::routing::Route)> {
    let v = session_core::TokenSigner::new(c.keys())
        .verify(token)
        .ok()?;
    let r = crate::routing::Route::decode(&v.routing, |_| true).ok()?;
    Some((v.id, r))
}

/// Test helper: the indexes of the running nodes that hold a live copy of `id`.
pub fn holders(c: &InProcessCluster, id: &session_core::SessionId) -> Vec<usize> {
    (0..c.len())
        .filter(|i| {
            c.instance(*i)
                .and_then(|n| n.shared().store.read(id, |_| ()))
                .is_some()
        })
        .collect()
}

/// Test helper: polls `f` every 20 ms until it holds; false if `timeout` passes first.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
