//! Anti-entropy: every pair of members periodically compares what they should both hold and
//! repairs what differs, so a replica that missed updates (a lost batch, a dropped queue entry,
//! a short partition, a restart) converges without any client touching the session.
//!
//! Owns the digest exchange and the repair it leads to. Each side lists the sessions it
//! believes the two share (every session with `replication = "all"`; with `replication = k`,
//! those whose placement names the other node; plus every tombstone) as 32-byte items: the
//! session id and a 128-bit digest of its state ([`SessionState::digest`]). The two lists are
//! reconciled with range-based set reconciliation (the `negentropy` crate): fingerprints of id
//! ranges are compared and only differing ranges are split further, so the bytes exchanged
//! follow the number of differences, not the number of sessions. Then the initiator pushes its
//! state of every session that differs (or its tombstone) and pulls the responder's; both
//! merges are joins, so the two copies end identical.
//!
//! The same exchange is the background sync of a node that starts or restarts (it pulls its
//! share, in batches, while serving), and the hand-off of a draining node (it pushes what the
//! others lack, scope [`SyncScope::Everything`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use negentropy::{Id, Negentropy, NegentropyStorageVector};
use parking_lot::Mutex;
use session_core::{SessionId, now_millis};

use crate::client::CallError;
use crate::config::{NodeId, Replication};
use crate::membership::Peer;
use crate::metrics::Count;
use crate::node::Shared;
use crate::state::SessionState;
use crate::wire::{FetchResponse, SyncRequest, SyncScope, Update};

/// Largest reconciliation message (negentropy splits larger exchanges into more rounds).
const FRAME_LIMIT: u64 = 128 * 1024;
/// How long a responder keeps the snapshot it reconciles one exchange against.
const SNAPSHOT_TTL: Duration = Duration::from_secs(10);
/// Most rounds of one exchange (each round at least halves what is left to compare).
const MAX_ROUNDS: usize = 64;
/// The digest half of a tombstone's item: a destroyed session is the same everywhere.
const TOMBSTONE: [u8; 16] = [0xff; 16];

/// Anti-entropy counters.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct SyncCounters {
    /// Exchanges completed (as initiator).
    pub rounds: Count,
    /// Exchanges that failed (the peer did not answer, or answered garbage).
    pub failures: Count,
    /// Sessions (or tombstones) found different or missing on one side.
    pub differences: Count,
    /// Sessions and tombstones this node pushed to repair a difference.
    pub pushed: Count,
    /// Sessions and tombstones this node pulled to repair a difference.
    pub pulled: Count,
    /// Bytes of digest exchange sent and received (both roles; repairs not included).
    pub digest_bytes: Count,
    /// Bytes of repair pushes and pulls sent and received.
    pub repair_bytes: Count,
}

/// What one exchange with one peer found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncReport {
    /// Items that differed (present on one side only, or with different digests).
    pub differences: usize,
    /// Sessions and tombstones pushed.
    pub pushed: usize,
    /// Sessions and tombstones pulled.
    pub pulled: usize,
    /// Digest-exchange bytes (both directions).
    pub digest_bytes: usize,
    /// Rounds of the exchange.
    pub rounds: usize,
    /// The peer reported itself safe (see [`Readiness::cluster_safe`](crate::Readiness)).
    pub peer_safe: bool,
    /// When the exchange began (ms): the moment its snapshot of this node's copies was taken,
    /// so what it proves in sync is what this node held then.
    pub started_at: u64,
}

/// One responder-side snapshot: when it was taken, and the items.
type Snapshot = (Instant, Arc<NegentropyStorageVector>);

/// Responder-side snapshots, one per exchange in progress (keyed by initiator and exchange).
#[derive(Default)]
pub(crate) struct Snapshots {
    map: Mutex<HashMap<(NodeId, u64), Snapshot>>,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("open", &self.map.lock().len())
            .finish()
    }
}

fn item(id: &SessionId, digest: [u8; 16]) -> Id {
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(id.as_bytes());
    b[16..].copy_from_slice(&digest);
    Id::from_byte_array(b)
}

fn session_of(item: &Id) -> (SessionId, bool) {
    let mut id = [0u8; 16];
    id.copy_from_slice(&item.as_bytes()[..16]);
    (
        SessionId::from_bytes(id),
        item.as_bytes()[16..] == TOMBSTONE,
    )
}

/// True when this node, as one of the session's holders, believes `peer` should hold a copy
/// too (in `scope`, with `leaving`, a draining node, no longer counted as a holder).
fn in_scope(
    shared: &Shared,
    s: &SessionState,
    peer: NodeId,
    scope: SyncScope,
    leaving: Option<NodeId>,
) -> bool {
    if scope == SyncScope::Everything {
        return true;
    }
    match shared.config.replication {
        Replication::All => true,
        Replication::Backups(k) => {
            // Only a holder's view of the placement counts: a read copy kept on another node
            // (while a holder was down) carries a placement that may be out of date, and must
            // not make anyone believe it should hold the session.
            if leaving.is_none() && !crate::placement::holds(shared, s.placement()) {
                return false;
            }
            let p = match leaving {
                Some(gone) => {
                    crate::placement::without(shared, s.record().id, s.placement(), gone, k)
                }
                None => s.placement().clone(),
            };
            p.owner == peer || p.backups.contains(&peer)
        }
    }
}

/// The items this node offers `peer` for `scope`.
pub(crate) fn items(
    shared: &Shared,
    peer: NodeId,
    scope: SyncScope,
    leaving: Option<NodeId>,
) -> NegentropyStorageVector {
    let now = now_millis();
    let mut storage = NegentropyStorageVector::with_capacity(shared.store.len());
    shared.store.for_each(|s| {
        if !s.record().is_expired(now) && in_scope(shared, s, peer, scope, leaving) {
            let _ = storage.insert(0, item(&s.record().id, s.digest()));
        }
    });
    for (id, _) in shared.store.live_tombstones() {
        let _ = storage.insert(0, item(&id, TOMBSTONE));
    }
    let _ = storage.seal();
    storage
}

impl Snapshots {
    /// Answers one round of an exchange `from` started.
    pub(crate) fn respond(
        &self,
        shared: &Shared,
        from: NodeId,
        req: &SyncRequest,
    ) -> Result<Vec<u8>, negentropy::Error> {
        let now = Instant::now();
        let storage = {
            let mut map = self.map.lock();
            map.retain(|_, (at, _)| now.duration_since(*at) < SNAPSHOT_TTL);
            map.get(&(from, req.session)).map(|(_, s)| s.clone())
        };
        let storage = match storage {
            Some(s) => s,
            None => {
                let s = Arc::new(items(shared, from, req.scope, None));
                self.map
                    .lock()
                    .insert((from, req.session), (now, s.clone()));
                s
            }
        };
        let mut neg = Negentropy::borrowed(&*storage, FRAME_LIMIT)?;
        let out = neg.reconcile(&req.message)?;
        shared
            .sync_counters
            .digest_bytes
            .add((req.message.len() + out.len()) as u64);
        Ok(out)
    }
}

/// What a responder says with each answer: the reconciliation message and its own safety.
pub(crate) fn response(shared: &Shared, message: Vec<u8>) -> crate::wire::SyncResponse {
    crate::wire::SyncResponse {
        message,
        safe: crate::lifecycle::local_safety(shared).is_empty(),
    }
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    /// The peer could not be reached or refused the request.
    #[error(transparent)]
    Call(#[from] CallError),
    /// A reconciliation message did not parse.
    #[error("reconciliation failed: {0}")]
    Protocol(#[from] negentropy::Error),
    /// The exchange did not finish in `MAX_ROUNDS` rounds.
    #[error("reconciliation did not converge in {MAX_ROUNDS} rounds")]
    TooManyRounds,
}

/// Runs one exchange with `peer` as initiator and repairs what differs: pushes this node's
/// state of every differing session, and (when `pull`) pulls the peer's. `leaving`: this node
/// is draining, so placements are judged without it.
pub(crate) async fn exchange(
    shared: &Shared,
    peer: &Arc<Peer>,
    scope: SyncScope,
    pull: bool,
    leaving: Option<NodeId>,
) -> Result<SyncReport, SyncError> {
    let result = exchange_inner(shared, peer, scope, pull, leaving).await;
    match &result {
        Ok(r) => {
            shared.sync_counters.rounds.inc();
            shared.sync_counters.differences.add(r.differences as u64);
            if r.differences > 0 {
                tracing::debug!(peer = %peer.id, ?r, "anti-entropy repaired differences");
            }
        }
        Err(e) => {
            shared.sync_counters.failures.inc();
            tracing::debug!(peer = %peer.id, error = %e, "anti-entropy exchange failed");
        }
    }
    result
}

async fn exchange_inner(
    shared: &Shared,
    peer: &Arc<Peer>,
    scope: SyncScope,
    pull: bool,
    leaving: Option<NodeId>,
) -> Result<SyncReport, SyncError> {
    // A draining node lists what the peer should hold once it is gone, and asks the peer to
    // compare against everything it holds.
    let local_scope = if leaving.is_some() {
        SyncScope::Shared
    } else {
        scope
    };
    let started_at = now_millis();
    let storage = items(shared, peer.id, local_scope, leaving);
    let mut neg = Negentropy::owned(storage, FRAME_LIMIT)?;
    let mut message = neg.initiate()?;
    let mut session = [0u8; 8];
    session_core::fill_random(&mut session);
    let session = u64::from_le_bytes(session);
    let mut have = Vec::new();
    let mut need = Vec::new();
    let mut report = SyncReport {
        started_at,
        ..SyncReport::default()
    };
    loop {
        report.rounds += 1;
        if report.rounds > MAX_ROUNDS {
            return Err(SyncError::TooManyRounds);
        }
        let req = SyncRequest {
            session,
            scope,
            message,
        };
        let reply = shared.client.sync(peer, &req).await?;
        report.digest_bytes += reply.sent + reply.received;
        shared
            .sync_counters
            .digest_bytes
            .add((reply.sent + reply.received) as u64);
        report.peer_safe = reply.body.safe;
        match neg.reconcile_with_ids(&reply.body.message, &mut have, &mut need)? {
            Some(next) => message = next,
            None => break,
        }
    }
    shared.members.member_answered(peer);
    report.differences = have.len() + need.len();
    report.pushed = push_items(shared, peer, &have).await?;
    if pull {
        report.pulled = pull_items(shared, peer, &need).await?;
    }
    Ok(report)
}

/// Pushes this node's state (or tombstone) of each item's session, in batches.
async fn push_items(shared: &Shared, peer: &Arc<Peer>, items: &[Id]) -> Result<usize, CallError> {
    let tombstones: HashMap<SessionId, u64> = shared.store.live_tombstones().into_iter().collect();
    let mut updates: Vec<Update> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for it in items {
        let (id, _) = session_of(it);
        if !seen.insert(id) {
            continue;
        }
        if let Some(until) = tombstones.get(&id) {
            updates.push(Update::Destroy { id, until: *until });
        } else if let Some(full) = shared.store.read(&id, |s| s.to_wire_full()) {
            updates.push(Update::State(full));
        }
    }
    let mut pushed = 0;
    let config = &shared.config;
    let (batches, oversized) = crate::wire::push_batches(
        updates,
        config.max_batch,
        config.max_batch_bytes(),
        config.max_body_bytes,
    );
    shared.replicator.oversized.add(oversized.len() as u64);
    for batch in batches {
        let reply = shared.client.push(peer, &batch).await?;
        shared
            .sync_counters
            .repair_bytes
            .add((reply.sent + reply.received) as u64);
        pushed += batch.updates.len();
        shared.sync_counters.pushed.add(batch.updates.len() as u64);
        tokio::task::yield_now().await;
    }
    Ok(pushed)
}

/// Pulls the peer's state of each item's session, in batches, and merges it.
async fn pull_items(shared: &Shared, peer: &Arc<Peer>, items: &[Id]) -> Result<usize, CallError> {
    let mut ids: Vec<SessionId> = items.iter().map(|i| session_of(i).0).collect();
    ids.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    ids.dedup();
    ids.retain(|id| !shared.store.is_destroyed(id));
    let mut pulled = 0;
    let mut rest: &[SessionId] = &ids;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(shared.config.max_batch)];
        let reply = shared.client.pull(peer, chunk.to_vec()).await?;
        shared
            .sync_counters
            .repair_bytes
            .add((reply.sent + reply.received) as u64);
        let resp = reply.body;
        let before = pulled;
        for (i, id) in chunk.iter().enumerate() {
            match resp.sessions.get(i) {
                Some(FetchResponse::Found(w)) if w.id == *id => {
                    shared.observe(w);
                    shared.store.apply(w);
                    pulled += 1;
                }
                Some(FetchResponse::Destroyed) => {
                    let until = resp.tombstones.get(i).copied().unwrap_or(0);
                    shared.store.destroy(*id, until);
                    pulled += 1;
                }
                _ => {}
            }
        }
        shared.sync_counters.pulled.add((pulled - before) as u64);
        // The peer answers at most what fits half its body limit; ask again for the rest
        // (at least one id is always answered, so this ends).
        let answered = resp.sessions.len().clamp(1, chunk.len());
        rest = &rest[answered..];
        tokio::task::yield_now().await;
    }
    Ok(pulled)
}
