//! Who is in the cluster, and what this node knows of each member.
//!
//! Owns the member table: node id → address, generation (process start), state, and the push
//! queue to it. The table is fed by the SWIM failure detector in [`gossip`](crate::gossip)
//! (members coming up, going down, restarting under a new generation), by a draining member's
//! [`Leave`](crate::wire::Leave) notice, and by direct calls that are refused (nothing listens
//! at the member's address any more). Everything else reads it: placement asks who is alive,
//! the read path asks whether a member is *confirmed gone*, replication finds each member's
//! queue here.
//!
//! Node ids are explicit and stable; addresses are learned, only from sealed membership
//! messages, so a token naming a node id can only ever lead to an address a member announced.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use session_core::now_millis;
use tokio::sync::mpsc;

use crate::config::NodeId;
use crate::metrics::Count;
use crate::replication::Queued;

/// A member as the membership protocol knows it: the stable node id, where it listens, and
/// which run of the process it is.
///
/// `generation` is the process's start time (ms): a new generation under a known id is a
/// restart, whose memory is empty. `bump` counts rejoins of one run after a false failure
/// suspicion (the memory is intact). Foca keeps one identity per node id (its `Addr`) and lets
/// the later (generation, bump) win.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// The stable node id.
    pub id: NodeId,
    /// The cluster address peers reach it at (TCP requests, UDP gossip).
    pub addr: SocketAddr,
    /// The process start time (ms since the epoch).
    pub generation: u64,
    /// Rejoins of this process after being declared down.
    pub bump: u32,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node {}@{} gen {}.{}",
            self.id, self.addr, self.generation, self.bump
        )
    }
}

impl foca::Identity for Identity {
    type Addr = NodeId;

    fn renew(&self) -> Option<Self> {
        Some(Identity {
            bump: self.bump.checked_add(1)?,
            ..self.clone()
        })
    }

    fn addr(&self) -> NodeId {
        self.id
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // Later run wins, then later rejoin; the address only breaks an exact tie (two
        // processes started in the same millisecond under one id, which start refuses).
        (self.generation, self.bump, self.addr)
            > (adversary.generation, adversary.bump, adversary.addr)
    }
}

/// What this node believes about a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Answers (directly or through others).
    Alive,
    /// Declared down by the failure detector, or its address refused a connection.
    Down,
    /// Left gracefully (drained and said so).
    Left,
}

impl MemberState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => MemberState::Alive,
            2 => MemberState::Left,
            _ => MemberState::Down,
        }
    }
    fn as_u8(self) -> u8 {
        match self {
            MemberState::Alive => 0,
            MemberState::Down => 1,
            MemberState::Left => 2,
        }
    }
}

/// One other member of the cluster, with its push queue and counters.
#[derive(Debug)]
pub struct Peer {
    /// Its id.
    pub id: NodeId,
    addr: RwLock<SocketAddr>,
    generation: AtomicU64,
    bump: AtomicU64,
    state: AtomicU8,
    /// The last direct connection to its address was refused (no process listens there).
    refused: AtomicBool,
    /// When its state last changed (ms).
    changed_at: AtomicU64,
    /// When it last answered a direct call (ms; 0 = never).
    last_seen: AtomicU64,
    /// Updates to it were dropped while it was unreachable: anti-entropy should visit it soon.
    pub(crate) needs_resync: AtomicBool,
    pub(crate) queue: mpsc::Sender<Queued>,
    /// Push batches sent.
    pub pushes: Count,
    /// Updates taken off its queue, before coalescing (one per write or touch replicated to
    /// it; `push_updates` counts what was sent after coalescing).
    pub push_queued: Count,
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
    /// Where it listens now.
    pub fn addr(&self) -> SocketAddr {
        *self.addr.read()
    }

    /// Its current generation (process start, ms).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Its state.
    pub fn state(&self) -> MemberState {
        MemberState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// True while it is alive.
    pub fn is_up(&self) -> bool {
        self.state() == MemberState::Alive
    }

    /// When it last answered a direct call (ms since the epoch; 0 = never).
    pub fn last_seen(&self) -> u64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// Updates waiting in its queue.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    pub(crate) fn saw_alive(&self) {
        self.last_seen.store(now_millis(), Ordering::Relaxed);
        self.refused.store(false, Ordering::Release);
    }

    fn identity(&self) -> Identity {
        Identity {
            id: self.id,
            addr: self.addr(),
            generation: self.generation(),
            bump: self.bump.load(Ordering::Acquire) as u32,
        }
    }
}

/// A member's state for status pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    /// Its id.
    pub id: u16,
    /// Its cluster address.
    pub addr: String,
    /// Whether it is alive.
    pub up: bool,
    /// `alive`, `down` or `left`.
    pub state: MemberState,
    /// Its generation (process start, ms since the epoch).
    pub generation: u64,
    /// When it last answered a direct call (ms since the epoch; 0 = never).
    pub last_seen: u64,
    /// Updates waiting to be sent to it.
    pub queued: usize,
}

/// A membership change the node reacts to.
#[derive(Debug)]
pub enum PeerEvent {
    /// A member seen for the first time: start its pusher on this queue.
    New(Arc<Peer>, mpsc::Receiver<Queued>),
    /// The member is alive (again).
    Up(NodeId),
    /// The member was declared down.
    Down(NodeId),
    /// The member left gracefully.
    Left(NodeId),
    /// The member restarted (a new generation): its memory is empty.
    Restarted(NodeId),
}

/// How long a member declared down still counts when this node asks whether it sits in the
/// majority of the cluster (see [`Membership::in_majority`]).
const DOWN_MEMORY: Duration = Duration::from_secs(600);

/// The member table.
#[derive(Debug)]
pub struct Membership {
    me: RwLock<Identity>,
    peers: RwLock<Arc<Vec<Arc<Peer>>>>,
    events: mpsc::UnboundedSender<PeerEvent>,
    queue_capacity: usize,
    /// Set once the join phase is over: an unknown node id is then a node that is gone.
    settled: AtomicBool,
    /// Duplicate-id claims seen (another live process using this node's id).
    pub duplicate_claims: Count,
}

impl Membership {
    /// A table holding only this node.
    pub fn new(
        me: Identity,
        queue_capacity: usize,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Self {
        Membership {
            me: RwLock::new(me),
            peers: RwLock::new(Arc::new(Vec::new())),
            events,
            queue_capacity,
            settled: AtomicBool::new(false),
            duplicate_claims: Count::default(),
        }
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.me.read().id
    }

    /// This node's current identity.
    pub fn identity(&self) -> Identity {
        self.me.read().clone()
    }

    pub(crate) fn set_identity(&self, id: Identity) {
        *self.me.write() = id;
    }

    /// Every member this node knows of, in id order (any state).
    pub fn all(&self) -> Arc<Vec<Arc<Peer>>> {
        self.peers.read().clone()
    }

    /// The member with this id.
    pub fn get(&self, id: NodeId) -> Option<Arc<Peer>> {
        self.peers.read().iter().find(|p| p.id == id).cloned()
    }

    /// True for this node and every alive member.
    pub fn is_up(&self, id: NodeId) -> bool {
        id == self.me() || self.peers.read().iter().any(|p| p.id == id && p.is_up())
    }

    /// Alive members (this node excluded).
    pub fn up_peers(&self) -> Vec<Arc<Peer>> {
        self.peers
            .read()
            .iter()
            .filter(|p| p.is_up())
            .cloned()
            .collect()
    }

    /// Alive members' ids (this node excluded), in id order.
    pub fn live_peer_ids(&self) -> Vec<NodeId> {
        self.peers
            .read()
            .iter()
            .filter(|p| p.is_up())
            .map(|p| p.id)
            .collect()
    }

    /// Status of every known member.
    pub fn status(&self) -> Vec<PeerStatus> {
        self.peers
            .read()
            .iter()
            .map(|p| PeerStatus {
                id: p.id.0,
                addr: p.addr().to_string(),
                up: p.is_up(),
                state: p.state(),
                generation: p.generation(),
                last_seen: p.last_seen(),
                queued: p.queued(),
            })
            .collect()
    }

    /// Marks the join phase over (from then on an unknown node id means a node that is gone).
    pub(crate) fn settle(&self) {
        self.settled.store(true, Ordering::Release);
    }

    /// True when this node, with the members it sees alive, is a strict majority of the
    /// members it knows that did not leave (alive ones and those declared down in the last ten
    /// minutes). A node cut off from the others is in a minority: what it sees as down may be
    /// merely unreachable.
    pub fn in_majority(&self) -> bool {
        let now = now_millis();
        let memory = DOWN_MEMORY.as_millis() as u64;
        let (mut alive, mut down) = (1usize, 0usize);
        for p in self.peers.read().iter() {
            match p.state() {
                MemberState::Alive => alive += 1,
                MemberState::Down
                    if now.saturating_sub(p.changed_at.load(Ordering::Relaxed)) < memory =>
                {
                    down += 1
                }
                _ => {}
            }
        }
        alive > down
    }

    /// True when the member is known not to hold anything any more, so a copy only it might
    /// have had is lost rather than out of reach: it left; or its address refused a
    /// connection (no process listens there); or the failure detector declared it down while
    /// this node sits in the majority; or (after the join phase) the id is not known at all.
    /// A member that is merely unreachable — suspected, or down as seen from a minority side
    /// of a partition — is not gone.
    pub fn is_gone(&self, id: NodeId) -> bool {
        if id == self.me() {
            return false;
        }
        match self.get(id) {
            None => self.settled.load(Ordering::Acquire),
            Some(p) => match p.state() {
                MemberState::Alive => false,
                MemberState::Left => true,
                MemberState::Down => p.refused.load(Ordering::Acquire) || self.in_majority(),
            },
        }
    }

    fn insert(&self, identity: &Identity, state: MemberState) -> Arc<Peer> {
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let peer = Arc::new(Peer {
            id: identity.id,
            addr: RwLock::new(identity.addr),
            generation: AtomicU64::new(identity.generation),
            bump: AtomicU64::new(u64::from(identity.bump)),
            state: AtomicU8::new(state.as_u8()),
            refused: AtomicBool::new(false),
            changed_at: AtomicU64::new(now_millis()),
            last_seen: AtomicU64::new(0),
            needs_resync: AtomicBool::new(false),
            queue: tx,
            pushes: Count::default(),
            push_queued: Count::default(),
            push_updates: Count::default(),
            push_bytes: Count::default(),
            push_failures: Count::default(),
            dropped: Count::default(),
        });
        {
            let mut table = self.peers.write();
            let mut next: Vec<Arc<Peer>> = table.iter().cloned().collect();
            next.push(peer.clone());
            next.sort_by_key(|p| p.id);
            *table = Arc::new(next);
        }
        let _ = self.events.send(PeerEvent::New(peer.clone(), rx));
        peer
    }

    fn set_state(&self, peer: &Peer, state: MemberState) -> bool {
        let before = MemberState::from_u8(peer.state.swap(state.as_u8(), Ordering::AcqRel));
        if before == state {
            return false;
        }
        peer.changed_at.store(now_millis(), Ordering::Relaxed);
        let event = match state {
            MemberState::Alive => PeerEvent::Up(peer.id),
            MemberState::Down => {
                peer.needs_resync.store(true, Ordering::Release);
                PeerEvent::Down(peer.id)
            }
            MemberState::Left => PeerEvent::Left(peer.id),
        };
        tracing::info!(peer = %peer.id, addr = %peer.addr(), from = ?before, to = ?state, "member state changed");
        let _ = self.events.send(event);
        true
    }

    /// Adopts `identity` as the member's current one (a first sighting, a restart, a new
    /// address or a rejoin). Returns the member and whether it restarted.
    fn adopt(&self, identity: &Identity) -> (Arc<Peer>, bool) {
        let Some(peer) = self.get(identity.id) else {
            tracing::info!(member = ?identity, "new member");
            return (self.insert(identity, MemberState::Down), false);
        };
        let known = peer.identity();
        if known == *identity {
            return (peer, false);
        }
        if (identity.generation, identity.bump) < (known.generation, known.bump) {
            // Late news about an older run.
            return (peer, false);
        }
        *peer.addr.write() = identity.addr;
        peer.bump.store(u64::from(identity.bump), Ordering::Release);
        let restarted = identity.generation != known.generation;
        if restarted {
            peer.generation
                .store(identity.generation, Ordering::Release);
            peer.refused.store(false, Ordering::Release);
            tracing::info!(old = ?known, new = ?identity, "member restarted: its memory is empty");
            let _ = self.events.send(PeerEvent::Restarted(identity.id));
        }
        (peer, restarted)
    }

    /// The failure detector reports `identity` alive.
    pub(crate) fn member_up(&self, identity: &Identity) {
        if identity.id == self.me() {
            return;
        }
        let (peer, _) = self.adopt(identity);
        if peer.generation() == identity.generation {
            self.set_state(&peer, MemberState::Alive);
        }
    }

    /// The failure detector reports `identity` down (or left: foca cannot tell the two
    /// apart; a [`Leave`](crate::wire::Leave) notice marks it left before this arrives).
    pub(crate) fn member_down(&self, identity: &Identity) {
        let Some(peer) = self.get(identity.id) else {
            return;
        };
        let known = peer.identity();
        if (identity.generation, identity.bump) < (known.generation, known.bump) {
            return; // an older run going down says nothing about the current one
        }
        if peer.state() != MemberState::Left {
            self.set_state(&peer, MemberState::Down);
        }
    }

    /// The failure detector replaced `old` by `new` under one node id.
    pub(crate) fn member_renamed(&self, new: &Identity) {
        if new.id != self.me() {
            self.adopt(new);
        }
    }

    /// A draining member said it is leaving.
    pub(crate) fn member_left(&self, identity: &Identity) {
        let (peer, _) = self.adopt(identity);
        if peer.generation() == identity.generation {
            self.set_state(&peer, MemberState::Left);
        }
    }

    /// A direct connection to the member was refused, and so was a second one: nothing listens
    /// at its address, so that run of it is dead.
    pub(crate) fn member_refused(&self, peer: &Peer) {
        peer.refused.store(true, Ordering::Release);
        if peer.state() == MemberState::Alive {
            self.set_state(peer, MemberState::Down);
        }
    }

    /// A direct call to the member succeeded.
    pub(crate) fn member_answered(&self, peer: &Peer) {
        peer.saw_alive();
    }

    /// The identities this node sees alive (for a [`HelloAck`](crate::wire::HelloAck)).
    pub fn alive_identities(&self) -> Vec<Identity> {
        self.peers
            .read()
            .iter()
            .filter(|p| p.is_up())
            .map(|p| p.identity())
            .collect()
    }

    /// Identity of the member with this id, if known.
    pub fn identity_of(&self, id: NodeId) -> Option<Identity> {
        self.get(id).map(|p| p.identity())
    }

    /// Counts of members by state, for readiness and metrics.
    pub fn counts(&self) -> HashMap<MemberState, usize> {
        let mut out = HashMap::new();
        for p in self.peers.read().iter() {
            *out.entry(p.state()).or_insert(0) += 1;
        }
        out
    }
}

impl std::hash::Hash for MemberState {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_u8().hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity as _;

    fn id(n: u16, generation: u64, bump: u32) -> Identity {
        Identity {
            id: NodeId(n),
            addr: SocketAddr::from(([127, 0, 0, 1], 7000 + n)),
            generation,
            bump,
        }
    }

    fn table() -> (Membership, mpsc::UnboundedReceiver<PeerEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Membership::new(id(1, 100, 0), 8, tx), rx)
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<PeerEvent>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push(match e {
                PeerEvent::New(p, _) => format!("new {}", p.id),
                PeerEvent::Up(n) => format!("up {n}"),
                PeerEvent::Down(n) => format!("down {n}"),
                PeerEvent::Left(n) => format!("left {n}"),
                PeerEvent::Restarted(n) => format!("restarted {n}"),
            });
        }
        out
    }

    #[test]
    fn later_runs_and_rejoins_win_conflicts() {
        assert!(id(2, 200, 0).win_addr_conflict(&id(2, 100, 5)));
        assert!(id(2, 100, 1).win_addr_conflict(&id(2, 100, 0)));
        assert!(!id(2, 100, 0).win_addr_conflict(&id(2, 100, 1)));
        assert_eq!(id(2, 100, 0).renew().map(|i| i.bump), Some(1));
        assert_eq!(id(2, 100, u32::MAX).renew(), None);
    }

    #[test]
    fn restarts_rejoins_and_leaves_produce_the_right_events() {
        let (m, mut rx) = table();
        m.member_up(&id(2, 100, 0));
        assert_eq!(drain(&mut rx), ["new 2", "up 2"]);
        assert!(m.is_up(NodeId(2)));
        // A rejoin after a false suspicion: same run, memory intact.
        m.member_renamed(&id(2, 100, 1));
        assert_eq!(drain(&mut rx), Vec::<String>::new());
        // A restart: new generation.
        m.member_renamed(&id(2, 300, 0));
        assert_eq!(drain(&mut rx), ["restarted 2"]);
        // Late news of the old run going down changes nothing.
        m.member_down(&id(2, 100, 1));
        assert!(m.is_up(NodeId(2)));
        m.member_left(&id(2, 300, 0));
        assert_eq!(drain(&mut rx), ["left 2"]);
        assert!(m.is_gone(NodeId(2)));
        // A down report after the leave keeps it left.
        m.member_down(&id(2, 300, 0));
        assert_eq!(m.get(NodeId(2)).unwrap().state(), MemberState::Left);
    }

    #[test]
    fn gone_needs_a_leave_a_refusal_or_the_majority() {
        let (m, _rx) = table();
        for n in 2..=3 {
            m.member_up(&id(n, 100, 0));
        }
        // Node 1 alone, both others down: a minority, so they may be merely unreachable.
        m.member_down(&id(2, 100, 0));
        m.member_down(&id(3, 100, 0));
        assert!(!m.in_majority());
        assert!(!m.is_gone(NodeId(2)));
        // A refused connection is proof that nothing listens there.
        m.member_refused(&m.get(NodeId(2)).unwrap());
        assert!(m.is_gone(NodeId(2)));
        assert!(!m.is_gone(NodeId(3)));
        // With node 3 back, node 1 is in the majority: node 2's down state is believed.
        m.member_up(&id(3, 100, 0));
        assert!(m.in_majority());
        // Unknown ids count as gone only once the join phase is over.
        assert!(!m.is_gone(NodeId(9)));
        m.settle();
        assert!(m.is_gone(NodeId(9)));
        assert!(!m.is_gone(NodeId(1)), "never this node itself");
    }
}
