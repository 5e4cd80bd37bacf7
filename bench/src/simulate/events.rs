//! The simulation's clock and event queue.
//!
//! Owns virtual time (nanoseconds from 0) and the order events happen in: earliest first, and
//! among events at the same instant, the one scheduled first (a sequence number), so a run
//! never depends on anything but its inputs. Also owns the event vocabulary ([`Ev`]).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Virtual time, ns.
pub type Ns = u64;

/// Nanoseconds in a microsecond-valued parameter (rounded to whole ns).
pub fn us(value: f64) -> Ns {
    (value * 1000.0).round().max(0.0) as Ns
}

/// Nanoseconds in a millisecond-valued parameter.
pub fn ms(value: f64) -> Ns {
    (value * 1_000_000.0).round().max(0.0) as Ns
}

/// Something that happens at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ev {
    /// A user sends its next request.
    UserSend {
        /// The user.
        user: u32,
    },
    /// A request reaches its node.
    RequestArrive {
        /// The request.
        req: u32,
    },
    /// A fetch reaches the asked peer.
    FetchArrive {
        /// The fetch.
        fetch: u32,
        /// The peer asked.
        peer: u32,
    },
    /// A fetch's answer reaches the asking node.
    FetchReply {
        /// The fetch.
        fetch: u32,
        /// The version of the copy the peer had (0: none).
        version: u64,
    },
    /// A response reaches its user.
    Response {
        /// The user.
        user: u32,
    },
    /// An idle pusher with queued updates takes a batch.
    PushKick {
        /// The pusher (`src * n + dst`).
        pusher: u32,
    },
    /// A push batch reaches its peer.
    BatchArrive {
        /// The pusher.
        pusher: u32,
    },
    /// The peer has handled (merged) the batch.
    BatchApply {
        /// The pusher.
        pusher: u32,
    },
    /// The batch's acknowledgement reaches the sender.
    AckArrive {
        /// The pusher.
        pusher: u32,
    },
    /// A node's SWIM probe tick.
    ProbeTick {
        /// The node.
        node: u32,
    },
    /// A node's periodic-gossip tick.
    GossipTick {
        /// The node.
        node: u32,
    },
    /// A node's suspicion of the dead node times out.
    DownTimer {
        /// The node.
        node: u32,
    },
    /// A gossip message or piggybacked update saying the dead node is down reaches a node.
    LearnDown {
        /// The node.
        node: u32,
    },
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    at: Ns,
    seq: u64,
    ev: Ev,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: reverse, so the earliest (then first scheduled) pops first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The event queue and the current virtual time.
#[derive(Debug, Default)]
pub struct Queue {
    heap: BinaryHeap<Entry>,
    seq: u64,
    now: Ns,
    processed: u64,
}

impl Queue {
    /// The current virtual time.
    pub fn now(&self) -> Ns {
        self.now
    }

    /// Schedules `ev` at `at` (never before now).
    pub fn at(&mut self, at: Ns, ev: Ev) {
        self.seq += 1;
        self.heap.push(Entry {
            at: at.max(self.now),
            seq: self.seq,
            ev,
        });
    }

    /// Schedules `ev` `delay` after now.
    pub fn after(&mut self, delay: Ns, ev: Ev) {
        self.at(self.now.saturating_add(delay), ev);
    }

    /// The next event, advancing the clock to it.
    pub fn pop(&mut self) -> Option<Ev> {
        let e = self.heap.pop()?;
        self.now = e.at;
        self.processed += 1;
        Some(e.ev)
    }

    /// Events processed so far.
    pub fn processed(&self) -> u64 {
        self.processed
    }

    /// True when nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Drops every scheduled event (the clock stays).
    pub fn clear(&mut self) {
        self.heap.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_then_in_scheduling_order() {
        let mut q = Queue::default();
        q.at(10, Ev::UserSend { user: 1 });
        q.at(5, Ev::UserSend { user: 2 });
        q.at(10, Ev::UserSend { user: 3 });
        q.at(5, Ev::UserSend { user: 4 });
        let order: Vec<Ev> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            [2, 4, 1, 3].map(|user| Ev::UserSend { user }).to_vec()
        );
        assert_eq!(q.now(), 10);
        q.after(0, Ev::UserSend { user: 9 });
        q.at(3, Ev::UserSend { user: 8 }); // in the past: runs now, after the first
        assert_eq!(q.pop(), Some(Ev::UserSend { user: 9 }));
        assert_eq!(q.pop(), Some(Ev::UserSend { user: 8 }));
        assert_eq!(q.now(), 10);
    }
}
