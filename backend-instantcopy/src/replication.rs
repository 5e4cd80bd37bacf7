//! Getting a write's update to the other holders: one bounded queue per peer, a pusher task per
//! peer that batches and coalesces what is queued (a burst of writes to one session is one
//! message), and acknowledgements back to the writers that wait for them.
//!
//! Owns the push path and its accounting: replication lag (queued → acknowledged), updates in
//! flight, dropped updates (a peer down or a queue full past the ack timeout: anti-entropy
//! repairs those), and the "send it whole" follow-up when a receiver holds no copy of a
//! session a partial update was about.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use session_core::{Histogram, SessionId};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::client::{CallError, PeerClient};
use crate::faults::Faults;
use crate::gossip::GossipCmd;
use crate::membership::{Membership, Peer};
use crate::metrics::Count;
use crate::state::WireState;
use crate::store::Store;
use crate::wire::{PushAck, PushBatch, Update};

/// Push batches one peer's pusher keeps on the wire at once. Two hides one round trip of
/// queueing behind a batch in flight; more would mostly split batches that coalescing keeps
/// together now (fewer, larger messages per write under load).
pub(crate) const PUSHES_IN_FLIGHT: usize = 2;

/// Sessions whose batch was answered may go out again.
fn release(on_wire: &mut HashSet<SessionId>, ids: Vec<SessionId>) {
    for id in ids {
        on_wire.remove(&id);
    }
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

/// The push machinery shared by every peer's pusher.
pub(crate) struct Replicator {
    pub(crate) client: Arc<PeerClient>,
    pub(crate) members: Arc<Membership>,
    pub(crate) store: Arc<Store>,
    pub(crate) gossip: mpsc::UnboundedSender<GossipCmd>,
    pub(crate) faults: Arc<Faults>,
    pub(crate) max_batch: usize,
    /// Encoded bytes a batch aims to stay under ([`Config::max_batch_bytes`](crate::Config::max_batch_bytes)).
    pub(crate) max_batch_bytes: usize,
    /// Largest body a peer accepts.
    pub(crate) max_body: usize,
    pub(crate) enqueue_timeout: Duration,
    /// Time from queuing an update to the peer's acknowledgement.
    pub(crate) lag: Histogram,
    /// Updates re-sent whole because the receiver had no copy.
    pub(crate) full_resends: Count,
    /// Updates never sent because their encoding alone exceeds a peer's body limit.
    pub(crate) oversized: Count,
    /// Woken when an update could not be delivered: anti-entropy should visit that peer soon.
    pub(crate) resync: Arc<tokio::sync::Notify>,
    in_flight: AtomicU64,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Replicator {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        client: Arc<PeerClient>,
        members: Arc<Membership>,
        store: Arc<Store>,
        gossip: mpsc::UnboundedSender<GossipCmd>,
        faults: Arc<Faults>,
        config: &crate::Config,
        resync: Arc<tokio::sync::Notify>,
    ) -> Self {
        Replicator {
            client,
            members,
            store,
            gossip,
            faults,
            max_batch: config.max_batch,
            max_batch_bytes: config.max_batch_bytes(),
            max_body: config.max_body_bytes,
            enqueue_timeout: config.ack_timeout,
            lag: Histogram::default(),
            full_resends: Count::default(),
            oversized: Count::default(),
            resync,
            in_flight: AtomicU64::new(0),
        }
    }

    /// Updates queued or being sent, over all peers.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Queues an update for a peer. Returns the acknowledgement receiver when `want_ack`, or
    /// `None` when the update could not even be queued (peer down, queue full past the timeout).
    pub(crate) async fn enqueue(
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
        // Counted before the send so a pusher that takes it at once never sees it missing.
        self.in_flight.fetch_add(1, Ordering::AcqRel);
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
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            peer.dropped.inc();
            peer.needs_resync.store(true, Ordering::Release);
            self.resync.notify_one();
            return None;
        }
        rx
    }

    /// Sends a peer's queued updates in batches until cancelled (then flushes what is queued),
    /// up to [`PUSHES_IN_FLIGHT`] batches at once: a write queued while a batch is on the wire
    /// goes out at once instead of waiting for that batch's answer (the tail of the time until
    /// every replica has a write). One session's updates stay in order: an update for a
    /// session whose previous update is still on the wire is held until that batch is
    /// answered (else a change could overtake the create it follows and cost a "send it
    /// whole" round trip, or a destroy overtake a write the writer waits for).
    pub(crate) async fn run_pusher(
        self: Arc<Self>,
        peer: Arc<Peer>,
        mut rx: mpsc::Receiver<Queued>,
        cancel: CancellationToken,
    ) {
        let mut sending = FuturesUnordered::new();
        let mut on_wire: HashSet<SessionId> = HashSet::new();
        let mut held: Vec<Queued> = Vec::new();
        loop {
            if sending.len() >= PUSHES_IN_FLIGHT || held.len() >= self.max_batch {
                // The pipeline is full, or enough waits behind it: an answer first.
                if let Some(ids) = sending.next().await {
                    release(&mut on_wire, ids);
                }
                continue;
            }
            let mut batch: Vec<Queued> = Vec::new();
            let mut waiting = Vec::new();
            for q in held.drain(..) {
                if batch.len() < self.max_batch && !on_wire.contains(&q.update.id()) {
                    batch.push(q);
                } else {
                    waiting.push(q);
                }
            }
            held = waiting;
            if batch.is_empty() {
                let next = tokio::select! {
                    q = rx.recv() => q,
                    Some(ids) = sending.next(), if !sending.is_empty() => {
                        release(&mut on_wire, ids);
                        continue;
                    }
                    _ = cancel.cancelled() => None,
                };
                let Some(q) = next else {
                    // Cancelled (graceful shutdown) or the queue closed: finish what is on the
                    // wire, then flush what waits, in order, once.
                    while sending.next().await.is_some() {}
                    while let Ok(q) = rx.try_recv() {
                        held.push(q);
                    }
                    while !held.is_empty() {
                        let n = held.len().min(self.max_batch);
                        let batch: Vec<Queued> = held.drain(..n).collect();
                        self.send_batch(&peer, batch).await;
                    }
                    return;
                };
                if on_wire.contains(&q.update.id()) {
                    held.push(q);
                    continue;
                }
                batch.push(q);
            }
            while batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(q) if on_wire.contains(&q.update.id()) => held.push(q),
                    Ok(q) => batch.push(q),
                    Err(_) => break,
                }
            }
            let ids: Vec<SessionId> = batch.iter().map(|q| q.update.id()).collect();
            on_wire.extend(ids.iter().copied());
            let (me, peer) = (&self, &peer);
            sending.push(async move {
                me.send_batch(peer, batch).await;
                ids
            });
        }
    }

    async fn send_batch(&self, peer: &Arc<Peer>, batch: Vec<Queued>) {
        let n = batch.len() as u64;
        self.send_coalesced(peer, batch).await;
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
    }

    async fn send_coalesced(&self, peer: &Arc<Peer>, batch: Vec<Queued>) {
        peer.push_queued.add(batch.len() as u64);
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
        let (batches, oversized) =
            crate::wire::push_batches(updates, self.max_batch, self.max_batch_bytes, self.max_body);
        for u in &oversized {
            self.oversized.inc();
            tracing::error!(
                session = %u.id().log_hash(),
                peer = %peer.id,
                max_body_bytes = self.max_body,
                "a session update is larger than a peer accepts; it is not replicated"
            );
            failed.push(u.id());
        }
        let mut ok = true;
        for batch in batches {
            let (sent, batch_failed, batch_gone) = self.push_one(peer, batch).await;
            ok &= sent;
            failed.extend(batch_failed);
            gone.extend(batch_gone);
        }
        peer.push_updates.add(count);
        if !ok || !failed.is_empty() {
            peer.needs_resync.store(true, Ordering::Release);
            self.resync.notify_one();
        }
        for (id, tx, at) in acks {
            let delivery = if failed.contains(&id) {
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

    /// Pushes one batch (and, if the peer asks, the whole state of sessions it lacked).
    /// Returns whether the batch was delivered, the sessions not delivered, and those the
    /// peer reported destroyed.
    async fn push_one(
        &self,
        peer: &Arc<Peer>,
        batch: PushBatch,
    ) -> (bool, Vec<SessionId>, Vec<SessionId>) {
        let mut failed: Vec<SessionId> = Vec::new();
        let mut gone: Vec<SessionId> = Vec::new();
        let ok = match self.push(peer, &batch).await {
            Ok(ack) => {
                gone = ack.gone;
                if !ack.need_full.is_empty() {
                    // The peer had no copy (or an older one) for some partial updates: send
                    // those sessions whole — this node's copy joined with the update itself,
                    // which this node's copy may not hold (a write forwarded for a session
                    // this node only has a read copy of).
                    let full: Vec<Update> = ack
                        .need_full
                        .iter()
                        .filter_map(|id| {
                            let mut whole = self.store.read(id, |s| s.to_wire_full())?;
                            for u in &batch.updates {
                                if let Update::State(partial) = u
                                    && partial.id == *id
                                {
                                    join(&mut whole, partial.clone());
                                }
                            }
                            Some(Update::State(whole))
                        })
                        .collect();
                    self.full_resends.add(full.len() as u64);
                    if full.len() < ack.need_full.len() {
                        // This node has no full state to offer (a write forwarded by a
                        // non-holder reached a peer without a copy): not delivered.
                        failed.extend(
                            ack.need_full
                                .iter()
                                .filter(|id| self.store.read(id, |_| ()).is_none()),
                        );
                    }
                    let (batches, oversized) = crate::wire::push_batches(
                        full,
                        self.max_batch,
                        self.max_batch_bytes,
                        self.max_body,
                    );
                    self.oversized.add(oversized.len() as u64);
                    failed.extend(oversized.iter().map(Update::id));
                    for whole in batches {
                        match self.push(peer, &whole).await {
                            Ok(second) => gone.extend(second.gone),
                            Err(_) => failed.extend(whole.updates.iter().map(Update::id)),
                        }
                    }
                }
                true
            }
            Err(_) => false,
        };
        if !ok {
            failed.extend(batch.updates.iter().map(Update::id));
        }
        (ok, failed, gone)
    }

    async fn push(&self, peer: &Arc<Peer>, batch: &PushBatch) -> Result<PushAck, CallError> {
        peer.pushes.inc();
        if let Some(delay) = self.faults.take_push_delay(peer.id) {
            tokio::time::sleep(delay).await;
        }
        if self.faults.loses_pushes_to(peer.id) {
            peer.push_failures.inc();
            peer.needs_resync.store(true, Ordering::Release);
            return Err(CallError::Cut);
        }
        match self.client.push(peer, batch).await {
            Ok(reply) => {
                peer.push_bytes.add(reply.sent as u64);
                self.members.member_answered(peer);
                Ok(reply.body)
            }
            Err(e) => {
                tracing::debug!(peer = %peer.id, error = %e, "push failed");
                peer.push_failures.inc();
                peer.needs_resync.store(true, Ordering::Release);
                // Refused: confirm with a probe before the waiting writers hear of the failure,
                // so that when they look the peer is already down and they route around it.
                crate::failure::after_failed_call(
                    &self.members,
                    &self.client,
                    &self.gossip,
                    peer,
                    &e,
                )
                .await;
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
    // The joined update needs everything either needed: the older base.
    a.base = if a.full || b.full {
        0
    } else {
        a.base.min(b.base)
    };
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
