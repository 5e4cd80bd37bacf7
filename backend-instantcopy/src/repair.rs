//! Failover and repair (`replication = k`): when the member set changes, every session gets
//! back to its full set of live holders, and when members join, placements drift back to what
//! rendezvous hashing picks over the new member set, at a bounded rate.
//!
//! Owns the *leader* rule (a session's leader is its owner if alive, else its first alive
//! backup: exactly one alive holder acts for it) and the two passes the leader runs: `repair`
//! (replace dead holders, send the whole state to new ones) and `rebalance` (move a backup onto
//! the member rendezvous hashing now prefers, once that member acknowledged the copy). With
//! `replication = "all"` every member holds everything, so there is nothing to re-place;
//! anti-entropy refills a member that came back.

use std::time::{Duration, Instant};

use session_core::{SessionId, now_millis};

use crate::config::{NodeId, Replication};
use crate::node::Shared;
use crate::placement;
use crate::replication::Delivery;
use crate::state::Placement;
use crate::wire::Update;

fn holders(p: &Placement) -> Vec<NodeId> {
    std::iter::once(p.owner)
        .chain(p.backups.iter().copied())
        .collect()
}

/// The alive holder that acts for the session: its owner if alive, else its first alive backup.
fn leader(shared: &Shared, p: &Placement) -> Option<NodeId> {
    holders(p).into_iter().find(|n| shared.members.is_up(*n))
}

/// Restores each session this node leads to its full set of live holders.
pub(crate) async fn repair(shared: &Shared) {
    shared.lifecycle.membership_changed();
    let Replication::Backups(k) = shared.config.replication else {
        return;
    };
    let _guard = shared.repair_lock.lock().await;
    let me = shared.config.node_id;
    for id in shared.store.ids() {
        let Some(current) = shared.store.read(&id, |s| s.placement().clone()) else {
            continue;
        };
        if leader(shared, &current) != Some(me) {
            continue;
        }
        let Some(next) = placement::decide(shared, &id, &current, k, true) else {
            continue;
        };
        shared.metrics.rehomes.inc();
        shared.store.update(&id, |s| {
            s.set_placement(next.clone());
        });
        let Some(full) = shared.store.read(&id, |s| s.to_wire_full()) else {
            continue;
        };
        let mut sent = false;
        for n in holders(&next) {
            if n == me {
                continue;
            }
            if let Some(peer) = shared.members.get(n) {
                // New holders need the whole state; remaining ones the new placement (sent
                // whole too: one message either way, and it repairs anything they missed).
                shared
                    .replicator
                    .enqueue(&peer, Update::State(full.clone()), false)
                    .await;
                sent = true;
            }
        }
        if sent {
            shared.metrics.repairs.inc();
        }
    }
    // Exchanges that began before the placements above changed prove nothing about them.
    shared.lifecycle.membership_changed();
}

/// Sessions this node leads that are short of copies: a holder in the placement is not alive,
/// or there are fewer backups than the alive members could give.
pub(crate) fn under_replicated(shared: &Shared) -> usize {
    let Replication::Backups(k) = shared.config.replication else {
        return 0;
    };
    let me = shared.config.node_id;
    let possible = (k as usize).min(shared.members.live_peer_ids().len());
    let now = now_millis();
    let mut short = 0;
    shared.store.for_each(|s| {
        let p = s.placement();
        if s.record().is_expired(now) || leader(shared, p) != Some(me) {
            return;
        }
        let all_alive = holders(p).iter().all(|n| shared.members.is_up(*n));
        if !all_alive || p.backups.len() < possible {
            short += 1;
        }
    });
    short
}

/// Moves backups of sessions this node leads onto the members rendezvous hashing now prefers
/// (after members joined), at most `rebalance_rate` sessions per second for at most `budget`:
/// every 50 ms a group of `rebalance_rate / 20` sessions moves concurrently (their copies share
/// push batches). A session moves only when every current holder is alive, and only once its
/// new holder acknowledged the whole state. Returns how many moved.
pub(crate) async fn rebalance(shared: &Shared, budget: Duration) -> usize {
    let Replication::Backups(k) = shared.config.replication else {
        return 0;
    };
    let me = shared.config.node_id;
    let started = Instant::now();
    let rate = shared.config.rebalance_rate.max(1);
    let max = (u64::from(rate) * budget.as_secs().max(1)) as usize;
    const TICK: Duration = Duration::from_millis(50);
    let group = (rate as usize / 20).max(1);
    let candidates: Vec<(SessionId, Placement)> = {
        let mut out = Vec::new();
        shared.store.for_each(|s| {
            let p = s.placement();
            if p.owner == me && holders(p).iter().all(|n| shared.members.is_up(*n)) {
                let ideal = placement::ideal_backups(shared, &s.record().id, p.owner, k);
                if ideal != p.backups {
                    out.push((s.record().id, p.clone()));
                }
            }
        });
        out
    };
    let mut moved = 0;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for chunk in candidates.chunks(group) {
        if moved >= max || started.elapsed() >= budget {
            break;
        }
        tick.tick().await;
        let results = futures::future::join_all(
            chunk
                .iter()
                .map(|(id, current)| move_backups(shared, *id, current, k)),
        )
        .await;
        moved += results.into_iter().filter(|m| *m).count();
    }
    moved
}

/// Moves one session's backups to its ideal holders (see [`rebalance`]); true if it moved.
async fn move_backups(shared: &Shared, id: SessionId, current: &Placement, k: u8) -> bool {
    let me = shared.config.node_id;
    let ideal = placement::ideal_backups(shared, &id, current.owner, k);
    if ideal == current.backups {
        return false;
    }
    let next = Placement {
        stamp: shared.clock.now(),
        owner: current.owner,
        backups: ideal,
    };
    // Switch first, then copy: every write from now on goes to the new holders, and the whole
    // state sent below already holds every write before the switch. The old backup is told
    // only once the new one has acknowledged its copy.
    shared.store.update(&id, |s| {
        s.set_placement(next.clone());
    });
    let Some(full) = shared.store.read(&id, |s| s.to_wire_full()) else {
        return false;
    };
    let new_holders: Vec<NodeId> = next
        .backups
        .iter()
        .copied()
        .filter(|n| !current.backups.contains(n))
        .collect();
    let mut all_acked = true;
    for n in &new_holders {
        let Some(peer) = shared.members.get(*n) else {
            all_acked = false;
            break;
        };
        let ack = shared
            .replicator
            .enqueue(&peer, Update::State(full.clone()), true)
            .await;
        let ok = match ack {
            Some(rx) => matches!(
                tokio::time::timeout(shared.config.ack_timeout, rx).await,
                Ok(Ok(Delivery::Applied))
            ),
            None => false,
        };
        if !ok {
            all_acked = false;
            break;
        }
    }
    if !all_acked {
        // Back to the holders that have it (a newer stamp, so the move is undone everywhere
        // it was seen).
        let back = Placement {
            stamp: shared.clock.now(),
            ..current.clone()
        };
        shared.store.update(&id, |s| {
            s.set_placement(back);
        });
        return false;
    }
    // The old holders hear of the new placement (their copies go once it is confirmed).
    for n in current.backups.iter() {
        if *n == me || next.backups.contains(n) {
            continue;
        }
        if let Some(peer) = shared.members.get(*n) {
            shared
                .replicator
                .enqueue(&peer, Update::State(full.clone()), false)
                .await;
        }
    }
    shared.metrics.rehomes.inc();
    true
}

/// Hands off, then forgets, the copies this node keeps of sessions it does not hold while
/// every holder is alive: read copies kept during a failover, and copies left on a backup that
/// a rebalance or a repair moved elsewhere. Such a copy may hold writes the new holders lack
/// (made here while this node still believed it held the session), so it is first pushed whole
/// to every holder — a merge, harmless where they already have it — and dropped only once all
/// of them acknowledged it and it did not change meanwhile. Returns how many went.
pub(crate) async fn hand_off_leftovers(shared: &Shared) -> usize {
    if shared.config.replication == Replication::All {
        return 0;
    }
    let me = shared.config.node_id;
    let mut leftovers = Vec::new();
    shared.store.for_each(|s| {
        let p = s.placement();
        if !placement::holds(shared, p) && holders(p).iter().all(|n| shared.members.is_up(*n)) {
            leftovers.push((s.record().id, s.version(), s.to_wire_full(), holders(p)));
        }
    });
    let mut dropped = 0;
    for (id, version, full, to) in leftovers {
        let mut acks = Vec::new();
        for n in to.into_iter().filter(|n| *n != me) {
            let Some(peer) = shared.members.get(n) else {
                continue;
            };
            if let Some(rx) = shared
                .replicator
                .enqueue(&peer, Update::State(full.clone()), true)
                .await
            {
                acks.push(rx);
            }
        }
        let mut all = !acks.is_empty();
        for rx in acks {
            let ok = matches!(
                tokio::time::timeout(shared.config.ack_timeout, rx).await,
                Ok(Ok(Delivery::Applied | Delivery::Gone))
            );
            all &= ok;
        }
        if all && shared.store.remove_if_version(&id, version) {
            dropped += 1;
        }
    }
    dropped
}
