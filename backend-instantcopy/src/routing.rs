//! What the token's routing bytes hold: the owner, the backups, and the session version the
//! client last saw; and the rendezvous hashing that picks backups.

use session_core::{SessionId, TokenError};

use crate::config::{MAX_BACKUPS, NodeId};

/// A fresh session id whose first two bytes name `owner`, the node creating it (112 random
/// bits remain). A token carries the owner in its routing anyway; the prefix is for adapters
/// that only see the bare id (a tower-sessions cookie), so a node that misses such a session
/// knows whom to ask. The prefix is not trusted: a forged one names, at worst, another member,
/// costing one fetch, and never an address outside the membership.
pub fn owned_id(owner: NodeId) -> SessionId {
    let mut b = *SessionId::random().as_bytes();
    b[..2].copy_from_slice(&owner.0.to_be_bytes());
    SessionId::from_bytes(b)
}

/// The owner an id from [`owned_id`] names (0, no node, for ids made otherwise).
pub fn owner_of(id: &SessionId) -> NodeId {
    let b = id.as_bytes();
    NodeId(u16::from_be_bytes([b[0], b[1]]))
}

/// Where a session lives, as carried (signed) in the client's token.
///
/// Layout: `owner: u16 BE ‖ version: u64 BE ‖ backups: u16 BE × k` (10 + 2k bytes). Node ids are
/// resolved only through the configured membership; an id that is not a member makes the token
/// invalid, so a client can never make a node contact an address of its choosing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The node that created (or last re-homed) the session.
    pub owner: NodeId,
    /// The session version the client last saw (a hybrid-logical-clock reading). A node whose
    /// copy is older than this fetches a fresh one, so a client always reads its own writes.
    pub version: u64,
    /// Backup holders (empty with `replication = "all"`, where every node holds a copy).
    pub backups: Vec<NodeId>,
}

impl Route {
    /// Encodes to routing bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + 2 * self.backups.len());
        out.extend_from_slice(&self.owner.0.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        for b in &self.backups {
            out.extend_from_slice(&b.0.to_be_bytes());
        }
        out
    }

    /// Decodes routing bytes, checking every node id with `is_member`.
    pub fn decode(bytes: &[u8], is_member: impl Fn(NodeId) -> bool) -> Result<Self, TokenError> {
        if bytes.len() < 10 || (bytes.len() - 10) % 2 != 0 {
            return Err(TokenError::BadRouting(
                "routing bytes have the wrong length",
            ));
        }
        let owner = NodeId(u16::from_be_bytes([bytes[0], bytes[1]]));
        let mut version = [0u8; 8];
        version.copy_from_slice(&bytes[2..10]);
        let backups: Vec<NodeId> = bytes[10..]
            .chunks_exact(2)
            .map(|c| NodeId(u16::from_be_bytes([c[0], c[1]])))
            .collect();
        if backups.len() > MAX_BACKUPS as usize {
            return Err(TokenError::BadRouting("too many backups"));
        }
        if !is_member(owner) || !backups.iter().all(|b| is_member(*b)) {
            return Err(TokenError::BadRouting(
                "names a node outside the membership",
            ));
        }
        let mut seen = backups.clone();
        seen.push(owner);
        seen.sort_unstable();
        if seen.windows(2).any(|w| w[0] == w[1]) {
            return Err(TokenError::BadRouting("a node is named twice"));
        }
        Ok(Route {
            owner,
            version: u64::from_be_bytes(version),
            backups,
        })
    }

    /// Owner then backups.
    pub fn holders(&self) -> impl Iterator<Item = NodeId> + '_ {
        std::iter::once(self.owner).chain(self.backups.iter().copied())
    }

    /// Same owner and backups (ignoring the version).
    pub fn same_placement(&self, other: &Route) -> bool {
        self.owner == other.owner && self.backups == other.backups
    }
}

/// Rendezvous (highest-random-weight) score of `node` for session `id`: every node computes the
/// same ranking without coordination, and removing a node only moves the sessions it held.
pub fn score(id: &SessionId, node: NodeId) -> u64 {
    let b = id.as_bytes();
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&b[..8]);
    hi.copy_from_slice(&b[8..]);
    let x = u64::from_le_bytes(lo) ^ u64::from_le_bytes(hi).rotate_left(29);
    mix(x ^ mix(u64::from(node.0).wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// SplitMix64's finaliser: a fast, well-distributed 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Picks up to `k` backups for session `id` among `candidates` (live members other than the
/// owner), highest rendezvous score first. Deterministic for the same inputs.
pub fn pick_backups(id: &SessionId, candidates: &[NodeId], k: usize) -> Vec<NodeId> {
    let mut ranked: Vec<(u64, NodeId)> = candidates.iter().map(|n| (score(id, *n), *n)).collect();
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    ranked.into_iter().take(k).map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_and_checks_membership() {
        let r = Route {
            owner: NodeId(3),
            version: 0x0102_0304_0506_0708,
            backups: vec![NodeId(1), NodeId(7)],
        };
        let bytes = r.encode();
        assert_eq!(bytes.len(), 14);
        assert_eq!(Route::decode(&bytes, |_| true).unwrap(), r);
        assert!(Route::decode(&bytes, |n| n != NodeId(7)).is_err());
        assert!(Route::decode(&bytes[..13], |_| true).is_err());
        assert!(Route::decode(&[], |_| true).is_err());
        let dup = Route {
            owner: NodeId(1),
            version: 1,
            backups: vec![NodeId(1)],
        };
        assert!(Route::decode(&dup.encode(), |_| true).is_err());
    }

    #[test]
    fn backups_spread_evenly_and_move_minimally() {
        let nodes: Vec<NodeId> = (1..=4).map(NodeId).collect();
        let mut counts = [0usize; 5];
        let mut moved = 0;
        for _ in 0..4000 {
            let id = SessionId::random();
            let b = pick_backups(&id, &nodes, 1)[0];
            counts[b.0 as usize] += 1;
            // Remove a node that was not picked: the pick must not change.
            let others: Vec<NodeId> = nodes
                .iter()
                .copied()
                .filter(|n| *n != NodeId(4) || b == NodeId(4))
                .collect();
            if pick_backups(&id, &others, 1)[0] != b {
                moved += 1;
            }
        }
        assert_eq!(moved, 0);
        for c in &counts[1..] {
            assert!((700..1300).contains(c), "uneven spread {counts:?}");
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Route::decode(&bytes, |n| n.0 < 100);
        }
    }
}
