//! A node's life in the cluster: joining through its seeds, the background sync that makes a
//! starting (or restarted) node hold its share again, the periodic anti-entropy and rebalancing
//! loop, readiness, and the drain of a graceful shutdown.
//!
//! Owns the phases (`joining` → `syncing` → `ready` → `draining` → `stopped`) and what an
//! orchestrator is told about them ([`Readiness`]): *ready* once the initial sync is done,
//! *cluster safe* once every session this node leads has all its live copies and nothing is
//! left to repair. A node serves requests in every phase but `stopped`; readiness only says
//! when the next node of a rolling restart may go.
//!
//! Past 600 lines because it is one state machine (start checks, initial sync, repair, drain) over
//! one per-peer sync record; split by phase, each file would need all of that state.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use session_core::now_millis;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::antientropy::{self, SyncReport};
use crate::client::CallError;
use crate::config::{NodeId, Replication, split_host_port};
use crate::gossip::GossipCmd;
use crate::membership::{Identity, MemberState};
use crate::node::{Shared, StartError};
use crate::wire::{HelloAck, SyncScope};

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Asking the seeds who the cluster is.
    Joining,
    /// Pulling its share of the sessions from the live holders (serving meanwhile).
    Syncing,
    /// Holds what it should; the next node of a rolling restart may go.
    Ready,
    /// Handing its sessions off before a graceful exit.
    Draining,
    /// Stopped.
    Stopped,
}

impl Phase {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Phase::Joining,
            1 => Phase::Syncing,
            2 => Phase::Ready,
            3 => Phase::Draining,
            _ => Phase::Stopped,
        }
    }
}

/// What the node tells an orchestrator (`GET /readyz` in the demo).
///
/// A node is *ready* once its initial sync is done and it has seen the cluster safe at least
/// once since it started (every alive member reporting that each session it leads has all its
/// live copies): from then on the next node of a rolling restart may go, even a crash would
/// lose no session. Ready is sticky until the node drains, so a later incident elsewhere never
/// takes every node out of a load balancer at once; *cluster safe* is the live view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Readiness {
    /// The phase.
    pub phase: Phase,
    /// The initial sync is done: the node holds its share of the sessions.
    pub synced: bool,
    /// Synced, and the cluster was seen safe since this node started.
    pub ready: bool,
    /// Now: this node and every alive peer (by its last report) are safe — their last
    /// anti-entropy exchanges with every alive member since the last membership change found
    /// nothing left to repair, no update to a member was lost, and every session they lead has
    /// all its live copies: stopping any one node now loses no session even without a drain.
    pub cluster_safe: bool,
    /// Why it is not ready or not cluster safe (empty when both hold).
    pub reason: String,
    /// Alive members, this node included.
    pub members_alive: usize,
    /// Alive peers whose last exchange with this node succeeded since the last membership
    /// change.
    pub peers_synced: usize,
    /// Updates queued or in flight to peers.
    pub pending_updates: u64,
    /// Sessions this node leads whose placement names a holder that is not alive, or that
    /// have fewer copies than the cluster could give them (`replication = k`).
    pub under_replicated: usize,
}

/// What a drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DrainReport {
    /// Sessions this node held when the drain began.
    pub sessions: usize,
    /// Sessions and tombstones sent to peers that lacked them or held an older copy.
    pub handed_off: usize,
    /// Sessions for which no new holder confirmed a copy in time: they survive only where an
    /// earlier copy survives (the next sync of a restarted node recovers those).
    pub left_behind: usize,
    /// Alive peers the drain handed off to.
    pub peers: usize,
    /// How long the drain took (ms).
    pub elapsed_ms: u64,
    /// The drain stopped at `drain_timeout`.
    pub timed_out: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct PeerSync {
    /// When the last successful exchange with the peer began (ms).
    ok_at: u64,
    /// Differences it still found (0: in sync, or all repaired).
    unrepaired: usize,
    /// The peer said it was safe in that exchange.
    peer_safe: bool,
}

/// Phase, sync bookkeeping and the urgent-sync queue.
#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    phase: AtomicU8,
    urgent: Mutex<HashSet<NodeId>>,
    wake: Arc<Notify>,
    peers: Mutex<HashMap<NodeId, PeerSync>>,
    /// When the membership last changed in a way that matters for placement (ms).
    changed_at: AtomicU64,
    under_replicated: AtomicUsize,
    /// When `under_replicated` was last computed (ms).
    under_at: AtomicU64,
    initial_reason: Mutex<String>,
    /// The cluster was seen safe since start (ready is sticky from then on).
    seen_safe: std::sync::atomic::AtomicBool,
    /// This node keeps a copy of a session it no longer holds: hand it off soon.
    leftovers: std::sync::atomic::AtomicBool,
}

impl Lifecycle {
    /// A lifecycle whose sync loop also wakes on `wake` (the replicator notifies it when an
    /// update could not be delivered).
    pub(crate) fn new(wake: Arc<Notify>) -> Self {
        Lifecycle {
            wake,
            ..Lifecycle::default()
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn set_phase(&self, p: Phase) {
        let v = match p {
            Phase::Joining => 0,
            Phase::Syncing => 1,
            Phase::Ready => 2,
            Phase::Draining => 3,
            Phase::Stopped => 4,
        };
        self.phase.store(v, Ordering::Release);
    }

    pub(crate) fn stopped(&self) {
        self.set_phase(Phase::Stopped);
    }

    /// Asks the sync loop to exchange with `peer` as soon as it can (it came back, restarted or
    /// is new), and notes that the membership changed.
    pub(crate) fn urgent_sync(&self, peer: NodeId) {
        self.changed_at.store(now_millis(), Ordering::Release);
        self.urgent.lock().insert(peer);
        self.wake.notify_one();
    }

    /// Notes a membership change (a member went down or left).
    pub(crate) fn membership_changed(&self) {
        self.changed_at.store(now_millis(), Ordering::Release);
    }

    /// Notes that a copy of a session this node no longer holds waits to be handed off.
    pub(crate) fn leftovers_waiting(&self) {
        if !self.leftovers.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    fn record(&self, peer: NodeId, report: &SyncReport) {
        let unrepaired = report
            .differences
            .saturating_sub(report.pushed + report.pulled);
        self.peers.lock().insert(
            peer,
            PeerSync {
                ok_at: report.started_at,
                unrepaired,
                peer_safe: report.peer_safe,
            },
        );
    }
}

/// Resolves every seed (`host:port`, DNS names allowed, each to all its addresses), leaving out
/// this node's own addresses.
async fn resolve_seeds(shared: &Shared) -> Vec<SocketAddr> {
    let me = shared.members.identity().addr;
    let bound = shared.config.cluster_addr;
    let mut out: Vec<SocketAddr> = Vec::new();
    for seed in shared.config.seed_list() {
        if split_host_port(&seed).is_err() {
            continue;
        }
        match tokio::net::lookup_host(seed.as_str()).await {
            Ok(addrs) => {
                for a in addrs {
                    if a != me && a != bound && !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
            Err(e) => tracing::warn!(seed = %seed, error = %e, "cannot resolve seed"),
        }
    }
    out
}

/// Introduces this node to one seed address. Returns the members the seed knows (itself first),
/// or the live holder of this node's id.
async fn hello(
    shared: &Shared,
    addr: SocketAddr,
) -> Result<Vec<Identity>, Result<Identity, CallError>> {
    let me = shared.members.identity();
    match shared.client.hello(addr, &me).await {
        Ok(HelloAck::Welcome { identity, members }) => {
            if identity.id == me.id {
                // Our own other address (the seed name resolved to this node too).
                return Ok(Vec::new());
            }
            let mut all = vec![identity];
            all.extend(members);
            Ok(all)
        }
        Ok(HelloAck::DuplicateId { holder }) => Err(Ok(holder)),
        Err(e) => Err(Err(e)),
    }
}

/// Checks whether another live process uses this node's id: a member list naming this id under
/// another generation at another address is either this node's previous run (dead: it does not
/// answer there) or a duplicate (it answers as this id).
async fn check_duplicate(shared: &Shared, known: &Identity) -> Result<(), StartError> {
    let me = shared.members.identity();
    if known.id != me.id || known.generation == me.generation || known.addr == me.addr {
        return Ok(());
    }
    // Ask it directly (a hello: the one request a node accepts from its own id, to answer
    // whether that id is taken).
    match shared.client.hello(known.addr, &me).await {
        Ok(HelloAck::DuplicateId { holder }) => {
            Err(StartError::DuplicateNodeId { id: me.id, holder })
        }
        _ => Ok(()),
    }
}

/// The join: asks every seed who the cluster is (concurrently, each within `request_timeout`),
/// refuses to go on if a live member already uses this node's id, and announces this node to
/// every member learned. Returns the members to sync with.
pub(crate) async fn join(shared: &Shared) -> Result<Vec<Identity>, StartError> {
    shared.lifecycle.set_phase(Phase::Joining);
    let seeds = resolve_seeds(shared).await;
    let answers = futures::future::join_all(seeds.iter().map(|a| hello(shared, *a))).await;
    let mut learned: Vec<Identity> = Vec::new();
    for (addr, answer) in seeds.iter().zip(answers) {
        match answer {
            Ok(ids) => {
                for id in ids {
                    check_duplicate(shared, &id).await?;
                    if id.id != shared.config.node_id && !learned.iter().any(|l| l.id == id.id) {
                        learned.push(id);
                    }
                }
            }
            Err(Ok(holder)) => {
                shared.members.duplicate_claims.inc();
                return Err(StartError::DuplicateNodeId {
                    id: shared.config.node_id,
                    holder,
                });
            }
            Err(Err(e)) => tracing::debug!(seed = %addr, error = %e, "seed did not answer"),
        }
    }
    for id in &learned {
        // A seed that answered is alive, and so (a moment ago) were the members it listed:
        // serve with that knowledge at once; the failure detector confirms or corrects it.
        shared.members.member_up(id);
        let _ = shared.gossip.send(GossipCmd::Announce(id.clone()));
    }
    if seeds.is_empty() {
        tracing::info!("no seeds configured: starting a new cluster");
    } else if learned.is_empty() {
        tracing::warn!(seeds = ?seeds, "no seed answered: starting as the first member");
    } else {
        tracing::info!(members = learned.len(), "joined through seeds");
    }
    Ok(learned)
}

/// Re-resolves the seeds every `seed_refresh_interval` and introduces this node to addresses
/// that are not alive members (members that appeared since, or the other side of a healed
/// partition).
pub(crate) async fn run_seed_refresh(shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(shared.config.seed_refresh_interval) => {}
            _ = cancel.cancelled() => return,
        }
        let known: Vec<SocketAddr> = shared
            .members
            .all()
            .iter()
            .filter(|p| p.is_up())
            .map(|p| p.addr())
            .collect();
        for addr in resolve_seeds(&shared).await {
            if known.contains(&addr) {
                continue;
            }
            if let Ok(ids) = hello(&shared, addr).await {
                for id in ids {
                    if id.id != shared.config.node_id && !shared.members.is_up(id.id) {
                        let _ = shared.gossip.send(GossipCmd::Announce(id));
                    }
                }
            }
        }
    }
}

/// One anti-entropy exchange with every alive peer.
pub(crate) async fn anti_entropy_round(shared: &Shared) -> Vec<(NodeId, SyncReport)> {
    let mut out = Vec::new();
    for peer in shared.members.up_peers() {
        if let Ok(r) = antientropy::exchange(shared, &peer, SyncScope::Shared, true, None).await {
            shared.lifecycle.record(peer.id, &r);
            peer.needs_resync
                .store(false, std::sync::atomic::Ordering::Release);
            out.push((peer.id, r));
        }
    }
    out
}

/// The initial sync, then the anti-entropy loop: every `anti_entropy_interval` (sooner for a
/// peer that came back, restarted or missed updates), an exchange with every alive peer; then
/// rebalancing and the cluster-safe check.
pub(crate) async fn run_sync(
    shared: Arc<Shared>,
    targets: Vec<Identity>,
    cancel: CancellationToken,
) {
    initial_sync(&shared, &targets, &cancel).await;
    if cancel.is_cancelled() {
        return;
    }
    let interval = shared.config.anti_entropy_interval;
    let mut next_full = Instant::now();
    loop {
        // Until the node has seen the cluster safe once, it asks its peers often (their
        // answers carry their safety), so a rolling restart waits no longer than it must.
        if !shared.lifecycle.seen_safe.load(Ordering::Acquire) {
            let _ = readiness(&shared);
            if !shared.lifecycle.seen_safe.load(Ordering::Acquire) {
                let poll = (interval / 5).min(Duration::from_millis(250));
                next_full = next_full.min(Instant::now() + poll);
            }
        }
        // Spread the pairs' exchanges over time (a tenth of the wait, so polling stays quick).
        let wait = next_full.saturating_duration_since(Instant::now());
        let jitter = crate::store::random_jitter(wait / 10);
        tokio::select! {
            _ = tokio::time::sleep_until((next_full + jitter).into()) => {}
            _ = shared.lifecycle.wake.notified() => {}
            _ = cancel.cancelled() => return,
        }
        if shared.lifecycle.phase() == Phase::Draining {
            return;
        }
        if shared.faults.anti_entropy_paused() {
            continue;
        }
        let urgent: Vec<NodeId> = std::mem::take(&mut *shared.lifecycle.urgent.lock())
            .into_iter()
            .collect();
        // A membership change makes every pair's last exchange out of date: visit everyone.
        let full = Instant::now() >= next_full || !urgent.is_empty();
        let peers: Vec<_> = shared
            .members
            .up_peers()
            .into_iter()
            .filter(|p| {
                full || urgent.contains(&p.id)
                    || p.needs_resync.load(std::sync::atomic::Ordering::Acquire)
            })
            .collect();
        for peer in peers {
            if cancel.is_cancelled() {
                return;
            }
            match antientropy::exchange(&shared, &peer, SyncScope::Shared, true, None).await {
                Ok(r) => {
                    shared.lifecycle.record(peer.id, &r);
                    peer.needs_resync
                        .store(false, std::sync::atomic::Ordering::Release);
                }
                Err(_) => {
                    shared.lifecycle.peers.lock().remove(&peer.id);
                }
            }
        }
        // However often it is woken, the loop pauses between passes, so failing pushes cannot
        // turn anti-entropy into a busy loop.
        tokio::select! {
            _ = tokio::time::sleep((interval / 10).min(Duration::from_millis(200))) => {}
            _ = cancel.cancelled() => return,
        }
        if full || shared.lifecycle.leftovers.swap(false, Ordering::AcqRel) {
            let dropped = crate::repair::hand_off_leftovers(&shared).await;
            if dropped > 0 {
                tracing::debug!(
                    dropped,
                    "handed off and forgot copies of sessions this node no longer holds"
                );
            }
        }
        if full {
            next_full = Instant::now() + interval;
            let moved = crate::repair::rebalance(&shared, interval).await;
            let under = crate::repair::under_replicated(&shared);
            shared
                .lifecycle
                .under_replicated
                .store(under, Ordering::Release);
            if moved > 0 {
                tracing::info!(moved, "rebalanced placements onto new members");
            }
        }
    }
}

async fn initial_sync(shared: &Shared, targets: &[Identity], cancel: &CancellationToken) {
    if targets.is_empty() {
        shared.members.settle();
        shared.lifecycle.set_phase(Phase::Ready);
        return;
    }
    shared.lifecycle.set_phase(Phase::Syncing);
    let started = Instant::now();
    // Wait (up to join_timeout) for gossip to confirm the members the seeds named.
    let deadline = started + shared.config.join_timeout;
    while Instant::now() < deadline && !targets.iter().all(|t| shared.members.is_up(t.id)) {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = cancel.cancelled() => return,
        }
    }
    shared.members.settle();
    let mut pending: Vec<NodeId> = targets.iter().map(|t| t.id).collect();
    let mut pulled = 0;
    let mut attempt = 0u32;
    while !pending.is_empty() {
        if cancel.is_cancelled() {
            return;
        }
        let mut still = Vec::new();
        for id in pending {
            let Some(peer) = shared.members.get(id).filter(|p| p.is_up()) else {
                continue; // not alive (any more): nothing to sync from it
            };
            match antientropy::exchange(shared, &peer, SyncScope::Shared, true, None).await {
                Ok(r) => {
                    shared.lifecycle.record(id, &r);
                    pulled += r.pulled;
                }
                Err(e) => {
                    tracing::debug!(peer = %id, error = %e, "initial sync with peer failed; retrying");
                    still.push(id);
                }
            }
        }
        *shared.lifecycle.initial_reason.lock() =
            format!("syncing: {} peer(s) left to sync from", still.len());
        pending = still;
        if !pending.is_empty() {
            attempt += 1;
            let backoff = Duration::from_millis(50 * u64::from(attempt.min(20)));
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }
    shared.lifecycle.set_phase(Phase::Ready);
    tracing::info!(
        sessions = shared.store.len(),
        pulled,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "initial sync done: ready"
    );
}

/// Sessions this node leads that are short of copies, recomputed at most every 100 ms.
fn under_replicated(shared: &Shared) -> usize {
    let now = now_millis();
    let l = &shared.lifecycle;
    if now.saturating_sub(l.under_at.load(Ordering::Acquire)) >= 100 {
        l.under_replicated
            .store(crate::repair::under_replicated(shared), Ordering::Release);
        l.under_at.store(now, Ordering::Release);
    }
    l.under_replicated.load(Ordering::Acquire)
}

/// This node's own safety (what it reports to peers in every exchange it answers): synced, no
/// update to an alive peer lost since the last exchange with it, every alive peer exchanged
/// with since the last membership change with nothing left unrepaired, and no session it leads
/// short of copies. Returns the reasons it is not.
pub(crate) fn local_safety(shared: &Shared) -> Vec<String> {
    let mut reasons = Vec::new();
    if shared.lifecycle.phase() != Phase::Ready {
        reasons.push("not synced".to_string());
        return reasons;
    }
    let alive = shared.members.up_peers();
    let changed = shared.lifecycle.changed_at.load(Ordering::Acquire);
    let behind = {
        let peers = shared.lifecycle.peers.lock();
        alive
            .iter()
            .filter(|p| {
                p.needs_resync.load(Ordering::Acquire)
                    || !peers
                        .get(&p.id)
                        .is_some_and(|s| s.ok_at >= changed && s.unrepaired == 0)
            })
            .count()
    };
    if behind > 0 {
        reasons.push(format!(
            "{behind} of {} alive peers not yet in sync since the last membership change",
            alive.len()
        ));
    }
    let under = under_replicated(shared);
    if under > 0 {
        reasons.push(format!("{under} sessions short of copies"));
    }
    reasons
}

/// The node's readiness now.
pub(crate) fn readiness(shared: &Shared) -> Readiness {
    let phase = shared.lifecycle.phase();
    let alive = shared.members.up_peers();
    let changed = shared.lifecycle.changed_at.load(Ordering::Acquire);
    let synced = phase == Phase::Ready;
    let mut reasons = match phase {
        Phase::Joining => vec!["joining the cluster".to_string()],
        Phase::Syncing => vec![shared.lifecycle.initial_reason.lock().clone()],
        Phase::Draining => vec!["draining for shutdown".into()],
        Phase::Stopped => vec!["stopped".into()],
        Phase::Ready => local_safety(shared),
    };
    let (peers_synced, peers_unsafe) = {
        let peers = shared.lifecycle.peers.lock();
        let fresh = |p: &&Arc<crate::membership::Peer>| {
            peers.get(&p.id).filter(|s| s.ok_at >= changed).copied()
        };
        let synced = alive
            .iter()
            .filter(|p| fresh(p).is_some_and(|s| s.unrepaired == 0))
            .count();
        let unsafe_ = alive
            .iter()
            .filter(|p| !fresh(p).is_some_and(|s| s.peer_safe))
            .map(|p| p.id.to_string())
            .collect::<Vec<_>>();
        (synced, unsafe_)
    };
    if synced && !peers_unsafe.is_empty() {
        reasons.push(format!(
            "node{} {} not (yet) reporting every session fully copied",
            if peers_unsafe.len() == 1 { "" } else { "s" },
            peers_unsafe.join(", ")
        ));
    }
    let cluster_safe = synced && reasons.is_empty();
    if cluster_safe {
        shared.lifecycle.seen_safe.store(true, Ordering::Release);
    }
    let ready = synced && shared.lifecycle.seen_safe.load(Ordering::Acquire);
    Readiness {
        phase,
        synced,
        ready,
        cluster_safe,
        reason: reasons.join("; "),
        members_alive: alive.len() + 1,
        peers_synced,
        pending_updates: shared.replicator.in_flight(),
        under_replicated: shared.lifecycle.under_replicated.load(Ordering::Acquire),
    }
}

/// Drains this node (see [`InstantCopyNode::drain`](crate::InstantCopyNode::drain)).
pub(crate) async fn drain(shared: &Shared) -> DrainReport {
    let started = Instant::now();
    let deadline = started + shared.config.drain_timeout;
    shared.lifecycle.set_phase(Phase::Draining);
    let me = shared.members.identity();
    let peers = shared.members.up_peers();
    let mut report = DrainReport {
        sessions: shared.store.len(),
        peers: peers.len(),
        ..DrainReport::default()
    };
    let within = |d: Instant| d.saturating_duration_since(Instant::now());
    // 1. Tell every peer, directly (reliable) and through gossip.
    let notices = futures::future::join_all(peers.iter().map(|p| shared.client.leave(p, &me)));
    let _ = tokio::time::timeout(within(deadline), notices).await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    if shared.gossip.send(GossipCmd::Leave(tx)).is_ok() {
        let _ = tokio::time::timeout(within(deadline), rx).await;
    }
    // 2. Let the push queues empty.
    while shared.replicator.in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // 3. Re-place what this node holds without it, then hand off what the others lack.
    if let Replication::Backups(k) = shared.config.replication {
        for id in shared.store.ids() {
            let Some(current) = shared.store.read(&id, |s| s.placement().clone()) else {
                continue;
            };
            if current.owner != me.id && !current.backups.contains(&me.id) {
                continue;
            }
            let mut next = crate::placement::without(shared, id, &current, me.id, k);
            next.stamp = shared.clock.now();
            shared.store.update(&id, |s| s.set_placement(next));
        }
    }
    let mut covered: HashSet<NodeId> = HashSet::new();
    for peer in &peers {
        let left = within(deadline);
        if left.is_zero() {
            report.timed_out = true;
            break;
        }
        let exchange =
            antientropy::exchange(shared, peer, SyncScope::Everything, false, Some(me.id));
        match tokio::time::timeout(left, exchange).await {
            Ok(Ok(r)) => {
                report.handed_off += r.pushed;
                covered.insert(peer.id);
            }
            Ok(Err(e)) => {
                tracing::warn!(peer = %peer.id, error = %e, "drain: hand-off to peer failed")
            }
            Err(_) => report.timed_out = true,
        }
    }
    // 4. What no new holder confirmed.
    let now = now_millis();
    let mut left_behind = 0;
    shared.store.for_each(|s| {
        if s.record().is_expired(now) {
            return;
        }
        let holders: Vec<NodeId> = match shared.config.replication {
            Replication::All => peers.iter().map(|p| p.id).collect(),
            Replication::Backups(_) => std::iter::once(s.placement().owner)
                .chain(s.placement().backups.iter().copied())
                .filter(|n| *n != me.id)
                .collect(),
        };
        if !holders.iter().any(|h| covered.contains(h)) {
            left_behind += 1;
        }
    });
    report.left_behind = left_behind;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    if report.left_behind == 0 {
        tracing::info!(
            ?report,
            "drained: every session has a copy on an alive member"
        );
    } else {
        tracing::warn!(
            ?report,
            "drain incomplete: some sessions may survive only where an older copy survives"
        );
    }
    report
}

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemberState::Alive => "alive",
            MemberState::Down => "down",
            MemberState::Left => "left",
        })
    }
}
