//! The node's own measurements: the counters each part bumps, and the snapshot the
//! [`SessionBackend::counters`](session_core::SessionBackend::counters) call exports (the
//! demo renders it as `session_instantcopy_*` Prometheus metrics).

use std::sync::atomic::{AtomicU64, Ordering};

use session_core::{Counters, Metric};

use crate::membership::MemberState;
use crate::node::Shared;

/// A named monotonic counter.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Node-level counters beyond the standard ones.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    /// Peer requests refused as unauthenticated.
    pub auth_failures: Count,
    /// Authenticated peer requests with malformed bodies.
    pub bad_requests: Count,
    /// Same-key writes that lost to a concurrent write of another node.
    pub conflicts: Count,
    /// Requests served by a backup (from its own copy or by fetching from one) because the
    /// owner was down or had lost the session.
    pub failovers: Count,
    /// Placements changed (new owner or backups).
    pub rehomes: Count,
    /// Sessions re-replicated after a membership change.
    pub repairs: Count,
    /// Tokens whose session has no surviving copy anywhere (every holder confirmed gone):
    /// the client starts afresh.
    pub sessions_lost: Count,
    /// Sessions served from a surviving copy older than the client's token because every
    /// holder of a newer copy is confirmed gone: the writes after that copy are lost.
    pub lost_writes: Count,
    /// Reads served from a possibly stale copy (`on_unreachable = "stale"`).
    pub stale_serves: Count,
    /// Loads by a bare session id (no version: tower-sessions' cookie) that found no copy on
    /// any member: a forged, expired or destroyed id, each costing at most the fetches to the
    /// members its prefix and placement name.
    pub bare_id_misses: Count,
    /// Reads served from the near cache (a copy of a session held elsewhere, fetched before).
    pub near_cache_hits: Count,
    /// Creates and id cycles refused because the node holds `max_sessions` sessions or
    /// `max_tombstones` tombstones.
    pub sessions_refused: Count,
    /// Writes that waited for replica acknowledgements.
    pub acks_waited: Count,
    /// Writes whose required acknowledgements did not arrive in time.
    pub ack_failures: Count,
    /// Local copies older than the client's token, refreshed by a fetch.
    pub stale_copies: Count,
    /// Fetch requests this node answered.
    pub fetches_served: Count,
    /// Fetches from peers that failed.
    pub fetch_failures: Count,
    /// Updates received from peers.
    pub updates_received: Count,
    /// Peer stamps further in the future than the replay window (clock skew).
    pub skewed_stamps: Count,
}

/// The node's counters as the trait reports them.
pub(crate) fn snapshot(s: &Shared) -> Counters {
    let m = &s.metrics;
    let (sweeps, swept) = s.store.sweep_counts();
    let counts = s.members.counts();
    let state_count = |st: MemberState| counts.get(&st).copied().unwrap_or(0) as f64;
    let readiness = crate::lifecycle::readiness(s);
    let g = &s.gossip_counters;
    let a = &s.sync_counters;
    let c =
        |name: &'static str, help: &'static str, v: &Count| Metric::counter(name, help, v.get());
    let mut extra = vec![
        Metric::gauge(
            "sessions_held",
            "Sessions held in this node's memory",
            s.store.len() as f64,
        ),
        Metric::gauge(
            "near_cache_entries",
            "Copies of sessions held elsewhere kept after a fetch",
            s.near.as_ref().map_or(0, |n| n.len()) as f64,
        ),
        Metric::gauge(
            "tombstones_held",
            "Destroyed session ids remembered",
            s.store.tombstones() as f64,
        ),
        Metric::gauge(
            "peers_up",
            "Members alive, this node excluded",
            state_count(MemberState::Alive),
        ),
        Metric::gauge(
            "members_down",
            "Members declared down",
            state_count(MemberState::Down),
        ),
        Metric::gauge(
            "members_left",
            "Members that left gracefully",
            state_count(MemberState::Left),
        ),
        Metric::gauge(
            "ready",
            "1 once the initial sync is done",
            f64::from(u8::from(readiness.ready)),
        ),
        Metric::gauge(
            "cluster_safe",
            "1 when every session this node leads has all its live copies",
            f64::from(u8::from(readiness.cluster_safe)),
        ),
        Metric::gauge(
            "under_replicated",
            "Sessions this node leads that are short of copies",
            readiness.under_replicated as f64,
        ),
        c(
            "peer_fetch_failures_total",
            "Fetches from peers that failed",
            &m.fetch_failures,
        ),
        c(
            "fetches_served_total",
            "Fetch requests answered for peers",
            &m.fetches_served,
        ),
        c(
            "updates_received_total",
            "Updates received from peers",
            &m.updates_received,
        ),
        Metric::counter(
            "oversized_updates_total",
            "Session updates not replicated: their encoding alone exceeds max_body_bytes",
            s.replicator.oversized.get(),
        ),
        Metric::counter(
            "full_resends_total",
            "Updates re-sent whole because the peer had no copy",
            s.replicator.full_resends.get(),
        ),
        c(
            "auth_failures_total",
            "Peer requests refused as unauthenticated",
            &m.auth_failures,
        ),
        c(
            "bad_requests_total",
            "Malformed authenticated peer requests",
            &m.bad_requests,
        ),
        c(
            "conflicts_total",
            "Same-key concurrent writes resolved by last-writer-wins",
            &m.conflicts,
        ),
        c(
            "failovers_total",
            "Sessions served by a backup or taken over from a dead owner",
            &m.failovers,
        ),
        c(
            "rehomes_total",
            "Placement changes (new owner or backups)",
            &m.rehomes,
        ),
        c(
            "repairs_total",
            "Sessions re-replicated after membership changes",
            &m.repairs,
        ),
        c(
            "sessions_lost_total",
            "Tokens whose session has no surviving copy",
            &m.sessions_lost,
        ),
        c(
            "lost_writes_total",
            "Sessions served from an older surviving copy after the newer holders were confirmed gone",
            &m.lost_writes,
        ),
        c(
            "bare_id_misses_total",
            "Loads by a bare session id that found no copy on any member",
            &m.bare_id_misses,
        ),
        c(
            "near_cache_hits_total",
            "Reads served from a near-cache copy of a session held elsewhere",
            &m.near_cache_hits,
        ),
        c(
            "sessions_refused_total",
            "Creates and id cycles refused at the max_sessions / max_tombstones cap",
            &m.sessions_refused,
        ),
        c(
            "stale_serves_total",
            "Reads served from a possibly stale copy",
            &m.stale_serves,
        ),
        c(
            "acks_waited_total",
            "Writes that waited for replica acknowledgements",
            &m.acks_waited,
        ),
        c(
            "ack_failures_total",
            "Writes whose acknowledgements did not arrive in time",
            &m.ack_failures,
        ),
        c(
            "stale_copies_total",
            "Local copies older than the client's token",
            &m.stale_copies,
        ),
        c(
            "skewed_stamps_total",
            "Peer stamps beyond the allowed clock skew",
            &m.skewed_stamps,
        ),
        Metric::counter("sweeps_total", "Sweeper wake-ups", sweeps),
        Metric::counter(
            "swept_total",
            "Expired sessions removed by the sweeper",
            swept,
        ),
        c("gossip_sent_total", "Membership datagrams sent", &g.sent),
        c(
            "gossip_sent_bytes_total",
            "Bytes of membership datagrams sent",
            &g.sent_bytes,
        ),
        c(
            "gossip_received_total",
            "Membership datagrams accepted",
            &g.received,
        ),
        c(
            "gossip_received_bytes_total",
            "Bytes of membership datagrams received",
            &g.received_bytes,
        ),
        c(
            "gossip_auth_failures_total",
            "Membership datagrams refused (not sealed with the cluster secret, stale, or from this node's id)",
            &g.auth_failures,
        ),
        c(
            "gossip_rejected_total",
            "Membership datagrams that opened but were not applied",
            &g.rejected,
        ),
        c(
            "duplicate_id_claims_total",
            "Joining nodes refused because they claimed this node's id",
            &s.members.duplicate_claims,
        ),
        c(
            "sync_rounds_total",
            "Anti-entropy exchanges completed",
            &a.rounds,
        ),
        c(
            "sync_failures_total",
            "Anti-entropy exchanges that failed",
            &a.failures,
        ),
        c(
            "sync_differences_total",
            "Sessions found different by anti-entropy",
            &a.differences,
        ),
        c(
            "sync_pushed_total",
            "Sessions pushed to repair a difference",
            &a.pushed,
        ),
        c(
            "sync_pulled_total",
            "Sessions pulled to repair a difference",
            &a.pulled,
        ),
        c(
            "sync_digest_bytes_total",
            "Bytes of anti-entropy digest exchange",
            &a.digest_bytes,
        ),
        c(
            "sync_repair_bytes_total",
            "Bytes of anti-entropy repair traffic",
            &a.repair_bytes,
        ),
    ];
    for p in s.members.all().iter() {
        let id = p.id.to_string();
        let labelled = |m: Metric| m.with_label("peer", id.clone());
        extra.push(labelled(Metric::gauge(
            "peer_up",
            "1 while the member is alive",
            if p.is_up() { 1.0 } else { 0.0 },
        )));
        extra.push(labelled(c(
            "push_batches_total",
            "Push batches sent",
            &p.pushes,
        )));
        extra.push(labelled(c(
            "push_queued_total",
            "Updates queued for the peer, before coalescing",
            &p.push_queued,
        )));
        extra.push(labelled(c(
            "push_updates_total",
            "Updates sent",
            &p.push_updates,
        )));
        extra.push(labelled(c(
            "push_bytes_total",
            "Sealed push bytes sent",
            &p.push_bytes,
        )));
        extra.push(labelled(c(
            "push_failures_total",
            "Push batches that failed",
            &p.push_failures,
        )));
        extra.push(labelled(c(
            "push_dropped_total",
            "Updates dropped (peer down or queue full)",
            &p.dropped,
        )));
    }
    extra.push(Metric::histogram(
        "replication_lag_seconds",
        "Time from queuing an update to the replica's acknowledgement",
        &s.replicator.lag,
    ));
    s.counters.snapshot(extra)
}
