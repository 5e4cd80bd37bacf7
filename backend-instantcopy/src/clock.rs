//! The node's hybrid logical clock (the `uhlc` crate), producing [`Stamp`]s.

use std::time::Duration;

use uhlc::{HLC, HLCBuilder, ID, NTP64, Timestamp};

use crate::config::NodeId;
use crate::state::Stamp;

/// A hybrid logical clock: physical time when it moves forward, a counter when it does not, and
/// never behind any stamp received from a peer (within the allowed skew). Stamps from one node
/// are unique and increasing; stamps of causally related writes on different nodes are ordered.
pub struct Clock {
    hlc: HLC,
    node: NodeId,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock").field("node", &self.node).finish()
    }
}

impl Clock {
    /// A clock for `node`, refusing to jump ahead for peer stamps more than `max_skew` in the
    /// future.
    pub fn new(node: NodeId, max_skew: Duration) -> Self {
        let id = ID::try_from(node.0.to_le_bytes()).unwrap_or_else(|_| ID::rand());
        Clock {
            hlc: HLCBuilder::new()
                .with_id(id)
                .with_max_delta(max_skew)
                .build(),
            node,
        }
    }

    /// A new stamp, greater than every stamp this clock produced or observed.
    pub fn now(&self) -> Stamp {
        Stamp {
            time: self.hlc.new_timestamp().get_time().as_u64(),
            node: self.node.0,
        }
    }

    /// Observes a peer's stamp. Returns false when it is further in the future than the allowed
    /// skew (the data is still applied; the clock just does not jump).
    pub fn observe(&self, stamp: Stamp) -> bool {
        let Ok(id) = ID::try_from(stamp.node.max(1).to_le_bytes()) else {
            return false;
        };
        self.hlc
            .update_with_timestamp(&Timestamp::new(NTP64(stamp.time), id))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_increase_and_follow_peers() {
        let a = Clock::new(NodeId(1), Duration::from_secs(5));
        let b = Clock::new(NodeId(2), Duration::from_secs(5));
        let s1 = a.now();
        let s2 = a.now();
        assert!(s2 > s1);
        let sb = b.now();
        assert!(a.observe(sb));
        assert!(a.now() > sb, "after observing, local stamps are later");
        let far = Stamp {
            time: sb.time + NTP64::from(Duration::from_secs(3600)).as_u64(),
            node: 2,
        };
        assert!(!a.observe(far), "a stamp an hour ahead is refused");
        assert!(a.now() < far);
    }
}
