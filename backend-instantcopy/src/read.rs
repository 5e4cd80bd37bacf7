//! The read path (paper step 2): serve from this node's memory when its copy is at least as
//! new as the client's token, else fetch from the session's holders; and what to do when the
//! newest copy cannot be reached.
//!
//! Owns the distinction the whole read contract rests on: a session that does not exist
//! (unknown, destroyed, expired: "no session") against one whose newest copy is merely out of
//! reach (`SessionError::Unavailable`: the user is not logged out, the request is refused with
//! 503). Only when membership confirms that every holder that might have a newer copy is gone
//! does the node serve the newest surviving copy, take the session over and count the writes
//! that were lost with the others.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use session_core::{Loaded, SessionError, SessionId, SessionRecord, now_millis};

use crate::client::CallError;
use crate::config::{NodeId, OnUnreachable, Replication};
use crate::membership::Peer;
use crate::near::Lookup;
use crate::node::InstantCopyNode;
use crate::placement;
use crate::routing::Route;
use crate::state::{Placement, SessionState, Stamp, WireState};
use crate::wire::FetchResponse;

/// A copy of a session as a read sees it: record, placement, version.
pub(crate) type Copy = (Arc<SessionRecord>, Placement, u64);

/// What asking the holders found.
#[derive(Default)]
pub(crate) struct Fetched {
    /// The newest copy any holder had, with the node it came from.
    pub(crate) best: Option<(WireState, NodeId, u64)>,
    /// A holder said the session was destroyed.
    pub(crate) destroyed: bool,
    /// Holders that did not answer and are not confirmed gone (they may hold a newer copy).
    pub(crate) unreachable: Vec<NodeId>,
}

impl InstantCopyNode {
    pub(crate) fn route(&self, routing: &[u8]) -> Result<Route, session_core::TokenError> {
        // Any node id is accepted here (the token is signed: only a member wrote it); ids are
        // resolved to addresses only through the member table, so a token can never make this
        // node contact an address that a member did not announce.
        Route::decode(routing, |n| n.0 != 0)
    }

    /// This node's own copy, if it holds one that is live.
    pub(crate) fn local_copy(&self, id: &SessionId, now: u64) -> Option<Copy> {
        let shared = &self.shared;
        let copy = shared.store.read(id, |s| {
            (s.record().clone(), s.placement().clone(), s.version())
        })?;
        if copy.0.is_expired(now) {
            return None;
        }
        if !placement::may_serve(shared, &copy.1) {
            // A leftover from a time this node held the session: not kept up to date any more,
            // so not served; it is handed to the holders before it goes (it may hold writes
            // made here that they lack).
            shared.lifecycle.leftovers_waiting();
            return None;
        }
        Some(copy)
    }

    /// This node's copy whatever its placement (after taking a session over).
    pub(crate) fn local_copy_any(&self, id: &SessionId) -> Option<Copy> {
        self.shared.store.read(id, |s| {
            (s.record().clone(), s.placement().clone(), s.version())
        })
    }

    pub(crate) fn loaded_with(
        &self,
        token: &str,
        token_routing: Vec<u8>,
        token_route: &Route,
        (record, placement, version): Copy,
        key_rotated: bool,
    ) -> Loaded {
        let same = placement.owner == token_route.owner && placement.backups == token_route.backups;
        let routing = if same {
            token_routing
        } else {
            Route {
                owner: placement.owner,
                version,
                backups: placement.backups.clone(),
            }
            .encode()
        };
        Loaded {
            reissue: !same || key_rotated || !self.shared.members.is_up(placement.owner),
            ..Loaded::new(record, token, routing)
        }
    }

    /// Loads the session a verified token names. See the module docs.
    pub(crate) async fn read(
        &self,
        token: &str,
        routing: Vec<u8>,
        route: Route,
        id: SessionId,
        rotated: bool,
    ) -> Result<Option<Loaded>, SessionError> {
        let shared = &self.shared;
        let local = self.local_copy(&id, now_millis());
        tracing::debug!(
            node = %shared.config.node_id,
            session = ?id,
            local_version = local.as_ref().map(|c| c.2),
            token_version = route.version,
            token_owner = %route.owner,
            token_backups = ?route.backups,
            "read"
        );
        // A near-cache copy too old for this token: a holder answered for the session recently.
        let mut refresh = false;
        if let Some(copy) = &local {
            if copy.2 >= route.version {
                if copy.1.owner != shared.config.node_id && !shared.members.is_up(copy.1.owner) {
                    // A backup serving while the owner is down.
                    shared.metrics.failovers.inc();
                }
                return Ok(Some(self.loaded_with(
                    token,
                    routing,
                    &route,
                    copy.clone(),
                    rotated,
                )));
            }
            // Older than what this client already saw: replication is still in flight, or this
            // copy missed writes.
            shared.metrics.stale_copies.inc();
        } else if let Some(near) = &shared.near {
            match near.lookup(&id, route.version, now_millis()) {
                Lookup::Fresh(c) => {
                    // Not a holder, but a copy fetched recently is at least as new as the token.
                    shared.metrics.near_cache_hits.inc();
                    return Ok(Some(self.loaded_with(
                        token,
                        routing,
                        &route,
                        (c.record, c.placement, c.version),
                        rotated,
                    )));
                }
                Lookup::Behind => refresh = true,
                Lookup::Absent => {}
            }
        }
        // Boxed: the remote path's state (hedged asks to the holders) is kilobytes, and inline
        // it would make every read's future that large, local hits included, each one a large
        // heap allocation (the backend's futures are boxed by `async_trait`).
        let fetched =
            Box::pin(self.fetch_remote(id, &route, local.as_ref().map(|c| &c.1), refresh)).await;
        if fetched.destroyed {
            shared.forget_near(&id);
            shared.store.destroy(
                id,
                now_millis() + shared.policy.absolute_timeout().as_millis() as u64,
            );
            return Ok(None);
        }
        tracing::debug!(
            node = %shared.config.node_id,
            session = ?id,
            best = ?fetched.best.as_ref().map(|(_, from, v)| (from.0, *v)),
            unreachable = ?fetched.unreachable,
            destroyed = fetched.destroyed,
            "fetched"
        );
        if let Some((w, from, v)) = &fetched.best
            && *v >= route.version
        {
            return Ok(self.adopt_fetched(token, routing, &route, w, *from, rotated, false));
        }
        // No copy as new as the token can be had. Which copy is the newest that can?
        let local_v = local.as_ref().map(|c| c.2);
        let fetched_v = fetched.best.as_ref().map(|b| b.2);
        let newest_is_local = match (local_v, fetched_v) {
            (Some(l), Some(f)) => l >= f,
            (Some(_), None) => true,
            _ => false,
        };
        let newest_v = local_v.max(fetched_v);
        if !fetched.unreachable.is_empty() {
            // Someone who may hold the newest copy is merely out of reach.
            if shared.config.on_unreachable == OnUnreachable::Stale && newest_v.is_some() {
                shared.metrics.stale_serves.inc();
                let copy = if newest_is_local {
                    local
                } else {
                    fetched.best.as_ref().and_then(|(w, _, _)| {
                        SessionState::from_wire(w)
                            .map(|s| (s.record().clone(), s.placement().clone(), s.version()))
                    })
                };
                if let Some(copy) = copy {
                    let mut l = self.loaded_with(token, routing, &route, copy, rotated);
                    l.stale = true;
                    l.reissue = false;
                    return Ok(Some(l));
                }
            }
            return Err(SessionError::Unavailable {
                backend: crate::backend::SCHEME,
                context: format!(
                    "the newest copy of the session is out of reach (node{} {} not answering); \
                     retry shortly",
                    if fetched.unreachable.len() == 1 {
                        ""
                    } else {
                        "s"
                    },
                    fetched
                        .unreachable
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                source: None,
            });
        }
        // Every holder that might have had a newer copy answered or is confirmed gone.
        match newest_v {
            Some(v) => {
                shared.metrics.lost_writes.inc();
                tracing::warn!(
                    session = ?id,
                    token_version = route.version,
                    surviving_version = v,
                    "the newest copy of a session was lost with its holders: serving the newest \
                     surviving copy; writes after it are lost"
                );
                let loaded = if newest_is_local {
                    self.take_over_local(&id);
                    self.local_copy_any(&id)
                        .map(|c| self.loaded_with(token, routing, &route, c, rotated))
                } else {
                    let (w, from, _) = fetched.best.as_ref().ok_or(SessionError::Gone)?;
                    self.adopt_fetched(token, routing, &route, w, *from, rotated, true)
                };
                // The surviving copy becomes newer than what the client's token names, so later
                // requests with the same token are local hits and nothing is counted twice.
                let clock = &shared.clock;
                clock.observe(Stamp {
                    time: route.version,
                    node: route.owner.0,
                });
                shared
                    .store
                    .update(&id, |s| s.touch(clock.now(), now_millis(), &shared.policy));
                Ok(loaded.map(|mut l| {
                    l.reissue = true;
                    if let Some(c) = self.local_copy_any(&id) {
                        l.record = c.0;
                    }
                    l
                }))
            }
            None => {
                if route.version == 0 {
                    // A load by a bare id (tower-sessions' cookie carries no version): forged,
                    // expired or destroyed. It cost the fetches above, to members only.
                    shared.metrics.bare_id_misses.inc();
                }
                if route.version > 0 {
                    shared.metrics.sessions_lost.inc();
                    tracing::info!(session = ?id, "no copy of the session survives; starting afresh");
                }
                Ok(None)
            }
        }
    }

    /// Takes over a session this node holds a copy of (its other holders are gone).
    fn take_over_local(&self, id: &SessionId) {
        let shared = &self.shared;
        let me = shared.config.node_id;
        let backups = match shared.config.replication {
            Replication::All => Vec::new(),
            Replication::Backups(_) => placement::backups_for(shared, id),
        };
        let next = Placement {
            stamp: shared.clock.now(),
            owner: me,
            backups,
        };
        shared.store.update(id, |s| s.set_placement(next));
        shared.metrics.failovers.inc();
    }

    /// Uses a fetched copy: kept when this node holds the session or takes it over (`force`, or
    /// the owner is down), else for this request only.
    #[allow(clippy::too_many_arguments)]
    fn adopt_fetched(
        &self,
        token: &str,
        routing: Vec<u8>,
        route: &Route,
        w: &WireState,
        from: NodeId,
        rotated: bool,
        force: bool,
    ) -> Option<Loaded> {
        let shared = &self.shared;
        let fetched = SessionState::from_wire(w)?;
        if fetched.record().is_expired(now_millis()) {
            return None;
        }
        let owner_up = shared.members.is_up(fetched.placement().owner);
        if from != fetched.placement().owner || !owner_up {
            shared.metrics.failovers.inc();
        }
        // A holder that is down means the session is short of a copy: keep this one, so a
        // write here goes through the holder path, which re-places the session and sends it
        // whole to the new holders.
        let all_holders_up = std::iter::once(fetched.placement().owner)
            .chain(fetched.placement().backups.iter().copied())
            .all(|n| shared.members.is_up(n));
        // A copy this node already has is always brought up to date (merging is a join, so
        // it is always safe); a write here then applies to a copy at least as new as the one
        // the request read.
        let have_copy = shared.store.read(&w.id, |_| ()).is_some();
        if force
            || have_copy
            || placement::holds(shared, fetched.placement())
            || !owner_up
            || !all_holders_up
        {
            shared.store.apply(w);
            if force {
                self.take_over_local(&w.id);
            }
            self.local_copy_any(&w.id)
                .map(|copy| self.loaded_with(token, routing, route, copy, rotated))
        } else {
            // Not a holder: holders get the writes; the copy serves this request and, from the
            // near cache, later reads here while it is as new as their tokens.
            let copy = (
                fetched.record().clone(),
                fetched.placement().clone(),
                fetched.version(),
            );
            if let Some(near) = &shared.near {
                near.put(
                    w.id,
                    crate::near::Cached {
                        record: copy.0.clone(),
                        placement: copy.1.clone(),
                        version: copy.2,
                        fetched_at: now_millis(),
                    },
                );
            }
            Some(self.loaded_with(token, routing, route, copy, rotated))
        }
    }

    /// Who may hold a copy, in the order to ask: the holders the token names, those this node's
    /// own copy names, then (for a second round) every other alive member with
    /// `replication = "all"`, or the alive members rendezvous hashing ranks first.
    fn candidates(
        &self,
        id: &SessionId,
        route: &Route,
        local: Option<&Placement>,
    ) -> (Vec<NodeId>, Vec<NodeId>) {
        let shared = &self.shared;
        let me = shared.config.node_id;
        let mut first: Vec<NodeId> = Vec::new();
        let push = |v: &mut Vec<NodeId>, n: NodeId| {
            if n != me && !v.contains(&n) {
                v.push(n);
            }
        };
        for n in route.holders() {
            push(&mut first, n);
        }
        if let Some(p) = local {
            for n in std::iter::once(p.owner).chain(p.backups.iter().copied()) {
                push(&mut first, n);
            }
        }
        let mut second: Vec<NodeId> = Vec::new();
        let mut alive = shared.members.live_peer_ids();
        alive.sort_by_key(|n| std::cmp::Reverse(crate::routing::score(id, *n)));
        let extra = match shared.config.replication {
            Replication::All => alive.len(),
            Replication::Backups(k) => k as usize + 1,
        };
        for n in alive.into_iter().take(extra) {
            if !first.contains(&n) {
                push(&mut second, n);
            }
        }
        (first, second)
    }

    /// Asks the session's possible holders for it, concurrently: the first copy at least as new
    /// as the token wins at once; otherwise every answer is collected, and each holder that
    /// did not answer is classified as gone or merely unreachable. Asks still in flight when
    /// the answer is known run on to completion in the background instead of being dropped
    /// mid-request, which closed their pooled connections: every miss cost a fresh TCP
    /// connection that way (30,000 sockets in TIME-WAIT after a 60,000-request k=1 run).
    ///
    /// Asking all holders at once costs k + 1 calls per miss where one usually suffices. It is
    /// kept for a first fetch because the asks double as failure detection: a read notices a
    /// crashed holder, and a takeover write right after a crash then does not wait for that
    /// holder's acknowledgement (seen in the scale-down test when only one holder was asked).
    /// A `refresh` (a near-cache copy fell behind the token, so the holders answered for the
    /// session recently) is hedged instead: the first live holder alone, the others when it
    /// fails, has no copy as new as the token, or has not answered within [`HEDGE_AFTER`].
    pub(crate) async fn fetch_remote(
        &self,
        id: SessionId,
        route: &Route,
        local: Option<&Placement>,
        refresh: bool,
    ) -> Fetched {
        let shared = &self.shared;
        let (first, second) = self.candidates(&id, route, local);
        let mut out = Fetched::default();
        let mut asks: FuturesUnordered<Ask> = FuturesUnordered::new();
        for (round, wave) in [first, second].into_iter().enumerate() {
            let mut peers: Vec<Arc<Peer>> = Vec::new();
            for n in wave {
                match shared.members.get(n) {
                    Some(p) if p.is_up() || !shared.members.is_gone(n) => peers.push(p),
                    Some(_) => {} // confirmed gone: nothing to ask
                    None if !shared.members.is_gone(n) => out.unreachable.push(n),
                    None => {}
                }
            }
            let mut deferred = if refresh && round == 0 && peers.len() > 1 && peers[0].is_up() {
                peers.split_off(1)
            } else {
                Vec::new()
            };
            for p in peers {
                asks.push(start_ask(shared, p, id));
            }
            let hedge = tokio::time::sleep(HEDGE_AFTER);
            tokio::pin!(hedge);
            loop {
                let next = if deferred.is_empty() {
                    asks.next().await
                } else {
                    tokio::select! {
                        next = asks.next() => next,
                        () = &mut hedge => None,
                    }
                };
                let Some((peer, answer)) = next else {
                    if deferred.is_empty() {
                        break;
                    }
                    // The first holder has not answered within the hedge delay.
                    for p in deferred.drain(..) {
                        asks.push(start_ask(shared, p, id));
                    }
                    continue;
                };
                let found = match &answer {
                    Ok(FetchResponse::Found(w)) => SessionState::from_wire(w).map(|s| s.version()),
                    _ => None,
                };
                let settles = matches!(&answer, Ok(FetchResponse::Destroyed))
                    || found.is_some_and(|v| v >= route.version);
                if !settles {
                    // Failed, no copy, or one older than the token: the others may have it.
                    for p in deferred.drain(..) {
                        asks.push(start_ask(shared, p, id));
                    }
                }
                match answer {
                    Ok(FetchResponse::Found(w)) => {
                        shared.observe(&w);
                        let Some(v) = found else {
                            continue;
                        };
                        let better = out.best.as_ref().is_none_or(|(_, _, bv)| v > *bv);
                        if better {
                            out.best = Some((w, peer.id, v));
                        }
                        if v >= route.version {
                            finish_in_background(asks);
                            return out;
                        }
                    }
                    Ok(FetchResponse::Destroyed) => {
                        out.destroyed = true;
                        finish_in_background(asks);
                        return out;
                    }
                    Ok(FetchResponse::NotFound) => {}
                    Err(e) => {
                        tracing::debug!(peer = %peer.id, error = %e, "fetch failed");
                        if !shared.members.is_gone(peer.id) {
                            out.unreachable.push(peer.id);
                        }
                    }
                }
            }
            // A second round only when the first found nothing as new as the token.
        }
        out.unreachable.sort_unstable();
        out.unreachable.dedup();
        out
    }
}

/// How long a hedged refresh waits for the first holder before asking the others: well above
/// a loopback or same-zone fetch under load (a few milliseconds), far below the fetch timeout.
pub(crate) const HEDGE_AFTER: std::time::Duration = std::time::Duration::from_millis(20);

/// One fetch in flight: the peer asked and its answer.
type Ask = std::pin::Pin<
    Box<dyn std::future::Future<Output = (Arc<Peer>, Result<FetchResponse, CallError>)> + Send>,
>;

/// Counts the call (for the request being served, see `session_core::cost`) and starts it:
/// the fetch, then what its answer says about the peer.
fn start_ask(shared: &Arc<crate::node::Shared>, peer: Arc<Peer>, id: SessionId) -> Ask {
    shared.counters.network(1);
    let shared = shared.clone();
    Box::pin(async move {
        let r = shared.client.fetch(&peer, id).await;
        // Inside the ask, so a probe of a failed peer runs alongside the other asks.
        after_answer(&shared, &peer, &r).await;
        (peer, r)
    })
}

/// What an answer (or its absence) says about the peer: it is alive, or a failed call is
/// checked with a probe that may mark it down.
async fn after_answer(
    shared: &crate::node::Shared,
    peer: &Arc<Peer>,
    answer: &Result<FetchResponse, CallError>,
) {
    match answer {
        Ok(_) => shared.members.member_answered(peer),
        Err(e) => {
            shared.metrics.fetch_failures.inc();
            crate::failure::after_failed_call(
                &shared.members,
                &shared.client,
                &shared.gossip,
                peer,
                e,
            )
            .await;
        }
    }
}

/// Lets asks whose answer is no longer needed finish, so their kept-alive connections go back
/// to the pool (what their answers say about the peers still counts, inside each ask).
fn finish_in_background(mut asks: FuturesUnordered<Ask>) {
    if asks.is_empty() {
        return;
    }
    tokio::spawn(async move { while asks.next().await.is_some() {} });
}
