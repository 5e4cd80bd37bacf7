//! One cluster node: the handle the app holds ([`InstantCopyNode`]), the state every part of
//! the node shares ([`Shared`]), and starting and stopping it.
//!
//! Owns composition only: which task runs (cluster port, gossip, pushers, sweeper, membership
//! events, sync loop, seed refresh), in what order they start, and how they stop (explicitly
//! with [`shutdown`](session_core::SessionBackend::shutdown) or [`drain`](InstantCopyNode::drain),
//! or when the last handle is dropped). The read and write paths are in `backend`, the rules
//! in `placement`, the protocols in `membership`, `gossip`, `replication` and `antientropy`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use session_core::{CoreCounters, ExpiryPolicy, KeyRing, SessionId, TokenSigner, now_millis};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::antientropy::{Snapshots, SyncCounters};
use crate::client::PeerClient;
use crate::clock::Clock;
use crate::config::{Config, ConfigError, NodeId, Replication};
use crate::faults::Faults;
use crate::gossip::{Gossip, GossipCmd, GossipCounters};
use crate::lifecycle::{DrainReport, Lifecycle, Readiness};
use crate::membership::{Identity, Membership, PeerEvent, PeerStatus};
use crate::metrics::NodeMetrics;
use crate::replication::Replicator;
use crate::state::WireState;
use crate::store::Store;
use crate::wire::PeerSeal;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The cluster port (TCP or UDP) could not be bound.
    #[error("cannot listen on the cluster address {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `advertise_addr` does not resolve.
    #[error("cannot resolve advertise_addr {addr:?}: {problem}")]
    Advertise {
        /// The configured value.
        addr: String,
        /// What went wrong.
        problem: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the peer client: {0}")]
    Client(#[from] reqwest::Error),
    /// Another live node already uses this node id.
    #[error(
        "node id {id} is already used by a live member ({holder:?}); every node needs its own \
         node_id"
    )]
    DuplicateNodeId {
        /// The contested id.
        id: NodeId,
        /// The live member that holds it.
        holder: Identity,
    },
}

/// State shared by the backend, the cluster port and the background tasks.
pub struct Shared {
    /// The node's configuration.
    pub config: Config,
    /// The expiry policy.
    pub policy: ExpiryPolicy,
    pub(crate) signer: TokenSigner,
    pub(crate) seal: Arc<PeerSeal>,
    /// Nonces of peer requests accepted inside the replay window.
    pub(crate) replays: crate::replay::ReplayCache,
    /// Rate limit of the "refused peer request" log line.
    pub(crate) refusals: crate::server::RefusalLog,
    /// Rate limit of the "at the session cap" log line.
    pub(crate) cap_log: crate::server::RefusalLog,
    /// Copies of sessions held elsewhere (`replication = k`, `near_cache_capacity` > 0).
    pub(crate) near: Option<crate::near::NearCache>,
    pub(crate) clock: Clock,
    /// The node's memory.
    pub store: Arc<Store>,
    /// The member table.
    pub members: Arc<Membership>,
    pub(crate) client: Arc<PeerClient>,
    pub(crate) replicator: Arc<Replicator>,
    pub(crate) gossip: mpsc::UnboundedSender<GossipCmd>,
    pub(crate) faults: Arc<Faults>,
    pub(crate) snapshots: Snapshots,
    pub(crate) lifecycle: Lifecycle,
    /// When this process's node started (ms); its generation, by which peers detect restarts.
    pub started_at: u64,
    pub(crate) counters: CoreCounters,
    /// Node-level counters.
    pub metrics: NodeMetrics,
    /// Gossip traffic counters.
    pub gossip_counters: Arc<GossipCounters>,
    /// Anti-entropy counters.
    pub sync_counters: SyncCounters,
    pub(crate) repair_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.config.node_id)
            .field("sessions", &self.store.len())
            .finish()
    }
}

impl Shared {
    /// Drops the near-cache copy of `id`, if any.
    pub(crate) fn forget_near(&self, id: &SessionId) {
        if let Some(n) = &self.near {
            n.forget(id);
        }
    }

    /// Session updates never sent because their encoding alone exceeds `max_body_bytes`
    /// (`oversized_updates_total`; read by white-box tests, exported through the counters).
    #[cfg(feature = "testing")]
    pub fn oversized_updates(&self) -> u64 {
        self.replicator.oversized.get()
    }

    /// Updates re-sent whole because the receiver lacked the session (`full_resends_total`;
    /// read by white-box tests).
    #[cfg(feature = "testing")]
    pub fn full_resends(&self) -> u64 {
        self.replicator.full_resends.get()
    }

    /// Advances the clock past a peer's stamps (counting implausibly future ones).
    pub(crate) fn observe(&self, w: &WireState) {
        let max = w
            .entries
            .iter()
            .map(|e| e.stamp)
            .chain([w.touched])
            .chain(w.placement.as_ref().map(|p| p.stamp))
            .max();
        if let Some(s) = max
            && !self.clock.observe(s)
        {
            self.metrics.skewed_stamps.inc();
        }
    }
}

/// Stops the node's tasks when the last handle goes away.
struct Tasks {
    cancel: CancellationToken,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// An instant-copy cluster node: sessions in this process's memory, fetched from their holders
/// on a miss, pushed to replicas on a write, kept converged by anti-entropy. See the crate docs
/// for the protocol.
///
/// Cloning is cheap: clones are handles to the same node. The node's background tasks stop
/// when [`shutdown`](session_core::SessionBackend::shutdown) or [`drain`](InstantCopyNode::drain)
/// is called, or when the last handle is dropped.
#[derive(Clone)]
pub struct InstantCopyNode {
    pub(crate) shared: Arc<Shared>,
    tasks: Arc<Tasks>,
    cluster_addr: SocketAddr,
}

impl std::fmt::Debug for InstantCopyNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstantCopyNode")
            .field("node", &self.shared.config.node_id)
            .field("cluster_addr", &self.cluster_addr)
            .finish()
    }
}

/// Resolves `advertise_addr` (or falls back to the bound address).
async fn advertise(config: &Config, bound: SocketAddr) -> Result<SocketAddr, StartError> {
    let Some(a) = &config.advertise_addr else {
        return Ok(bound);
    };
    let fail = |problem: String| StartError::Advertise {
        addr: a.clone(),
        problem,
    };
    let mut addrs = tokio::net::lookup_host(a.as_str())
        .await
        .map_err(|e| fail(e.to_string()))?;
    addrs.next().ok_or_else(|| fail("no address".into()))
}

impl InstantCopyNode {
    /// Validates the configuration, binds the cluster port (TCP and UDP) and starts the node.
    pub async fn start(
        config: Config,
        policy: ExpiryPolicy,
        keys: &KeyRing,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(config.cluster_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.cluster_addr,
                source,
            })?;
        Self::start_with_listener(config, policy, keys, listener).await
    }

    /// Starts the node on an already bound TCP cluster listener (tests bind port 0 first); the
    /// UDP gossip socket is bound on the same address and port.
    ///
    /// Returns once the seeds were asked who the cluster is (at most about one
    /// `request_timeout`), refusing to start if a live member already uses this node id. The
    /// node serves at once; it joins, syncs its share of the sessions and becomes
    /// [ready](InstantCopyNode::readiness) in the background.
    pub async fn start_with_listener(
        config: Config,
        policy: ExpiryPolicy,
        keys: &KeyRing,
        listener: tokio::net::TcpListener,
    ) -> Result<Self, StartError> {
        Self::start_with_keys(config, policy, keys, keys, listener).await
    }

    /// [`start_with_listener`](Self::start_with_listener) with separate key rings: `tokens`
    /// signs and verifies the clients' tokens, `cluster` seals and opens peer traffic and
    /// gossip, so the two secrets can be set and rotated on their own.
    pub async fn start_with_keys(
        mut config: Config,
        policy: ExpiryPolicy,
        tokens: &KeyRing,
        cluster: &KeyRing,
        listener: tokio::net::TcpListener,
    ) -> Result<Self, StartError> {
        let keys = cluster;
        config.validate()?;
        let bound = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.cluster_addr,
            source,
        })?;
        config.cluster_addr = bound;
        let socket =
            tokio::net::UdpSocket::bind(bound)
                .await
                .map_err(|source| StartError::Bind {
                    addr: bound,
                    source,
                })?;
        let advertised = advertise(&config, bound).await?;
        let started_at = now_millis().max(1);
        let identity = Identity {
            id: config.node_id,
            addr: advertised,
            generation: started_at,
            bump: 0,
        };
        let seal = Arc::new(PeerSeal::new(keys));
        let faults = Arc::new(Faults::default());
        let client = Arc::new(PeerClient::new(&config, seal.clone(), faults.clone())?);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let members = Arc::new(Membership::new(
            identity.clone(),
            config.queue_capacity,
            events_tx,
        ));
        let store = Arc::new(Store::new());
        let (gossip_tx, gossip_rx) = mpsc::unbounded_channel();
        let resync = Arc::new(tokio::sync::Notify::new());
        let replicator = Arc::new(Replicator::new(
            client.clone(),
            members.clone(),
            store.clone(),
            gossip_tx.clone(),
            faults.clone(),
            &config,
            resync.clone(),
        ));
        let gossip_counters = Arc::new(GossipCounters::default());
        let shared = Arc::new(Shared {
            clock: Clock::new(config.node_id, config.replay_window),
            signer: TokenSigner::new(tokens),
            seal: seal.clone(),
            replays: crate::replay::ReplayCache::new(config.replay_window),
            refusals: crate::server::RefusalLog::default(),
            cap_log: crate::server::RefusalLog::default(),
            near: match config.replication {
                Replication::All => None,
                Replication::Backups(_) => {
                    crate::near::NearCache::new(config.near_cache_capacity, config.near_cache_ttl)
                }
            },
            store: store.clone(),
            members: members.clone(),
            client,
            replicator,
            gossip: gossip_tx,
            faults: faults.clone(),
            snapshots: Snapshots::default(),
            lifecycle: Lifecycle::new(resync),
            started_at,
            counters: CoreCounters::default(),
            metrics: NodeMetrics::default(),
            gossip_counters: gossip_counters.clone(),
            sync_counters: SyncCounters::default(),
            repair_lock: tokio::sync::Mutex::new(()),
            policy,
            config,
        });
        let cancel = CancellationToken::new();
        let mut handles = Vec::new();

        let app = crate::server::router(shared.clone());
        let shared_limits = shared.config.cluster_limits();
        let stop = cancel.clone();
        handles.push(tokio::spawn(async move {
            let limits = shared_limits;
            let serve = session_core::serve::serve(listener, app, limits, stop.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "cluster port stopped");
            }
        }));
        let gossip = Gossip {
            socket: Arc::new(socket),
            seal,
            members: members.clone(),
            counters: gossip_counters,
            faults,
            replay_window: shared.config.replay_window,
        };
        handles.push(tokio::spawn(gossip.run(
            crate::gossip::foca_config(&shared.config),
            gossip_rx,
            cancel.clone(),
        )));
        handles.push(tokio::spawn(
            store
                .clone()
                .run_sweeper(shared.config.sweep_jitter, cancel.clone()),
        ));
        let tasks = Arc::new(Tasks {
            cancel: cancel.clone(),
            handles: Mutex::new(handles),
        });
        let node = InstantCopyNode {
            shared: shared.clone(),
            tasks: tasks.clone(),
            cluster_addr: bound,
        };
        node.spawn(run_events(
            Arc::downgrade(&shared),
            Arc::downgrade(&tasks),
            events_rx,
            cancel.clone(),
        ));

        // Ask the seeds who the cluster is; refuse to start under an id a live node holds.
        let targets = match crate::lifecycle::join(&shared).await {
            Ok(t) => t,
            Err(e) => {
                node.stop().await;
                return Err(e);
            }
        };
        node.spawn(crate::lifecycle::run_sync(
            shared.clone(),
            targets,
            cancel.clone(),
        ));
        node.spawn(crate::lifecycle::run_seed_refresh(
            shared.clone(),
            cancel.clone(),
        ));
        tracing::info!(
            node = %shared.config.node_id,
            cluster_addr = %bound,
            advertise = %advertised,
            replication = %shared.config.replication,
            ack = %shared.config.ack,
            "instant-copy node started"
        );
        Ok(node)
    }

    fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        let h = tokio::spawn(f);
        self.tasks.handles.lock().push(h);
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.config.node_id
    }

    /// The address the cluster port is bound to.
    pub fn cluster_addr(&self) -> SocketAddr {
        self.cluster_addr
    }

    /// This node's identity as the cluster knows it (id, advertised address, generation).
    pub fn identity(&self) -> Identity {
        self.shared.members.identity()
    }

    /// Sessions held in memory (owned, backed up or fetched copies).
    pub fn sessions_held(&self) -> usize {
        self.shared.store.len()
    }

    /// Every member this node knows of and its state.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.shared.members.status()
    }

    /// The shared state (metrics, store, members) for white-box tests (`testing` feature).
    #[cfg(feature = "testing")]
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Whether the node has finished its initial sync (ready to take traffic, and for an
    /// orchestrator to go on with a rolling restart) and whether every session it leads has
    /// its full set of live copies.
    pub fn readiness(&self) -> Readiness {
        crate::lifecycle::readiness(&self.shared)
    }

    /// Waits until every member in `ids` is seen alive by this node, or `timeout` passes.
    pub async fn wait_for_members(&self, ids: &[NodeId], timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if ids
                .iter()
                .all(|id| *id == self.node_id() || self.shared.members.is_up(*id))
            {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Updates queued or being sent to peers.
    pub fn pending_replication(&self) -> u64 {
        self.shared.replicator.in_flight()
    }

    /// Runs a repair pass now (it also runs on every membership change).
    pub async fn repair(&self) {
        crate::repair::repair(&self.shared).await;
    }

    /// Runs one anti-entropy exchange with every alive peer now (it also runs every
    /// `anti_entropy_interval`), returning what each found.
    pub async fn anti_entropy(&self) -> Vec<(NodeId, crate::antientropy::SyncReport)> {
        crate::lifecycle::anti_entropy_round(&self.shared).await
    }

    /// Fault injection (tests): cut links, lose pushes.
    #[cfg(feature = "testing")]
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Leaves the cluster gracefully: tells every peer it is leaving (they take it out of
    /// placement at once), hands every session that would otherwise lose a copy to its new
    /// holders, waits for them within `drain_timeout`, then stops the node. The report says how
    /// many sessions were handed off and how many were left behind (logged too).
    pub async fn drain(&self) -> DrainReport {
        let report = crate::lifecycle::drain(&self.shared).await;
        self.stop().await;
        report
    }

    pub(crate) async fn stop(&self) {
        self.shared.lifecycle.stopped();
        self.tasks.cancel.cancel();
        let handles: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.handles.lock());
        for t in handles {
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                tracing::warn!("a node task did not stop within 5 s");
            }
        }
    }
}

/// Reacts to membership changes: starts pushers for new members, triggers anti-entropy with
/// members that came back or restarted, repairs placements when a holder went away.
async fn run_events(
    shared: std::sync::Weak<Shared>,
    tasks: std::sync::Weak<Tasks>,
    mut events: mpsc::UnboundedReceiver<PeerEvent>,
    cancel: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            e = events.recv() => e,
            _ = cancel.cancelled() => return,
        };
        let Some(ev) = ev else { return };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match ev {
            PeerEvent::New(peer, rx) => {
                let pusher = shared
                    .replicator
                    .clone()
                    .run_pusher(peer, rx, cancel.clone());
                if let Some(t) = tasks.upgrade() {
                    t.handles.lock().push(tokio::spawn(pusher));
                }
            }
            PeerEvent::Up(p) | PeerEvent::Restarted(p) => {
                shared.lifecycle.urgent_sync(p);
                crate::repair::repair(&shared).await;
            }
            PeerEvent::Down(_) | PeerEvent::Left(_) => {
                crate::repair::repair(&shared).await;
            }
        }
    }
}
