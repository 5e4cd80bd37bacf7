//! The other members: a pooled keep-alive HTTP client per peer, per-peer push queues that batch
//! and coalesce updates, and health probing (heartbeats plus a direct probe on suspicion).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use session_core::{SessionId, now_millis};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, NodeId};
use crate::metrics::Count;
use crate::state::WireState;
use crate::store::Store;
use crate::wire::{
    self, CONTENT_TYPE, FetchRequest, FetchResponse, HDR_FROM, HDR_TIME, PATH_FETCH, PATH_PING,
    PATH_PUSH, PeerSeal, Pong, PushAck, PushBatch, Update,
};
use session_core::Histogram;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Could not connect, or the connection broke, or it timed out.
    #[error("peer unreachable: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// The peer answered with an unexpected status.
    #[error("peer answered HTTP {0}")]
    Status(u16),
    /// The response did not open (wrong secret, tampering, or not bound to our request).
    #[error("peer response failed authentication")]
    Auth,
    /// The response opened but did not decode.
    #[error("peer response malformed: {0}")]
    Decode(#[from] postcard::Error),
    /// The response exceeded the body limit.
    #[error("peer response over {0} bytes")]
    TooLarge(usize),
}

/// A membership change the node reacts to (repair, re-push).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// The peer stopped answering.
    Down(NodeId),
    /// The peer answers again (or for the first time).
    Up(NodeId),
    /// The peer restarted: its memory is empty.
    Restarted(NodeId),
    /// Updates to the peer were lost while it was unreachable; it needs full states again.
    Resync(NodeId),
}

/// What became of one queued update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The peer applied it.
    Applied,
    /// The peer refused it: the session is destroyed or expired there.
    Gone,
    /// It could not be delivered.
    Failed,
}

/// An update waiting in a peer's queue.
#[derive(Debug)]
pub struct Queued {
    /// The update.
    pub update: Update,
    /// Told what became of it.
    pub ack: Option<oneshot::Sender<Delivery>>,
    /// When it was queued (for the replication-lag histogram).
    pub enqueued: Instant,
}

/// One other member of the cluster.
#[derive(Debug)]
pub struct Peer {
    /// Its id.
    pub id: NodeId,
    /// Its cluster address (from the configuration; nothing else is ever contacted).
    pub addr: SocketAddr,
    urls: [String; 3],
    up: AtomicBool,
    failures: AtomicU32,
    started_at: AtomicU64,
    last_seen: AtomicU64,
    needs_resync: AtomicBool,
    queue: mpsc::Sender<Queued>,
    /// Push batches sent.
    pub pushes: Count,
    /// Updates sent.
    pub push_updates: Count,
    /// Bytes of sealed push bodies sent.
    pub push_bytes: Count,
    /// Push batches that failed.
    pub push_failures: Count,
    /// Updates dropped (peer down or queue full).
    pub dropped: Count,
}

impl Peer {
    /// True while the peer answers probes.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// When it last answered (ms since the epoch; 0 = never).
    pub fn last_seen(&self) -> u64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// Updates waiting in its queue.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

/// A peer's state for status pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    /// Its id.
    pub id: u16,
    /// Its cluster address.
    pub addr: String,
    /// Whether it answers.
    pub up: bool,
    /// When it last answered (ms since the epoch; 0 = never).
    pub last_seen: u64,
    /// Updates waiting to be sent to it.
    pub queued: usize,
}

/// All other members, the client that reaches them, and the node's push/probe machinery.
pub struct Peers {
    me: NodeId,
    peers: Vec<Arc<Peer>>,
    client: reqwest::Client,
    seal: Arc<PeerSeal>,
    events: mpsc::UnboundedSender<PeerEvent>,
    max_body: usize,
    max_batch: usize,
    heartbeat: Duration,
    threshold: u32,
    enqueue_timeout: Duration,
    /// Time from queuing an update to the peer's acknowledgement.
    pub lag: Histogram,
    /// Fetch calls that failed.
    pub fetch_failures: Count,
    /// Updates re-sent whole because the receiver had no copy.
    pub full_resends: Count,
    in_flight: AtomicU64,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("me", &self.me)
            .field("peers", &self.peers)
            .finish()
    }
}

/// The receiving ends of the push queues, one per peer, handed to the pusher tasks.
pub type QueueReceivers = Vec<(Arc<Peer>, mpsc::Receiver<Queued>)>;

impl Peers {
    /// Builds the peer table from the configuration. Peers start as down until their first
    /// probe answers.
    pub fn new(
        config: &Config,
        seal: Arc<PeerSeal>,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Result<(Arc<Peers>, QueueReceivers), reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_max_idle_per_host(4)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .no_proxy()
            .build()?;
        let mut receivers = Vec::new();
        let peers = config
            .peers()
            .map(|m| {
                let (tx, rx) = mpsc::channel(config.queue_capacity);
                let base = format!("http://{}", m.addr);
                let p = Arc::new(Peer {
                    id: m.id,
                    addr: m.addr,
                    urls: [
                        format!("{base}{PATH_FETCH}"),
                        format!("{base}{PATH_PUSH}"),
                        format!("{base}{PATH_PING}"),
                    ],
                    up: AtomicBool::new(false),
                    failures: AtomicU32::new(0),
                    started_at: AtomicU64::new(0),
                    last_seen: AtomicU64::new(0),
                    needs_resync: AtomicBool::new(false),
                    queue: tx,
                    pushes: Count::default(),
                    push_updates: Count::default(),
                    push_bytes: Count::default(),
                    push_failures: Count::default(),
                    dropped: Count::default(),
                });
                receivers.push((p.clone(), rx));
                p
            })
            .collect();
        Ok((
            Arc::new(Peers {
                me: config.node_id,
                peers,
                client,
                seal,
                events,
                max_body: config.max_body_bytes,
                max_batch: config.max_batch,
                heartbeat: config.heartbeat_interval,
                threshold: config.failure_threshold,
                enqueue_timeout: config.ack_timeout,
                lag: Histogram::default(),
                fetch_failures: Count::default(),
                full_resends: Count::default(),
                in_flight: AtomicU64::new(0),
            }),
            receivers,
        ))
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Every other member.
    pub fn all(&self) -> &[Arc<Peer>] {
        &self.peers
    }

    /// The peer with this id.
    pub fn get(&self, id: NodeId) -> Option<&Arc<Peer>> {
        self.peers.iter().find(|p| p.id == id)
    }

    /// True for this node and every configured peer.
    pub fn is_member(&self, id: NodeId) -> bool {
        id == self.me || self.get(id).is_some()
    }

    /// True for this node and every peer that answers.
    pub fn is_up(&self, id: NodeId) -> bool {
        id == self.me || self.get(id).is_some_and(|p| p.is_up())
    }

    /// Peers that answer.
    pub fn up_peers(&self) -> impl Iterator<Item = &Arc<Peer>> {
        self.peers.iter().filter(|p| p.is_up())
    }

    /// Live peers' ids (this node excluded).
    pub fn live_peer_ids(&self) -> Vec<NodeId> {
        self.up_peers().map(|p| p.id).collect()
    }

    /// Status of every peer.
    pub fn status(&self) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|p| PeerStatus {
                id: p.id.0,
                addr: p.addr.to_string(),
                up: p.is_up(),
                last_seen: p.last_seen(),
                queued: p.queued(),
            })
            .collect()
    }

    /// Queues an update for a peer. Returns the acknowledgement receiver when `want_ack`, or
    /// `None` when the update could not even be queued (peer down, queue full past the timeout).
    pub async fn enqueue(
        &self,
        peer: &Arc<Peer>,
        update: Update,
        want_ack: bool,
    ) -> Option<oneshot::Receiver<Delivery>> {
        if !peer.is_up() {
            peer.dropped.inc();
            peer.needs_resync.store(true, Ordering::Release);
            return None;
        }
        let (tx, rx) = if want_ack {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let q = Queued {
            update,
            ack: tx,
            enqueued: Instant::now(),
        };
        let sent = match peer.queue.try_send(q) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(q)) => {
                // Backpressure: wait for room, but not forever.
                matches!(
                    tokio::time::timeout(self.enqueue_timeout, peer.queue.send(q)).await,
                    Ok(Ok(()))
                )
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        };
        if !sent {
            peer.dropped.inc();
            peer.needs_resync.store(true, Ordering::Release);
            return None;
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        rx
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        url: &str,
        path: &str,
        req: &Req,
    ) -> Result<(Resp, usize), CallError> {
        let plain = wire::encode(req)?;
        let time = now_millis();
        let (nonce, sealed) = self.seal.seal_request("POST", path, self.me, time, &plain);
        let sent = sealed.len();
        let mut resp = self
            .client
            .post(url)
            .header(HDR_FROM, self.me.0.to_string())
            .header(HDR_TIME, time.to_string())
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(sealed)
            .send()
            .await
            .map_err(CallError::Unreachable)?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(CallError::Status(resp.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(CallError::Unreachable)? {
            if body.len() + chunk.len() > self.max_body {
                return Err(CallError::TooLarge(self.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        let plain = self
            .seal
            .open_response(&nonce, &body)
            .map_err(|_| CallError::Auth)?;
        Ok((wire::decode(&plain)?, sent))
    }

    /// Asks a peer for a session (one network call).
    pub async fn fetch(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        id: SessionId,
    ) -> Result<FetchResponse, CallError> {
        let r = self
            .call::<_, FetchResponse>(&peer.urls[0], PATH_FETCH, &FetchRequest { id })
            .await
            .map(|(r, _)| r);
        if let Err(e) = &r {
            self.fetch_failures.inc();
            match e {
                // Refused outright (a crashed process): confirming costs one more refused
                // connection, so do it now and let this request route around the dead peer.
                CallError::Unreachable(inner) if inner.is_connect() => {
                    self.confirm(peer).await;
                }
                CallError::Unreachable(_) => self.suspect(peer),
                _ => {}
            }
        }
        r
    }

    /// Probes a peer once; updates its state and emits events. Returns whether it answered.
    pub async fn probe(&self, peer: &Arc<Peer>) -> bool {
        match self.call::<_, Pong>(&peer.urls[2], PATH_PING, &()).await {
            Ok((pong, _)) if pong.node == peer.id => {
                peer.failures.store(0, Ordering::Relaxed);
                peer.last_seen.store(now_millis(), Ordering::Relaxed);
                let before = peer.started_at.swap(pong.started_at, Ordering::AcqRel);
                let was_up = peer.up.swap(true, Ordering::AcqRel);
                if !was_up {
                    tracing::info!(peer = %peer.id, "peer is up");
                    let _ = self.events.send(PeerEvent::Up(peer.id));
                }
                if before != 0 && before != pong.started_at {
                    tracing::info!(peer = %peer.id, "peer restarted");
                    let _ = self.events.send(PeerEvent::Restarted(peer.id));
                } else if peer.needs_resync.swap(false, Ordering::AcqRel) && was_up {
                    let _ = self.events.send(PeerEvent::Resync(peer.id));
                }
                true
            }
            other => {
                if let Err(e) = &other {
                    tracing::debug!(peer = %peer.id, error = %e, "probe failed");
                }
                let n = peer.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= self.threshold && peer.up.swap(false, Ordering::AcqRel) {
                    tracing::warn!(peer = %peer.id, failures = n, "peer is down");
                    peer.needs_resync.store(true, Ordering::Release);
                    let _ = self.events.send(PeerEvent::Down(peer.id));
                }
                false
            }
        }
    }

    /// A call to `peer` failed: confirm with a direct probe, and declare it down if that fails
    /// too (a second opinion, so one lost packet does not kill a peer). Returns whether the peer
    /// is still considered up.
    pub async fn confirm(self: &Arc<Self>, peer: &Arc<Peer>) -> bool {
        if !peer.is_up() {
            return false;
        }
        if self.probe(peer).await {
            return true;
        }
        peer.failures.store(self.threshold, Ordering::Relaxed);
        if peer.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(peer = %peer.id, "peer is down (failed call confirmed by probe)");
            peer.needs_resync.store(true, Ordering::Release);
            let _ = self.events.send(PeerEvent::Down(peer.id));
        }
        false
    }

    /// [`confirm`](Peers::confirm) in the background.
    pub fn suspect(self: &Arc<Self>, peer: &Arc<Peer>) {
        if !peer.is_up() {
            return;
        }
        let this = self.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            this.confirm(&peer).await;
        });
    }

    /// Probes every peer every heartbeat interval until cancelled.
    pub async fn run_heartbeat(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let probes = self.peers.iter().map(|p| {
                let this = self.clone();
                let p = p.clone();
                async move {
                    this.probe(&p).await;
                }
            });
            futures::future::join_all(probes).await;
            let wait = self.heartbeat + crate::store::random_jitter(self.heartbeat / 10);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// Sends a peer's queued updates in batches until cancelled (then flushes what is queued).
    pub async fn run_pusher(
        self: Arc<Self>,
        peer: Arc<Peer>,
        mut rx: mpsc::Receiver<Queued>,
        store: Arc<Store>,
        cancel: CancellationToken,
    ) {
        loop {
            let first = tokio::select! {
                q = rx.recv() => q,
                _ = cancel.cancelled() => {
                    // Graceful shutdown: flush whatever is queued, once.
                    let mut rest = Vec::new();
                    while let Ok(q) = rx.try_recv() { rest.push(q); }
                    while !rest.is_empty() {
                        let n = rest.len().min(self.max_batch);
                        let batch: Vec<Queued> = rest.drain(..n).collect();
                        self.send_batch(&peer, batch, &store).await;
                    }
                    return;
                }
            };
            let Some(first) = first else { return };
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(q) => batch.push(q),
                    Err(_) => break,
                }
            }
            self.send_batch(&peer, batch, &store).await;
        }
    }

    /// Updates queued or being sent, over all peers.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    async fn send_batch(self: &Arc<Self>, peer: &Arc<Peer>, batch: Vec<Queued>, store: &Store) {
        let n = batch.len() as u64;
        self.send_coalesced(peer, batch, store).await;
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
    }

    async fn send_coalesced(self: &Arc<Self>, peer: &Arc<Peer>, batch: Vec<Queued>, store: &Store) {
        // Coalesce: one update per session (states joined; a destroy is final).
        let mut order: Vec<SessionId> = Vec::new();
        let mut merged: HashMap<SessionId, Update> = HashMap::new();
        let mut acks: Vec<(SessionId, oneshot::Sender<Delivery>, Instant)> = Vec::new();
        for q in batch {
            let id = q.update.id();
            if let Some(a) = q.ack {
                acks.push((id, a, q.enqueued));
            }
            match merged.get_mut(&id) {
                None => {
                    order.push(id);
                    merged.insert(id, q.update);
                }
                Some(existing) => coalesce(existing, q.update),
            }
        }
        let updates: Vec<Update> = order.iter().filter_map(|id| merged.remove(id)).collect();
        let count = updates.len() as u64;
        let mut failed: Vec<SessionId> = Vec::new();
        let mut gone: Vec<SessionId> = Vec::new();
        let ok = match self.push(peer, PushBatch { updates }).await {
            Ok(ack) => {
                gone = ack.gone;
                if !ack.need_full.is_empty() {
                    // The peer had no copy for some partial updates: send those sessions whole.
                    let full: Vec<Update> = ack
                        .need_full
                        .iter()
                        .filter_map(|id| store.read(id, |s| Update::State(s.to_wire_full())))
                        .collect();
                    self.full_resends.add(full.len() as u64);
                    if full.len() < ack.need_full.len() {
                        // This node has no full state to offer (a write forwarded by a
                        // non-holder reached a peer without a copy): not delivered.
                        failed.extend(
                            ack.need_full
                                .iter()
                                .filter(|id| store.read(id, |_| ()).is_none()),
                        );
                    }
                    if !full.is_empty() {
                        match self.push(peer, PushBatch { updates: full }).await {
                            Ok(second) => gone.extend(second.gone),
                            Err(_) => failed.extend(ack.need_full.iter().copied()),
                        }
                    }
                }
                true
            }
            Err(_) => false,
        };
        peer.push_updates.add(count);
        for (id, tx, at) in acks {
            let delivery = if !ok || failed.contains(&id) {
                Delivery::Failed
            } else if gone.contains(&id) {
                Delivery::Gone
            } else {
                self.lag.record(at.elapsed());
                Delivery::Applied
            };
            let _ = tx.send(delivery);
        }
    }

    async fn push(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        batch: PushBatch,
    ) -> Result<PushAck, CallError> {
        peer.pushes.inc();
        match self
            .call::<_, PushAck>(&peer.urls[1], PATH_PUSH, &batch)
            .await
        {
            Ok((ack, bytes)) => {
                peer.push_bytes.add(bytes as u64);
                Ok(ack)
            }
            Err(e) => {
                tracing::debug!(peer = %peer.id, error = %e, "push failed");
                peer.push_failures.inc();
                peer.needs_resync.store(true, Ordering::Release);
                // Unreachable (refused, reset, timed out): confirm with a probe before the
                // waiting writers hear of the failure, so that when they look the peer is
                // already down and they route around it. A pooled connection to a killed peer
                // fails as a reset, not as a refused connect, so every kind is confirmed here.
                if let CallError::Unreachable(_) = &e {
                    self.confirm(peer).await;
                }
                Err(e)
            }
        }
    }
}

/// Folds `next` into `existing` (both for the same session).
fn coalesce(existing: &mut Update, next: Update) {
    match (&mut *existing, next) {
        (Update::Destroy { until, .. }, Update::Destroy { until: u2, .. }) => {
            *until = (*until).max(u2)
        }
        (Update::Destroy { .. }, Update::State(_)) => {}
        (_, d @ Update::Destroy { .. }) => *existing = d,
        (Update::State(a), Update::State(b)) => join(a, b),
    }
}

/// Joins two states of one session (the same merge rules as `SessionState::merge`).
pub fn join(a: &mut WireState, b: WireState) {
    a.full |= b.full;
    a.created_at = a.created_at.min(b.created_at);
    a.absolute_deadline = a.absolute_deadline.min(b.absolute_deadline);
    a.last_access = a.last_access.max(b.last_access);
    a.idle_deadline = a
        .idle_deadline
        .max(b.idle_deadline)
        .min(a.absolute_deadline);
    a.touched = a.touched.max(b.touched);
    for e in b.entries {
        match a.entries.iter_mut().find(|x| x.key == e.key) {
            Some(x) if x.stamp >= e.stamp => {}
            Some(x) => *x = e,
            None => a.entries.push(e),
        }
    }
    match (&a.placement, b.placement) {
        (Some(pa), Some(pb)) if pb.stamp > pa.stamp => a.placement = Some(pb),
        (None, pb @ Some(_)) => a.placement = pb,
        _ => {}
    }
}
