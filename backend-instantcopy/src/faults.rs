//! Fault injection for tests: cut this node off from chosen peers (both directions, every kind
//! of traffic, the nodes staying alive), silently lose the pushes to a peer, or hold the next
//! push to a peer back for a while (a batch that is slow on the wire).
//!
//! Always compiled (a check is one relaxed atomic load when no fault is set), but only the
//! `testing` feature exposes a way to set one ([`InstantCopyNode::faults`](crate::InstantCopyNode::faults)).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

use crate::config::NodeId;

/// The faults injected into one node.
#[derive(Debug, Default)]
pub struct Faults {
    any: AtomicBool,
    cut: RwLock<HashSet<NodeId>>,
    lose_pushes: RwLock<HashSet<NodeId>>,
    refuse_sync: RwLock<HashSet<NodeId>>,
    slow_push: RwLock<Option<(NodeId, Duration)>>,
    pause_anti_entropy: AtomicBool,
}

impl Faults {
    fn refresh(&self) {
        let any = !self.cut.read().is_empty()
            || !self.lose_pushes.read().is_empty()
            || !self.refuse_sync.read().is_empty()
            || self.slow_push.read().is_some();
        self.any.store(any, Ordering::Release);
    }

    /// Cuts the link to `peer` in both directions: gossip datagrams to and from it are dropped,
    /// calls to it time out, and its requests to this node go unanswered until they time out.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn cut(&self, peer: NodeId) {
        self.cut.write().insert(peer);
        self.refresh();
    }

    /// Restores the link to `peer`.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn heal(&self, peer: NodeId) {
        self.cut.write().remove(&peer);
        self.refresh();
    }

    /// Loses every push batch to `peer` (as if each were dropped on the way), while everything
    /// else still flows: what anti-entropy exists to repair.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn lose_pushes_to(&self, peer: NodeId) {
        self.lose_pushes.write().insert(peer);
        self.refresh();
    }

    /// Holds the next push batch to `peer` back for `delay` before it is sent (once; later
    /// batches go at once): a batch slow on the wire that later ones may overtake.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn slow_next_push_to(&self, peer: NodeId, delay: Duration) {
        *self.slow_push.write() = Some((peer, delay));
        self.refresh();
    }

    /// Stops losing pushes to `peer`.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn deliver_pushes_to(&self, peer: NodeId) {
        self.lose_pushes.write().remove(&peer);
        self.refresh();
    }

    /// Answers anti-entropy requests from `peer` with 503 (a node too busy to help a peer
    /// sync): that peer's initial sync cannot finish while this lasts.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn refuse_sync_from(&self, peer: NodeId) {
        self.refuse_sync.write().insert(peer);
        self.refresh();
    }

    /// Stops this node's background anti-entropy passes (its drain and its answers to others'
    /// exchanges still work), so a test can set up copies that differ.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn pause_anti_entropy(&self, paused: bool) {
        self.pause_anti_entropy.store(paused, Ordering::Release);
    }

    /// True while background anti-entropy is paused.
    pub(crate) fn anti_entropy_paused(&self) -> bool {
        self.pause_anti_entropy.load(Ordering::Acquire)
    }

    /// Removes every fault.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn clear(&self) {
        self.cut.write().clear();
        self.lose_pushes.write().clear();
        self.refuse_sync.write().clear();
        *self.slow_push.write() = None;
        self.pause_anti_entropy.store(false, Ordering::Release);
        self.refresh();
    }

    fn active(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// True when traffic to `peer` must be dropped.
    pub(crate) fn drops_to(&self, peer: NodeId) -> bool {
        self.active() && self.cut.read().contains(&peer)
    }

    /// True when traffic from `peer` must be dropped.
    pub(crate) fn drops_from(&self, peer: NodeId) -> bool {
        self.drops_to(peer)
    }

    /// True when anti-entropy requests from `peer` must be refused.
    pub(crate) fn refuses_sync_from(&self, peer: NodeId) -> bool {
        self.active() && self.refuse_sync.read().contains(&peer)
    }

    /// How long to hold this push to `peer` back (taking the one-shot fault), if at all.
    pub(crate) fn take_push_delay(&self, peer: NodeId) -> Option<Duration> {
        if !self.active() {
            return None;
        }
        let mut slow = self.slow_push.write();
        let delay = match *slow {
            Some((p, d)) if p == peer => d,
            _ => return None,
        };
        *slow = None;
        drop(slow);
        self.refresh();
        Some(delay)
    }

    /// True when pushes to `peer` must be lost.
    pub(crate) fn loses_pushes_to(&self, peer: NodeId) -> bool {
        self.active() && self.lose_pushes.read().contains(&peer)
    }
}
