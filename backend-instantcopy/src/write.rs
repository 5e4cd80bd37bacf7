//! The write path (paper step 3): apply a request's delta to this node's copy, stamp it, and
//! get it to the session's other holders as the ack level says; id cycling and destroy
//! broadcasts.
//!
//! Owns the rules that decide whether a write is acknowledged: `async` answers at once, `one`
//! after one replica applied it, `all` after every replica did; a write forwarded by a node
//! that holds no copy waits for a holder whatever the level. When a replica dies under a write
//! the placement is decided again and the write sent whole to the new holders, so a write
//! fails (`Unavailable`, never applied to a copy nobody else will have and acknowledged) only
//! when no live replica can take it.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use session_core::{Delta, Loaded, Saved, SessionError, SessionId};
use tokio::sync::oneshot;

use crate::backend::SCHEME;
use crate::config::{Ack, NodeId, Replication};
use crate::membership::Peer;
use crate::node::InstantCopyNode;
use crate::placement;
use crate::replication::Delivery;
use crate::routing::Route;
use crate::state::{Placement, SessionState, WireState};
use crate::wire::Update;

/// Where a write's update goes: `durable` sends count toward the ack level, `notify` sends
/// (destroy broadcasts) are best effort within the ack timeout.
#[derive(Default)]
pub(crate) struct Sends {
    pub(crate) durable: Vec<(Arc<Peer>, Update)>,
    pub(crate) notify: Vec<(Arc<Peer>, Update)>,
}

impl InstantCopyNode {
    pub(crate) fn token(
        &self,
        id: &SessionId,
        placement: &Placement,
        version: u64,
    ) -> Result<String, SessionError> {
        let route = Route {
            owner: placement.owner,
            version,
            backups: placement.backups.clone(),
        };
        Ok(self.shared.signer.sign(id, &route.encode())?)
    }

    /// Refuses a create (or, with `sessions = false`, an id cycle) while this node is at its
    /// `max_sessions` or `max_tombstones` cap: a clear `Unavailable` (503), counted, never an
    /// eviction of a live session.
    pub(crate) fn admit_new(&self, sessions: bool) -> Result<(), SessionError> {
        let shared = &self.shared;
        let (held, tombs) = (shared.store.len(), shared.store.tombstones());
        let (max_s, max_t) = (shared.config.max_sessions, shared.config.max_tombstones);
        let full = (sessions && held >= max_s) || tombs >= max_t;
        if !full {
            return Ok(());
        }
        shared.metrics.sessions_refused.inc();
        if let Some(suppressed) = shared.cap_log.allow() {
            tracing::warn!(
                held,
                max_sessions = max_s,
                tombstones = tombs,
                max_tombstones = max_t,
                suppressed,
                "at the session cap: refusing new sessions (503) until some expire or log out"
            );
        }
        Err(self.unavailable_write(format!(
            "this node holds {held} sessions (max_sessions {max_s}) and {tombs} tombstones \
             (max_tombstones {max_t}): no new sessions until some expire"
        )))
    }

    /// The error of a write that cannot reach enough replicas (counted, like every
    /// `Unavailable` write, at the trait boundary).
    pub(crate) fn unavailable_write(&self, context: String) -> SessionError {
        SessionError::Unavailable {
            backend: SCHEME,
            context,
            source: None,
        }
    }

    /// Queues the sends and waits for `need` durable acknowledgements (`None`: do not wait for
    /// them). Destroy broadcasts (`notify`) are always waited for, within the ack timeout, but
    /// never fail the write (a peer that misses one gets it from anti-entropy).
    pub(crate) async fn replicate_need(
        &self,
        need: Option<usize>,
        sends: Sends,
        needs_replica: bool,
    ) -> Result<(), SessionError> {
        let shared = &self.shared;
        let replicator = &shared.replicator;
        let ack = shared.config.ack;
        let Some(need) = need else {
            for (p, u) in sends.durable {
                replicator.enqueue(&p, u, false).await;
            }
            // Destroys are waited for even with `ack = async`: a logout or login must kill the
            // old id on every live node before the response says it did.
            let mut notify: FuturesUnordered<oneshot::Receiver<Delivery>> = FuturesUnordered::new();
            for (p, u) in sends.notify {
                if let Some(rx) = replicator.enqueue(&p, u, true).await {
                    notify.push(rx);
                }
            }
            let _ = tokio::time::timeout(shared.config.ack_timeout, async {
                while notify.next().await.is_some() {}
            })
            .await;
            return Ok(());
        };
        if needs_replica && sends.durable.is_empty() {
            shared.metrics.ack_failures.inc();
            return Err(self.unavailable_write(format!(
                "ack = {ack} but no live replica can hold the write"
            )));
        }
        shared.metrics.acks_waited.inc();
        let mut durable: FuturesUnordered<oneshot::Receiver<Delivery>> = FuturesUnordered::new();
        let need = need.min(sends.durable.len());
        for (p, u) in sends.durable {
            if let Some(rx) = replicator.enqueue(&p, u, true).await {
                durable.push(rx);
            }
        }
        let mut notify: FuturesUnordered<oneshot::Receiver<Delivery>> = FuturesUnordered::new();
        for (p, u) in sends.notify {
            if let Some(rx) = replicator.enqueue(&p, u, true).await {
                notify.push(rx);
            }
        }
        let timeout = shared.config.ack_timeout;
        let waited = tokio::time::timeout(timeout, async {
            let mut ok = 0;
            while ok < need {
                match durable.next().await {
                    Some(Ok(Delivery::Applied)) => ok += 1,
                    // A holder refused the write: the session was destroyed meanwhile.
                    Some(Ok(Delivery::Gone)) => return Err(SessionError::Gone),
                    Some(_) => {}
                    None => break,
                }
            }
            // Destroy broadcasts: wait for every live peer, within the same deadline.
            while notify.next().await.is_some() {}
            Ok(ok)
        })
        .await;
        match waited {
            Ok(Err(e)) => Err(e),
            Ok(Ok(ok)) if ok >= need => Ok(()),
            Ok(Ok(ok)) => {
                shared.metrics.ack_failures.inc();
                Err(self.unavailable_write(format!(
                    "ack = {ack}: {ok} of {need} required replica acknowledgements; the write \
                     is applied on this node and may still reach the replicas"
                )))
            }
            Err(_) if need == 0 => Ok(()),
            Err(_) => {
                shared.metrics.ack_failures.inc();
                Err(self.unavailable_write(format!(
                    "ack = {ack}: replicas did not acknowledge within {timeout:?}; the write \
                     is applied on this node and may still reach the replicas"
                )))
            }
        }
    }

    /// Replicates a write made on a holder: `ack = one` needs one replica besides this node,
    /// `all` every replica.
    pub(crate) async fn replicate(
        &self,
        sends: Sends,
        needs_replica: bool,
    ) -> Result<(), SessionError> {
        let need = match self.shared.config.ack {
            Ack::Async => None,
            Ack::One => Some(1),
            Ack::All => Some(usize::MAX),
        };
        self.replicate_need(need, sends, needs_replica).await
    }

    /// Replicates a write already applied to this node's copy of `id`: re-decides the placement
    /// (a dead owner is taken over, dead backups are replaced), sends `delta` to holders that
    /// already had the session (`had`) and the whole state to new ones, and waits as the ack
    /// level says. When a replica turns out to be dead during the wait, the placement is decided
    /// again and the whole state sent to the new holders (at most twice). Returns the
    /// placement, version and expiry to put in the token.
    pub(crate) async fn replicate_held(
        &self,
        id: SessionId,
        delta: Option<&WireState>,
        had: &[NodeId],
    ) -> Result<(Placement, u64, u64), SessionError> {
        let shared = &self.shared;
        let me = shared.config.node_id;
        let mut had = had.to_vec();
        let mut attempt = 0;
        loop {
            let current = shared
                .store
                .read(&id, |s| s.placement().clone())
                .ok_or(SessionError::Gone)?;
            let new = match shared.config.replication {
                Replication::Backups(k) => placement::decide(shared, &id, &current, k, true),
                Replication::All if !shared.members.is_up(current.owner) => Some(Placement {
                    stamp: shared.clock.now(),
                    owner: me,
                    backups: Vec::new(),
                }),
                Replication::All => None,
            };
            let mut moved = None;
            if let Some(p) = new {
                shared.metrics.rehomes.inc();
                if p.owner != current.owner {
                    // The owner was down: this node took the session over.
                    shared.metrics.failovers.inc();
                }
                moved = shared
                    .store
                    .update(&id, |s| s.set_placement(p))
                    .and_then(|w| w.placement);
            }
            let Some((placement, version, expires_at)) = shared.store.read(&id, |s| {
                (s.placement().clone(), s.version(), s.record().expires_at())
            }) else {
                return Err(SessionError::Gone);
            };
            let targets = placement::replicas(shared, &placement);
            tracing::debug!(
                node = %me,
                session = ?id,
                owner = %placement.owner,
                backups = ?placement.backups,
                was_owner = %current.owner,
                was_backups = ?current.backups,
                targets = ?targets.iter().map(|p| p.id).collect::<Vec<_>>(),
                version,
                "write"
            );
            let mut sends = Sends::default();
            // The whole state only for a target that needs it (a new holder, or no delta), read
            // once: most writes send only their delta, and a lone node sends nothing. Read after
            // the version above, it may hold a later write too, which a new holder may as well
            // have.
            let mut full: Option<WireState> = None;
            for p in &targets {
                let update = match delta {
                    Some(d)
                        if shared.config.replication == Replication::All || had.contains(&p.id) =>
                    {
                        let mut d = d.clone();
                        d.placement.clone_from(&moved);
                        d
                    }
                    _ => match &full {
                        Some(f) => f.clone(),
                        None => full
                            .insert(
                                shared
                                    .store
                                    .read(&id, |s| s.to_wire_full())
                                    .ok_or(SessionError::Gone)?,
                            )
                            .clone(),
                    },
                };
                sends.durable.push((p.clone(), Update::State(update)));
            }
            // A node that is not one of the holders (it took a write while a holder was down and
            // the placement chose others) does not count as a copy.
            let holder = placement::holds(shared, &placement);
            let result = if holder {
                self.replicate(sends, true).await
            } else {
                let need = match shared.config.ack {
                    Ack::Async => 1,
                    Ack::One => 2,
                    Ack::All => usize::MAX,
                };
                self.replicate_need(Some(need), sends, true).await
            };
            match result {
                Ok(()) => return Ok((placement, version, expires_at)),
                Err(SessionError::Unavailable { .. })
                    if attempt < 2 && targets.iter().any(|p| !p.is_up()) =>
                {
                    // A replica died under us: choose again and send the whole state.
                    attempt += 1;
                    had.clear();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A write on a node that does not hold the session (`replication = k`): the delta goes to
    /// the holders, and the response waits for at least one of them whatever the ack level,
    /// since this node keeps no copy.
    pub(crate) async fn save_remote(
        &self,
        loaded: &Loaded,
        delta: &Delta,
        now: u64,
    ) -> Result<Saved, SessionError> {
        let shared = &self.shared;
        let route = self.route(&loaded.routing)?;
        let stamp = shared.clock.now();
        let w = SessionState::remote_write(&loaded.record, delta, stamp, now, &shared.policy);
        let placement = Placement {
            stamp,
            owner: route.owner,
            backups: route.backups.clone(),
        };
        let mut sends = Sends::default();
        for p in placement::replicas(shared, &placement) {
            sends.durable.push((p, Update::State(w.clone())));
        }
        tracing::debug!(
            node = %shared.config.node_id,
            session = ?loaded.record.id,
            owner = %placement.owner,
            backups = ?placement.backups,
            targets = ?sends.durable.iter().map(|(p, _)| p.id).collect::<Vec<_>>(),
            base = w.base,
            "write forwarded to the holders"
        );
        // This node keeps no copy, so it does not count: `one` needs two holders (no single
        // crash loses the write), and even `async` waits for one (so the client's next read,
        // wherever it lands, finds the write).
        let need = match shared.config.ack {
            Ack::Async => 1,
            Ack::One => 2,
            Ack::All => usize::MAX,
        };
        if need != usize::MAX && sends.durable.len() < need {
            // Not enough live holders to make the write as durable as the ack level promises
            // (a holder is down and has not been replaced yet): refuse, never acknowledge a
            // write that only one node holds.
            shared.metrics.ack_failures.inc();
            return Err(self.unavailable_write(format!(
                "ack = {}: only {} live holder(s) of the session can take the write",
                shared.config.ack,
                sends.durable.len()
            )));
        }
        self.replicate_need(Some(need), sends, true).await?;
        shared.counters.saved();
        let version = stamp.time.max(route.version);
        if let Some(near) = &shared.near {
            // A holder has the write: the copy as it left it serves this client's next read
            // here (its token names `version`). The holders computed the same deadlines.
            let mut record = (*loaded.record).clone();
            record.data.apply(delta);
            record.last_access = w.last_access;
            record.idle_deadline = w.idle_deadline;
            record.version = version;
            near.put(
                record.id,
                crate::near::Cached {
                    record: Arc::new(record),
                    placement: placement.clone(),
                    version,
                    fetched_at: now,
                },
            );
        }
        Ok(Saved {
            token: self.token(&loaded.record.id, &placement, version)?,
            expires_at: w.idle_deadline.min(w.absolute_deadline),
        })
    }
}
