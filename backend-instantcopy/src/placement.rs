//! Where each session lives: its owner and backups, chosen by rendezvous hashing over the
//! members that are alive, kept stable while they stay alive, and re-decided when one dies,
//! leaves or joins.
//!
//! Owns the placement rules every other part applies: who holds a session (everyone with
//! `replication = "all"`; the owner and `k` backups otherwise), which peers a write goes to,
//! when this node may serve a session from its own copy, the placement a session gets when a
//! holder is gone, and the one it would get without a draining node.

use std::sync::Arc;

use session_core::SessionId;

use crate::config::{NodeId, Replication};
use crate::membership::Peer;
use crate::node::Shared;
use crate::routing::pick_backups;
use crate::state::Placement;

/// Backups for a new session created here.
pub(crate) fn backups_for(shared: &Shared, id: &SessionId) -> Vec<NodeId> {
    match shared.config.replication {
        Replication::All => Vec::new(),
        Replication::Backups(k) => pick_backups(id, &shared.members.live_peer_ids(), k as usize),
    }
}

/// True when this node is one of the session's holders under `placement` (always, with
/// `replication = "all"`).
pub(crate) fn holds(shared: &Shared, placement: &Placement) -> bool {
    let me = shared.config.node_id;
    shared.config.replication == Replication::All
        || placement.owner == me
        || placement.backups.contains(&me)
}

/// True when this node may serve and write `placement`'s session from its own copy: it is a
/// holder, or a holder is down (the owner, which this node then takes over from, or a backup,
/// which the next write replaces).
pub(crate) fn may_serve(shared: &Shared, placement: &Placement) -> bool {
    holds(shared, placement)
        || std::iter::once(placement.owner)
            .chain(placement.backups.iter().copied())
            .any(|n| !shared.members.is_up(n))
}

/// Peers that must receive a session's writes: every alive member with `replication = "all"`,
/// the alive holders otherwise.
pub(crate) fn replicas(shared: &Shared, placement: &Placement) -> Vec<Arc<Peer>> {
    let members = &shared.members;
    match shared.config.replication {
        Replication::All => members.up_peers(),
        Replication::Backups(_) => std::iter::once(placement.owner)
            .chain(placement.backups.iter().copied())
            .filter(|n| *n != shared.config.node_id)
            .filter_map(|n| members.get(n))
            .filter(|p| p.is_up())
            .collect(),
    }
}

/// The placement a session should have now: the owner stays if it is up (else this node takes
/// over when `may_take_over`), alive backups stay, missing ones are filled by rendezvous
/// hashing over alive members. `None` when nothing changes.
pub(crate) fn decide(
    shared: &Shared,
    id: &SessionId,
    current: &Placement,
    k: u8,
    may_take_over: bool,
) -> Option<Placement> {
    let me = shared.config.node_id;
    let members = &shared.members;
    let owner = if members.is_up(current.owner) {
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
        .filter(|b| *b != owner && members.is_up(*b))
        .collect();
    if current.owner != owner && members.is_up(current.owner) {
        backups.retain(|b| *b != current.owner);
    }
    if backups.len() < k as usize {
        let candidates: Vec<NodeId> = std::iter::once(me)
            .chain(members.live_peer_ids())
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

/// The placement `current` would have with `gone` out of the cluster (a draining node judging
/// where its sessions go): the first remaining holder owns it when `gone` did, and missing
/// backups are filled by rendezvous hashing over the alive members other than `gone`. The
/// stamp is left as it is; callers that adopt the result stamp it.
pub(crate) fn without(
    shared: &Shared,
    id: SessionId,
    current: &Placement,
    gone: NodeId,
    k: u8,
) -> Placement {
    let holders: Vec<NodeId> = std::iter::once(current.owner)
        .chain(current.backups.iter().copied())
        .filter(|n| *n != gone && (shared.members.is_up(*n) || *n == shared.config.node_id))
        .collect();
    let alive: Vec<NodeId> = std::iter::once(shared.config.node_id)
        .chain(shared.members.live_peer_ids())
        .filter(|n| *n != gone)
        .collect();
    let owner = holders
        .first()
        .copied()
        .or_else(|| pick_backups(&id, &alive, 1).first().copied())
        .unwrap_or(current.owner);
    let mut backups: Vec<NodeId> = holders.iter().copied().filter(|n| *n != owner).collect();
    if backups.len() < k as usize {
        let candidates: Vec<NodeId> = alive
            .iter()
            .copied()
            .filter(|n| *n != owner && !backups.contains(n))
            .collect();
        backups.extend(pick_backups(&id, &candidates, k as usize - backups.len()));
    }
    backups.truncate(k as usize);
    Placement {
        stamp: current.stamp,
        owner,
        backups,
    }
}

/// The backups rendezvous hashing would choose for `id` over the alive members now (the target
/// of a rebalance after the member set changed).
pub(crate) fn ideal_backups(shared: &Shared, id: &SessionId, owner: NodeId, k: u8) -> Vec<NodeId> {
    let candidates: Vec<NodeId> = std::iter::once(shared.config.node_id)
        .chain(shared.members.live_peer_ids())
        .filter(|n| *n != owner)
        .collect();
    pick_backups(id, &candidates, k as usize)
}
