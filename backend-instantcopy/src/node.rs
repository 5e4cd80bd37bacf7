//! One cluster node: the [`SessionBackend`] that serves the app, and the tasks behind it
//! (cluster port, health probes, push queues, sweeper, repair).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use session_core::{
    CoreCounters, Counters, Delta, ExpiryPolicy, KeyRing, Loaded, Metric, Saved, SessionBackend,
    SessionData, SessionError, SessionId, SessionRecord, TokenError, TokenSigner, now_millis,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Ack, Config, ConfigError, NodeId, Replication};
use crate::metrics::Count;
use crate::peer::{Delivery, Peer, PeerEvent, PeerStatus, Peers};
use crate::routing::{Route, pick_backups};
use crate::state::{Placement, SessionState, WireState};
use crate::store::Store;
use crate::wire::{FetchResponse, PeerSeal, Update};

const SCHEME: &str = "instantcopy";

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The cluster port could not be bound.
    #[error("cannot listen on the cluster address {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the peer client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Node-level counters beyond the standard ones.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    /// Peer requests refused as unauthenticated.
    pub auth_failures: Count,
    /// Authenticated peer requests with malformed bodies.
    pub bad_requests: Count,
    /// Same-key writes that lost to a concurrent write of another node.
    pub conflicts: Count,
    /// Requests served by a backup (from its own copy or by fetching from one) because the
    /// owner was down or had lost the session.
    pub failovers: Count,
    /// Placements changed (new owner or backups).
    pub rehomes: Count,
    /// Sessions re-replicated after a membership change.
    pub repairs: Count,
    /// Tokens whose owner and every backup were gone: served as a fresh session.
    pub orphans: Count,
    /// Writes that waited for replica acknowledgements.
    pub acks_waited: Count,
    /// Writes whose required acknowledgements did not arrive in time.
    pub ack_failures: Count,
    /// Local copies older than the client's token, refreshed by a fetch.
    pub stale_copies: Count,
    /// Fetch requests this node answered.
    pub fetches_served: Count,
    /// Updates received from peers.
    pub updates_received: Count,
    /// Peer stamps further in the future than the replay window (clock skew).
    pub skewed_stamps: Count,
}

/// State shared by the backend, the cluster port and the background tasks.
pub struct Shared {
    /// The node's configuration.
    pub config: Config,
    /// The expiry policy.
    pub policy: ExpiryPolicy,
    pub(crate) signer: TokenSigner,
    pub(crate) seal: Arc<PeerSeal>,
    pub(crate) clock: Clock,
    /// The node's memory.
    pub store: Arc<Store>,
    /// The other members.
    pub peers: Arc<Peers>,
    /// When this process's node started (ms); peers detect restarts by it.
    pub started_at: u64,
    pub(crate) counters: CoreCounters,
    /// Node-level counters.
    pub metrics: NodeMetrics,
    repair_lock: tokio::sync::Mutex<()>,
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

/// An instant-copy cluster node: sessions in this process's memory, fetched from their owner on
/// a miss, pushed to replicas on a write. See the crate docs for the protocol.
///
/// Cloning is cheap: clones are handles to the same node.
#[derive(Clone)]
pub struct InstantCopyNode {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
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

impl InstantCopyNode {
    /// Validates the configuration, binds the cluster port and starts the node.
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

    /// Starts the node on an already bound cluster listener (tests bind port 0 first so
    /// every member's address is known before any node starts).
    ///
    /// Returns after one round of health probes, so a node that starts into a running cluster
    /// can route requests at once.
    pub async fn start_with_listener(
        config: Config,
        policy: ExpiryPolicy,
        keys: &KeyRing,
        listener: tokio::net::TcpListener,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let cluster_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.cluster_addr,
            source,
        })?;
        let seal = Arc::new(PeerSeal::new(keys));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (peers, receivers) = Peers::new(&config, seal.clone(), events_tx)?;
        let store = Arc::new(Store::new());
        let shared = Arc::new(Shared {
            clock: Clock::new(config.node_id, config.replay_window),
            signer: TokenSigner::new(keys),
            seal,
            store: store.clone(),
            peers: peers.clone(),
            started_at: now_millis(),
            counters: CoreCounters::default(),
            metrics: NodeMetrics::default(),
            repair_lock: tokio::sync::Mutex::new(()),
            policy,
            config,
        });
        let cancel = CancellationToken::new();
        let mut tasks = Vec::new();

        let app = crate::server::router(shared.clone());
        let stop = cancel.clone();
        tasks.push(tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "cluster port stopped");
            }
        }));
        for (peer, rx) in receivers {
            tasks.push(tokio::spawn(peers.clone().run_pusher(
                peer,
                rx,
                store.clone(),
                cancel.clone(),
            )));
        }
        tasks.push(tokio::spawn(
            store
                .clone()
                .run_sweeper(shared.config.sweep_jitter, cancel.clone()),
        ));
        tasks.push(tokio::spawn(run_events(
            shared.clone(),
            events_rx,
            cancel.clone(),
        )));
        // One probe round before serving, then the periodic heartbeat.
        futures::future::join_all(peers.all().iter().map(|p| peers.probe(p))).await;
        tasks.push(tokio::spawn(peers.clone().run_heartbeat(cancel.clone())));

        tracing::info!(
            node = %shared.config.node_id,
            %cluster_addr,
            replication = %shared.config.replication,
            ack = %shared.config.ack,
            "instant-copy node started"
        );
        Ok(InstantCopyNode {
            shared,
            cancel,
            tasks: Arc::new(Mutex::new(tasks)),
            cluster_addr,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.config.node_id
    }

    /// The address the cluster port is bound to.
    pub fn cluster_addr(&self) -> SocketAddr {
        self.cluster_addr
    }

    /// Sessions held in memory (owned, backed up or fetched copies).
    pub fn sessions_held(&self) -> usize {
        self.shared.store.len()
    }

    /// The state of every peer, as this node sees it.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.shared.peers.status()
    }

    /// The shared state (metrics, store) for inspection.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Waits until every configured peer answers, or `timeout` passes. Returns whether they all
    /// did.
    pub async fn wait_for_peers(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.shared.peers.all().iter().all(|p| p.is_up()) {
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
        self.shared.peers.in_flight()
    }

    /// Runs a repair pass now (it also runs on every membership change).
    pub async fn repair(&self) {
        repair(&self.shared, None).await;
    }

    async fn stop(&self) {
        self.cancel.cancel();
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock());
        for t in tasks {
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                tracing::warn!("a node task did not stop within 5 s");
            }
        }
    }
}

async fn run_events(
    shared: Arc<Shared>,
    mut events: mpsc::UnboundedReceiver<PeerEvent>,
    cancel: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            e = events.recv() => e,
            _ = cancel.cancelled() => return,
        };
        let Some(ev) = ev else { return };
        match ev {
            PeerEvent::Down(_) => {
                repair(&shared, None).await;
            }
            PeerEvent::Up(p) | PeerEvent::Restarted(p) | PeerEvent::Resync(p) => {
                send_tombstones(&shared, p).await;
                repair(&shared, Some(p)).await;
            }
        }
    }
}

/// Tells a peer that was unreachable about every destroy it may have missed.
async fn send_tombstones(shared: &Shared, to: NodeId) {
    let Some(peer) = shared.peers.get(to) else {
        return;
    };
    for (id, until) in shared.store.live_tombstones() {
        shared
            .peers
            .enqueue(peer, Update::Destroy { id, until }, false)
            .await;
    }
}

/// Restores each session this node leads to its full set of live holders. `resend_to`: a peer
/// that lost its memory (restart) or missed updates; sessions it holds are sent to it whole.
async fn repair(shared: &Shared, resend_to: Option<NodeId>) {
    let Replication::Backups(k) = shared.config.replication else {
        return;
    };
    let _guard = shared.repair_lock.lock().await;
    let me = shared.config.node_id;
    for id in shared.store.ids() {
        let Some(placement) = shared.store.read(&id, |s| s.placement().clone()) else {
            continue;
        };
        // The leader is the owner if it is up, else the first live backup.
        let leader = std::iter::once(placement.owner)
            .chain(placement.backups.iter().copied())
            .find(|n| shared.peers.is_up(*n));
        if leader != Some(me) {
            continue;
        }
        let old_holders: Vec<NodeId> = std::iter::once(placement.owner)
            .chain(placement.backups.iter().copied())
            .collect();
        let new = decide_placement(shared, &id, &placement, k, true);
        let changed = new.is_some();
        let placement = match new {
            Some(p) => {
                shared.metrics.rehomes.inc();
                shared.store.update(&id, |s| {
                    s.set_placement(p.clone());
                });
                p
            }
            None => placement,
        };
        let Some(full) = shared.store.read(&id, |s| s.to_wire_full()) else {
            continue;
        };
        let mut sent = false;
        for n in std::iter::once(placement.owner).chain(placement.backups.iter().copied()) {
            if n == me {
                continue;
            }
            let is_new = !old_holders.contains(&n);
            if is_new || changed || resend_to == Some(n) {
                if let Some(peer) = shared.peers.get(n) {
                    shared
                        .peers
                        .enqueue(peer, Update::State(full.clone()), false)
                        .await;
                    sent = true;
                }
            }
        }
        if sent {
            shared.metrics.repairs.inc();
        }
    }
}

/// The placement a session should have now: the owner stays if it is up (else `me` takes over
/// when `may_take_over`), live backups stay, missing ones are filled by rendezvous hashing over
/// live members. `None` when nothing changes.
fn decide_placement(
    shared: &Shared,
    id: &SessionId,
    current: &Placement,
    k: u8,
    may_take_over: bool,
) -> Option<Placement> {
    let me = shared.config.node_id;
    let peers = &shared.peers;
    let owner = if peers.is_up(current.owner) {
        current.owner
    } else if may_take_over {
        me
    } else {
        return None;
    };
    let mut backups: Vec<NodeId> = current
        .backups
        .iter()
        .copied()
        .filter(|b| *b != owner && peers.is_up(*b))
        .collect();
    if current.owner != owner && peers.is_up(current.owner) {
        backups.retain(|b| *b != current.owner);
    }
    if backups.len() < k as usize {
        let candidates: Vec<NodeId> = std::iter::once(me)
            .chain(peers.live_peer_ids())
            .filter(|n| *n != owner && !backups.contains(n))
            .collect();
        backups.extend(pick_backups(id, &candidates, k as usize - backups.len()));
    }
    if owner == current.owner && backups == current.backups {
        return None;
    }
    Some(Placement {
        stamp: shared.clock.now(),
        owner,
        backups,
    })
}

/// Where a write's update goes: `durable` sends count toward the ack level, `notify` sends
/// (destroy broadcasts) are best effort within the ack timeout.
#[derive(Default)]
struct Sends {
    durable: Vec<(Arc<Peer>, Update)>,
    notify: Vec<(Arc<Peer>, Update)>,
}

impl InstantCopyNode {
    fn route(&self, routing: &[u8]) -> Result<Route, TokenError> {
        Route::decode(routing, |n| self.shared.peers.is_member(n))
    }

    fn token(
        &self,
        id: &SessionId,
        placement: &Placement,
        version: u64,
    ) -> Result<String, SessionError> {
        let route = Route {
            owner: placement.owner,
            version,
            backups: placement.backups.clone(),
        };
        Ok(self.shared.signer.sign(id, &route.encode())?)
    }

    fn backups_for(&self, id: &SessionId) -> Vec<NodeId> {
        match self.shared.config.replication {
            Replication::All => Vec::new(),
            Replication::Backups(k) => {
                pick_backups(id, &self.shared.peers.live_peer_ids(), k as usize)
            }
        }
    }

    /// Peers that must receive a session's writes.
    fn replicas(&self, placement: &Placement) -> Vec<Arc<Peer>> {
        let peers = &self.shared.peers;
        match self.shared.config.replication {
            Replication::All => peers.up_peers().cloned().collect(),
            Replication::Backups(_) => std::iter::once(placement.owner)
                .chain(placement.backups.iter().copied())
                .filter(|n| *n != self.shared.config.node_id)
                .filter_map(|n| peers.get(n).cloned())
                .filter(|p| p.is_up())
                .collect(),
        }
    }

    /// Queues the sends and waits for `need` durable acknowledgements (`None`: do not wait for
    /// them). Destroy broadcasts (`notify`) are always waited for, within the ack timeout, but
    /// never fail the write (a peer that misses one gets it when it answers again).
    async fn replicate_need(
        &self,
        need: Option<usize>,
        sends: Sends,
        needs_replica: bool,
    ) -> Result<(), SessionError> {
        let peers = &self.shared.peers;
        let ack = self.shared.config.ack;
        let Some(need) = need else {
            for (p, u) in sends.durable {
                peers.enqueue(&p, u, false).await;
            }
            // Destroys are waited for even with `ack = async`: a logout or login must kill the
            // old id on every live node before the response says it did.
            let mut notify: FuturesUnordered<oneshot::Receiver<Delivery>> = FuturesUnordered::new();
            for (p, u) in sends.notify {
                if let Some(rx) = peers.enqueue(&p, u, true).await {
                    notify.push(rx);
                }
            }
            let _ = tokio::time::timeout(self.shared.config.ack_timeout, async {
                while notify.next().await.is_some() {}
            })
            .await;
            return Ok(());
        };
        if needs_replica && sends.durable.is_empty() {
            self.shared.metrics.ack_failures.inc();
            return Err(SessionError::Unavailable {
                backend: SCHEME,
                context: format!("ack = {ack} but no live replica can hold the write"),
                source: None,
            });
        }
        self.shared.metrics.acks_waited.inc();
        let mut durable: FuturesUnordered<oneshot::Receiver<Delivery>> = FuturesUnordered::new();
        let need = need.min(sends.durable.len());
        for (p, u) in sends.durable {
            if let Some(rx) = peers.enqueue(&p, u, true).await {
                durable.push(rx);
            }
        }
        let mut notify: FuturesUnordered<oneshot::Receiver<Delivery>> = FuturesUnordered::new();
        for (p, u) in sends.notify {
            if let Some(rx) = peers.enqueue(&p, u, true).await {
                notify.push(rx);
            }
        }
        let timeout = self.shared.config.ack_timeout;
        let waited = tokio::time::timeout(timeout, async {
            let mut ok = 0;
            while ok < need {
                match durable.next().await {
                    Some(Ok(Delivery::Applied)) => ok += 1,
                    // A holder refused the write: the session was destroyed meanwhile.
                    Some(Ok(Delivery::Gone)) => return Err(SessionError::Gone),
                    Some(_) => {}
                    None => break,
                }
            }
            // Destroy broadcasts: wait for every live peer, within the same deadline.
            while notify.next().await.is_some() {}
            Ok(ok)
        })
        .await;
        let waited = match waited {
            Ok(Err(e)) => return Err(e),
            Ok(Ok(ok)) => Ok(ok),
            Err(t) => Err(t),
        };
        match waited {
            Ok(ok) if ok >= need => Ok(()),
            Ok(ok) => {
                self.shared.metrics.ack_failures.inc();
                Err(SessionError::Unavailable {
                    backend: SCHEME,
                    context: format!(
                        "ack = {ack}: {ok} of {need} required replica acknowledgements; the write \
                         is applied on this node and may still reach the replicas"
                    ),
                    source: None,
                })
            }
            Err(_) if need == 0 => Ok(()),
            Err(_) => {
                self.shared.metrics.ack_failures.inc();
                Err(SessionError::Unavailable {
                    backend: SCHEME,
                    context: format!(
                        "ack = {ack}: replicas did not acknowledge within {timeout:?}; the write \
                         is applied on this node and may still reach the replicas"
                    ),
                    source: None,
                })
            }
        }
    }

    /// True when this node is one of the session's holders under `placement` (always, with
    /// `replication = "all"`).
    fn holds(&self, placement: &Placement) -> bool {
        let me = self.shared.config.node_id;
        self.shared.config.replication == Replication::All
            || placement.owner == me
            || placement.backups.contains(&me)
    }

    /// True when this node may serve and write `placement`'s session from its own copy: it is
    /// a holder, or the owner is down and this node takes the session over.
    fn may_serve(&self, placement: &Placement) -> bool {
        self.holds(placement) || !self.shared.peers.is_up(placement.owner)
    }

    /// This node's own copy, if it holds one that is live: record, placement, version.
    fn local_copy(&self, id: &SessionId, now: u64) -> Option<(Arc<SessionRecord>, Placement, u64)> {
        let copy = self.shared.store.read(id, |s| {
            (s.record().clone(), s.placement().clone(), s.version())
        })?;
        if copy.0.is_expired(now) {
            return None;
        }
        if !self.may_serve(&copy.1) {
            // A leftover from a time this node held the session: not kept up to date any more.
            self.shared.store.remove(id);
            return None;
        }
        Some(copy)
    }

    fn loaded_with(
        &self,
        token: &str,
        token_routing: Vec<u8>,
        token_route: &Route,
        (record, placement, version): (Arc<SessionRecord>, Placement, u64),
        key_rotated: bool,
    ) -> Loaded {
        let same = placement.owner == token_route.owner && placement.backups == token_route.backups;
        let routing = if same {
            token_routing
        } else {
            Route {
                owner: placement.owner,
                version,
                backups: placement.backups.clone(),
            }
            .encode()
        };
        Loaded {
            reissue: !same || key_rotated || !self.shared.peers.is_up(placement.owner),
            ..Loaded::new(record, token, routing)
        }
    }

    /// Replicates a write already applied to this node's copy of `id`: re-decides the placement
    /// (a dead owner is taken over, dead backups are replaced), sends `delta` to holders that
    /// already had the session (`had`) and the whole state to new ones, and waits as the ack
    /// level says. When a replica turns out to be dead during the wait, the placement is decided
    /// again and the whole state sent to the new holders (at most twice), so a write fails only
    /// if no live replica can take it. Returns the placement, version and expiry to put in the
    /// token.
    async fn replicate_held(
        &self,
        id: SessionId,
        delta: Option<&WireState>,
        had: &[NodeId],
    ) -> Result<(Placement, u64, u64), SessionError> {
        let shared = &self.shared;
        let me = shared.config.node_id;
        let mut had = had.to_vec();
        let mut attempt = 0;
        loop {
            let current = shared
                .store
                .read(&id, |s| s.placement().clone())
                .ok_or(SessionError::Gone)?;
            let new = match shared.config.replication {
                Replication::Backups(k) => decide_placement(shared, &id, &current, k, true),
                Replication::All if !shared.peers.is_up(current.owner) => Some(Placement {
                    stamp: shared.clock.now(),
                    owner: me,
                    backups: Vec::new(),
                }),
                Replication::All => None,
            };
            let mut moved = None;
            if let Some(p) = new {
                shared.metrics.rehomes.inc();
                if p.owner != current.owner {
                    // The owner was down: this node took the session over.
                    shared.metrics.failovers.inc();
                }
                moved = shared
                    .store
                    .update(&id, |s| s.set_placement(p))
                    .and_then(|w| w.placement);
            }
            let Some((placement, full, version, expires_at)) = shared.store.read(&id, |s| {
                (
                    s.placement().clone(),
                    s.to_wire_full(),
                    s.version(),
                    s.record().expires_at(),
                )
            }) else {
                return Err(SessionError::Gone);
            };
            let targets = self.replicas(&placement);
            let mut sends = Sends::default();
            for p in &targets {
                let update = match delta {
                    Some(d)
                        if shared.config.replication == Replication::All || had.contains(&p.id) =>
                    {
                        let mut d = d.clone();
                        d.placement.clone_from(&moved);
                        Update::State(d)
                    }
                    _ => Update::State(full.clone()),
                };
                sends.durable.push((p.clone(), update));
            }
            match self.replicate(sends, true).await {
                Ok(()) => return Ok((placement, version, expires_at)),
                Err(SessionError::Unavailable { .. })
                    if attempt < 2 && targets.iter().any(|p| !p.is_up()) =>
                {
                    // A replica died under us: choose again and send the whole state.
                    attempt += 1;
                    had.clear();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// This node's copy whatever its placement (after taking a session over).
    fn local_copy_any(&self, id: &SessionId) -> Option<(Arc<SessionRecord>, Placement, u64)> {
        self.shared.store.read(id, |s| {
            (s.record().clone(), s.placement().clone(), s.version())
        })
    }

    /// A write on a node that does not hold the session (`replication = k`): the delta goes to
    /// the holders, and the response waits for at least one of them whatever the ack level,
    /// since this node keeps no copy.
    async fn save_remote(
        &self,
        loaded: &Loaded,
        delta: &Delta,
        now: u64,
    ) -> Result<Saved, SessionError> {
        let shared = &self.shared;
        let route = self.route(&loaded.routing)?;
        let stamp = shared.clock.now();
        let w = SessionState::remote_write(&loaded.record, delta, stamp, now, &shared.policy);
        let placement = Placement {
            stamp,
            owner: route.owner,
            backups: route.backups.clone(),
        };
        let mut sends = Sends::default();
        for p in self.replicas(&placement) {
            sends.durable.push((p, Update::State(w.clone())));
        }
        // This node keeps no copy, so it does not count: `one` needs two holders (no single
        // crash loses the write), and even `async` waits for one (so the client's next read,
        // wherever it lands, finds the write).
        let need = match shared.config.ack {
            Ack::Async => 1,
            Ack::One => 2,
            Ack::All => usize::MAX,
        };
        self.replicate_need(Some(need), sends, true).await?;
        shared.counters.saved();
        Ok(Saved {
            token: self.token(&loaded.record.id, &placement, stamp.time.max(route.version))?,
            expires_at: w.idle_deadline.min(w.absolute_deadline),
        })
    }

    /// Asks the session's holders for it: the first copy at least as new as the token wins,
    /// otherwise the newest copy any holder had.
    async fn fetch_remote(&self, id: SessionId, route: &Route) -> Fetched {
        let shared = &self.shared;
        let me = shared.config.node_id;
        let peers = &shared.peers;
        let mut candidates: Vec<Arc<Peer>> = route
            .holders()
            .filter(|n| *n != me)
            .filter_map(|n| peers.get(n).cloned())
            .collect();
        if shared.config.replication == Replication::All {
            // Every member holds a copy: after the owner, ask up to two others.
            let mut others: Vec<Arc<Peer>> = peers
                .up_peers()
                .filter(|p| p.id != route.owner)
                .cloned()
                .collect();
            others.sort_by_key(|p| std::cmp::Reverse(crate::routing::score(&id, p.id)));
            candidates.extend(others.into_iter().take(2));
        }
        let live: Vec<Arc<Peer>> = candidates.iter().filter(|p| p.is_up()).cloned().collect();
        // If no holder is known to be up, try them anyway: this node's view may be stale.
        let order = if live.is_empty() { candidates } else { live };
        let mut answered = false;
        let mut best: Option<(u64, WireState, NodeId)> = None;
        for peer in order {
            shared.counters.network(1);
            match peers.fetch(&peer, id).await {
                Ok(FetchResponse::Found(w)) => {
                    answered = true;
                    shared.observe(&w);
                    let Some(v) = SessionState::from_wire(&w).map(|s| s.version()) else {
                        continue;
                    };
                    if v >= route.version {
                        return Fetched::Found(w, peer.id);
                    }
                    if best.as_ref().is_none_or(|(bv, _, _)| v > *bv) {
                        best = Some((v, w, peer.id));
                    }
                }
                Ok(FetchResponse::Destroyed) => return Fetched::Destroyed,
                Ok(FetchResponse::NotFound) => answered = true,
                Err(e) => tracing::debug!(peer = %peer.id, error = %e, "fetch failed"),
            }
        }
        match best {
            // Every holder lost the newest write the client saw: serve the newest there is.
            Some((_, w, from)) => Fetched::Found(w, from),
            None if answered => Fetched::Missing,
            None => Fetched::Unreachable,
        }
    }

    /// Replicates a write made on a holder: `ack = one` needs one replica besides this node,
    /// `all` every replica.
    async fn replicate(&self, sends: Sends, needs_replica: bool) -> Result<(), SessionError> {
        let need = match self.shared.config.ack {
            Ack::Async => None,
            Ack::One => Some(1),
            Ack::All => Some(usize::MAX),
        };
        self.replicate_need(need, sends, needs_replica).await
    }
}

enum Fetched {
    Found(WireState, NodeId),
    Missing,
    Destroyed,
    Unreachable,
}

#[async_trait]
impl SessionBackend for InstantCopyNode {
    fn scheme(&self) -> &'static str {
        SCHEME
    }

    fn policy(&self) -> &ExpiryPolicy {
        &self.shared.policy
    }

    async fn load(&self, token: &str) -> Result<Option<Loaded>, SessionError> {
        let shared = &self.shared;
        shared.counters.loaded_token(token.len());
        let verified = shared.signer.verify(token).inspect_err(|_| {
            shared.counters.invalid_token();
        })?;
        let route = self.route(&verified.routing).inspect_err(|_| {
            shared.counters.invalid_token();
        })?;
        let id = verified.id;
        if shared.store.is_destroyed(&id) {
            return Ok(None);
        }
        let rotated = verified.key_index > 0;
        if let Some(copy) = self.local_copy(&id, now_millis()) {
            if copy.2 >= route.version {
                if copy.1.owner != shared.config.node_id && !shared.peers.is_up(copy.1.owner) {
                    // A backup serving while the owner is down.
                    shared.metrics.failovers.inc();
                }
                return Ok(Some(self.loaded_with(
                    token,
                    verified.routing,
                    &route,
                    copy,
                    rotated,
                )));
            }
            // Older than what this client already saw: replication is still in flight.
            shared.metrics.stale_copies.inc();
        }
        match self.fetch_remote(id, &route).await {
            Fetched::Found(w, from) => {
                let Some(fetched) = SessionState::from_wire(&w) else {
                    return Ok(None);
                };
                if fetched.record().is_expired(now_millis()) {
                    return Ok(None);
                }
                let owner_up = shared.peers.is_up(fetched.placement().owner);
                if from != fetched.placement().owner || !owner_up {
                    shared.metrics.failovers.inc();
                }
                if self.holds(fetched.placement()) || !owner_up {
                    // This node holds the session (or takes it over from a dead owner): keep it.
                    shared.store.apply(&w);
                    Ok(self.local_copy_any(&id).map(|copy| {
                        self.loaded_with(token, verified.routing, &route, copy, rotated)
                    }))
                } else {
                    // Not a holder: use the copy for this request only (holders get the writes).
                    let copy = (
                        fetched.record().clone(),
                        fetched.placement().clone(),
                        fetched.version(),
                    );
                    Ok(Some(self.loaded_with(
                        token,
                        verified.routing,
                        &route,
                        copy,
                        rotated,
                    )))
                }
            }
            Fetched::Destroyed => {
                shared.store.destroy(
                    id,
                    now_millis() + shared.policy.absolute_timeout().as_millis() as u64,
                );
                Ok(None)
            }
            Fetched::Missing => Ok(None),
            Fetched::Unreachable => {
                shared.metrics.orphans.inc();
                tracing::info!(session = ?id, "no holder of the session is reachable; starting afresh");
                Ok(None)
            }
        }
    }

    async fn create(&self, data: SessionData) -> Result<Saved, SessionError> {
        let shared = &self.shared;
        let id = SessionId::random();
        let stamp = shared.clock.now();
        let placement = Placement {
            stamp,
            owner: shared.config.node_id,
            backups: self.backups_for(&id),
        };
        let state = SessionState::create(id, data, &shared.policy, now_millis(), stamp, placement);
        shared.store.insert(state);
        let (placement, version, expires_at) = match self.replicate_held(id, None, &[]).await {
            Ok(x) => x,
            Err(e) => {
                // The client will not get a token: do not keep an unreachable session either.
                shared.store.remove(&id);
                return Err(e);
            }
        };
        shared.counters.created();
        Ok(Saved {
            token: self.token(&id, &placement, version)?,
            expires_at,
        })
    }

    async fn save(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        let shared = &self.shared;
        let id = loaded.record.id;
        let now = now_millis();
        if loaded.record.is_expired(now) {
            return Err(SessionError::Gone);
        }
        match shared.store.read(&id, |s| self.may_serve(s.placement())) {
            Some(true) => {}
            Some(false) => return self.save_remote(loaded, delta, now).await,
            // Holders always keep their copy: a missing one was destroyed or swept.
            None if shared.store.is_destroyed(&id)
                || shared.config.replication == Replication::All =>
            {
                return Err(SessionError::Gone);
            }
            None => return self.save_remote(loaded, delta, now).await,
        }
        let stamp = shared.clock.now();
        let applied = shared.store.update(&id, |s| {
            if s.record().is_expired(now) {
                return None;
            }
            let w = s.apply_local(delta, stamp, now, &shared.policy);
            Some((w, s.placement().clone()))
        });
        let Some(Some((w, old))) = applied else {
            return Err(SessionError::Gone);
        };
        let old_holders: Vec<NodeId> = std::iter::once(old.owner)
            .chain(old.backups.iter().copied())
            .collect();
        let (placement, version, expires_at) =
            self.replicate_held(id, Some(&w), &old_holders).await?;
        shared.counters.saved();
        Ok(Saved {
            token: self.token(&id, &placement, version)?,
            expires_at,
        })
    }

    async fn cycle_id(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        let shared = &self.shared;
        let old_id = loaded.record.id;
        let new_id = SessionId::random();
        let stamp = shared.clock.now();
        let now = now_millis();
        if loaded.record.is_expired(now) {
            return Err(SessionError::Gone);
        }
        let placement = Placement {
            stamp,
            owner: shared.config.node_id,
            backups: self.backups_for(&new_id),
        };
        let held = shared.store.update(&old_id, |s| {
            if s.record().is_expired(now) || !self.holds(s.placement()) {
                return None;
            }
            s.apply_local(delta, stamp, now, &shared.policy);
            let mut n = s.with_id(new_id);
            n.set_placement(placement.clone());
            Some(n)
        });
        let new_state = match held {
            Some(Some(n)) => n,
            _ => {
                // Not a holder: build the new session from the copy this request loaded.
                let mut record = (*loaded.record).clone();
                record.id = new_id;
                record.data.apply(delta);
                record.last_access = now;
                record.idle_deadline = record.idle_deadline.max(
                    shared
                        .policy
                        .refreshed_idle_deadline(now, record.absolute_deadline),
                );
                SessionState::from_record(record, stamp, placement.clone())
            }
        };
        let full = new_state.to_wire_full();
        let version = new_state.version();
        let expires_at = new_state.record().expires_at();
        let until = new_state.record().absolute_deadline;
        // The new id exists before the old one goes.
        shared.store.insert(new_state);
        shared.store.destroy(old_id, until);
        let mut sends = Sends::default();
        for p in self.replicas(&placement) {
            sends.durable.push((p, Update::State(full.clone())));
        }
        for p in shared.peers.up_peers() {
            sends
                .notify
                .push((p.clone(), Update::Destroy { id: old_id, until }));
        }
        self.replicate(sends, true).await?;
        shared.counters.cycled();
        Ok(Saved {
            token: self.token(&new_id, &placement, version)?,
            expires_at,
        })
    }

    async fn destroy(&self, loaded: &Loaded) -> Result<(), SessionError> {
        let shared = &self.shared;
        let id = loaded.record.id;
        let until = loaded.record.absolute_deadline;
        shared.store.destroy(id, until);
        let mut sends = Sends::default();
        // Copies may have been fetched by any node: tell every live member.
        for p in shared.peers.up_peers() {
            sends
                .notify
                .push((p.clone(), Update::Destroy { id, until }));
        }
        self.replicate(sends, false).await?;
        shared.counters.destroyed();
        Ok(())
    }

    fn counters(&self) -> Counters {
        let s = &self.shared;
        let m = &s.metrics;
        let (sweeps, swept) = s.store.sweep_counts();
        let mut extra = vec![
            Metric::gauge(
                "sessions_held",
                "Sessions held in this node's memory",
                s.store.len() as f64,
            ),
            Metric::gauge(
                "tombstones_held",
                "Destroyed session ids remembered",
                s.store.tombstones() as f64,
            ),
            Metric::gauge(
                "peers_up",
                "Peers answering health probes",
                s.peers.up_peers().count() as f64,
            ),
            Metric::counter(
                "peer_fetch_failures_total",
                "Fetches from peers that failed",
                s.peers.fetch_failures.get(),
            ),
            Metric::counter(
                "fetches_served_total",
                "Fetch requests answered for peers",
                m.fetches_served.get(),
            ),
            Metric::counter(
                "updates_received_total",
                "Updates received from peers",
                m.updates_received.get(),
            ),
            Metric::counter(
                "full_resends_total",
                "Updates re-sent whole because the peer had no copy",
                s.peers.full_resends.get(),
            ),
            Metric::counter(
                "auth_failures_total",
                "Peer requests refused as unauthenticated",
                m.auth_failures.get(),
            ),
            Metric::counter(
                "bad_requests_total",
                "Malformed authenticated peer requests",
                m.bad_requests.get(),
            ),
            Metric::counter(
                "conflicts_total",
                "Same-key concurrent writes resolved by last-writer-wins",
                m.conflicts.get(),
            ),
            Metric::counter(
                "failovers_total",
                "Sessions fetched from a backup instead of the owner",
                m.failovers.get(),
            ),
            Metric::counter(
                "rehomes_total",
                "Placement changes (new owner or backups)",
                m.rehomes.get(),
            ),
            Metric::counter(
                "repairs_total",
                "Sessions re-replicated after membership changes",
                m.repairs.get(),
            ),
            Metric::counter(
                "orphans_total",
                "Tokens whose holders were all unreachable",
                m.orphans.get(),
            ),
            Metric::counter(
                "acks_waited_total",
                "Writes that waited for replica acknowledgements",
                m.acks_waited.get(),
            ),
            Metric::counter(
                "ack_failures_total",
                "Writes whose acknowledgements did not arrive in time",
                m.ack_failures.get(),
            ),
            Metric::counter(
                "stale_copies_total",
                "Local copies older than the client's token",
                m.stale_copies.get(),
            ),
            Metric::counter(
                "skewed_stamps_total",
                "Peer stamps beyond the allowed clock skew",
                m.skewed_stamps.get(),
            ),
            Metric::counter("sweeps_total", "Sweeper wake-ups", sweeps),
            Metric::counter(
                "swept_total",
                "Expired sessions removed by the sweeper",
                swept,
            ),
        ];
        for p in s.peers.all() {
            let id = p.id.to_string();
            extra.push(
                Metric::gauge(
                    "peer_up",
                    "1 when the peer answers probes",
                    if p.is_up() { 1.0 } else { 0.0 },
                )
                .with_label("peer", id.clone()),
            );
            extra.push(
                Metric::counter("push_batches_total", "Push batches sent", p.pushes.get())
                    .with_label("peer", id.clone()),
            );
            extra.push(
                Metric::counter("push_updates_total", "Updates sent", p.push_updates.get())
                    .with_label("peer", id.clone()),
            );
            extra.push(
                Metric::counter(
                    "push_bytes_total",
                    "Sealed push bytes sent",
                    p.push_bytes.get(),
                )
                .with_label("peer", id.clone()),
            );
            extra.push(
                Metric::counter(
                    "push_failures_total",
                    "Push batches that failed",
                    p.push_failures.get(),
                )
                .with_label("peer", id.clone()),
            );
            extra.push(
                Metric::counter(
                    "push_dropped_total",
                    "Updates dropped (peer down or queue full)",
                    p.dropped.get(),
                )
                .with_label("peer", id),
            );
        }
        extra.push(Metric::histogram(
            "replication_lag_seconds",
            "Time from queuing an update to the replica's acknowledgement",
            &s.peers.lag,
        ));
        s.counters.snapshot(extra)
    }

    async fn shutdown(&self) {
        self.stop().await;
    }
}
