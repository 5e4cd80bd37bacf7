//! [`SessionBackend`] for [`InstantCopyNode`]: the five operations the session layer calls,
//! each a thin entry into the read path (`read`) or the write path (`write`).

use async_trait::async_trait;
use session_core::{
    Counters, Delta, ExpiryPolicy, Loaded, Saved, SessionBackend, SessionData, SessionError,
    SessionId, now_millis,
};

use crate::config::{Ack, NodeId, Replication};
use crate::node::InstantCopyNode;
use crate::placement;
use crate::routing::Route;
use crate::state::{Placement, SessionState};
use crate::wire::Update;
use crate::write::Sends;

/// The scheme name in errors and metrics.
pub(crate) const SCHEME: &str = "instantcopy";

#[async_trait]
impl SessionBackend for InstantCopyNode {
    fn scheme(&self) -> &'static str {
        SCHEME
    }

    fn policy(&self) -> &ExpiryPolicy {
        &self.shared.policy
    }

    async fn load(&self, token: &str) -> Result<Option<Loaded>, SessionError> {
        let result: Result<Option<Loaded>, SessionError> = async {
            let shared = &self.shared;
            shared.counters.loaded_token(token.len());
            let verified = shared.signer.verify(token).inspect_err(|_| {
                shared.counters.invalid_token();
            })?;
            let route = self.route(&verified.routing).inspect_err(|_| {
                shared.counters.invalid_token();
            })?;
            let id = verified.id;
            if shared.store.is_destroyed(&id) {
                return Ok(None);
            }
            let rotated = verified.key_index > 0;
            self.read(token, verified.routing, route, id, rotated).await
        }
        .await;
        self.shared.counters.read_result(result)
    }

    async fn create(&self, data: SessionData) -> Result<Saved, SessionError> {
        let result: Result<Saved, SessionError> = async {
            self.admit_new(true)?;
            let shared = &self.shared;
            let id = crate::routing::owned_id(shared.config.node_id);
            let stamp = shared.clock.now();
            let placement = Placement {
                stamp,
                owner: shared.config.node_id,
                backups: placement::backups_for(shared, &id),
            };
            let state =
                SessionState::create(id, data, &shared.policy, now_millis(), stamp, placement);
            shared.store.insert(state);
            let (placement, version, expires_at) = match self.replicate_held(id, None, &[]).await {
                Ok(x) => x,
                Err(e) => {
                    // The client will not get a token: do not keep an unreachable session either.
                    shared.store.remove(&id);
                    return Err(e);
                }
            };
            shared.counters.created();
            Ok(Saved {
                token: self.token(&id, &placement, version)?,
                expires_at,
            })
        }
        .await;
        self.shared.counters.write_result(result)
    }

    async fn save(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        // Any near-cache copy is behind once the write goes out; a write forwarded to the
        // holders puts the copy it leaves back when one of them has it (`save_remote`).
        self.shared.forget_near(&loaded.record.id);
        let result = self.save_write(loaded, delta).await;
        self.shared.counters.write_result(result)
    }

    async fn cycle_id(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        let result: Result<Saved, SessionError> = async {
            let shared = &self.shared;
            let old_id = loaded.record.id;
            let new_id = crate::routing::owned_id(shared.config.node_id);
            let stamp = shared.clock.now();
            let now = now_millis();
            if loaded.record.is_expired(now) {
                return Err(SessionError::Gone);
            }
            self.admit_new(false)?;
            if loaded.stale {
                return Err(self.unavailable_write(
                    "the session was read from a copy that may be stale: its id cannot be cycled \
                     until its newest copy can be reached"
                        .into(),
                ));
            }
            let placement = Placement {
                stamp,
                owner: shared.config.node_id,
                backups: placement::backups_for(shared, &new_id),
            };
            let held = shared.store.update(&old_id, |s| {
                if s.record().is_expired(now) || !placement::holds(shared, s.placement()) {
                    return None;
                }
                s.apply_local(delta, stamp, now, &shared.policy);
                let mut n = s.with_id(new_id);
                n.set_placement(placement.clone());
                Some(n)
            });
            let new_state = match held {
                Some(Some(n)) => n,
                _ => {
                    // Not a holder: build the new session from the copy this request loaded.
                    let mut record = (*loaded.record).clone();
                    record.id = new_id;
                    record.data.apply(delta);
                    record.last_access = now;
                    record.idle_deadline = record.idle_deadline.max(
                        shared
                            .policy
                            .refreshed_idle_deadline(now, record.absolute_deadline),
                    );
                    SessionState::from_record(record, stamp, placement.clone())
                }
            };
            let full = new_state.to_wire_full();
            let version = new_state.version();
            let expires_at = new_state.record().expires_at();
            let until = new_state.record().absolute_deadline;
            // The new id exists before the old one goes.
            shared.store.insert(new_state);
            shared.store.destroy(old_id, until);
            let mut sends = Sends::default();
            for p in placement::replicas(shared, &placement) {
                sends.durable.push((p, Update::State(full.clone())));
            }
            for p in shared.members.up_peers() {
                sends
                    .notify
                    .push((p, Update::Destroy { id: old_id, until }));
            }
            self.replicate(sends, true).await?;
            shared.counters.cycled();
            Ok(Saved {
                token: self.token(&new_id, &placement, version)?,
                expires_at,
            })
        }
        .await;
        // Any near-cache copy is behind now (or gone).
        self.shared.forget_near(&loaded.record.id);
        self.shared.counters.write_result(result)
    }

    async fn destroy(&self, loaded: &Loaded) -> Result<(), SessionError> {
        let result: Result<(), SessionError> = async {
            let shared = &self.shared;
            let id = loaded.record.id;
            let until = loaded.record.absolute_deadline;
            shared.store.destroy(id, until);
            let mut sends = Sends::default();
            // Copies may have been fetched by any node: tell every live member.
            for p in shared.members.up_peers() {
                sends.notify.push((p, Update::Destroy { id, until }));
            }
            self.replicate(sends, false).await?;
            shared.counters.destroyed();
            Ok(())
        }
        .await;
        // Any near-cache copy is behind now (or gone).
        self.shared.forget_near(&loaded.record.id);
        self.shared.counters.write_result(result)
    }

    fn counters(&self) -> Counters {
        crate::metrics::snapshot(&self.shared)
    }

    async fn shutdown(&self) {
        self.stop().await;
    }

    /// The owner the id names ([`owned_id`](crate::routing::owned_id)), version 0 (no version
    /// is known: any live copy may serve), and the backups placement gives the id now.
    fn routing_for_id(&self, id: &SessionId) -> Vec<u8> {
        let owner = crate::routing::owner_of(id);
        let owner = if owner.0 == 0 || self.shared.members.get(owner).is_none() {
            self.shared.config.node_id
        } else {
            owner
        };
        // The backups the owner would have picked: every live member but the owner, ranked.
        let backups = match self.shared.config.replication {
            Replication::All => Vec::new(),
            Replication::Backups(k) => {
                let mut candidates = self.shared.members.live_peer_ids();
                candidates.push(self.shared.config.node_id);
                candidates.retain(|n| *n != owner);
                crate::routing::pick_backups(id, &candidates, k as usize)
            }
        };
        Route {
            owner,
            version: 0,
            backups,
        }
        .encode()
    }
}

impl InstantCopyNode {
    /// A write: through this node's copy when it may serve the session, else forwarded to the
    /// holders.
    async fn save_write(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        let shared = &self.shared;
        let id = loaded.record.id;
        let now = now_millis();
        if loaded.record.is_expired(now) {
            return Err(SessionError::Gone);
        }
        if loaded.stale {
            return Err(self.unavailable_write(
                "the session was read from a copy that may be stale (its newest copy is out of \
                 reach): writes are refused until it can be reached"
                    .into(),
            ));
        }
        match shared
            .store
            .read(&id, |s| placement::may_serve(shared, s.placement()))
        {
            Some(true) => {}
            // Boxed, as the read's remote path is: its state would make every write's future
            // (a heap allocation per write) much larger.
            Some(false) => return Box::pin(self.forward_or_take_over(loaded, delta, now)).await,
            // Holders always keep their copy: a missing one was destroyed or swept.
            None if shared.store.is_destroyed(&id)
                || shared.config.replication == Replication::All =>
            {
                return Err(SessionError::Gone);
            }
            None => return Box::pin(self.forward_or_take_over(loaded, delta, now)).await,
        }
        if shared.config.ack != Ack::Async && shared.members.live_peer_ids().is_empty() {
            // No live member could acknowledge it (a dead holder is replaced by any live
            // member before the write goes out): refuse before applying anything.
            shared.metrics.ack_failures.inc();
            return Err(self.unavailable_write(format!(
                "ack = {} but no live replica can hold the write",
                shared.config.ack
            )));
        }
        let stamp = shared.clock.now();
        let applied = shared.store.update(&id, |s| {
            if s.record().is_expired(now) {
                return None;
            }
            let w = s.apply_local(delta, stamp, now, &shared.policy);
            Some((w, s.placement().clone()))
        });
        let Some(Some((w, old))) = applied else {
            return Err(SessionError::Gone);
        };
        let old_holders: Vec<NodeId> = std::iter::once(old.owner)
            .chain(old.backups.iter().copied())
            .collect();
        let (placement, version, expires_at) =
            self.replicate_held(id, Some(&w), &old_holders).await?;
        shared.counters.saved();
        Ok(Saved {
            token: self.token(&id, &placement, version)?,
            expires_at,
        })
    }

    /// Forwards a write to the holders (`save_remote`). When that fails because a holder
    /// turned out dead under it (a crash the read before did not notice yet: its ask to that
    /// holder was still in flight when another holder answered), reads the session again,
    /// which with a holder down keeps the copy here, and writes through it: the holder path
    /// re-places the session on live members, as it would have had the crash been noticed a
    /// moment earlier.
    async fn forward_or_take_over(
        &self,
        loaded: &Loaded,
        delta: &Delta,
        now: u64,
    ) -> Result<Saved, SessionError> {
        let err = match self.save_remote(loaded, delta, now).await {
            Err(e @ SessionError::Unavailable { .. }) => e,
            other => return other,
        };
        let shared = &self.shared;
        let route = self.route(&loaded.routing)?;
        if route.holders().all(|n| shared.members.is_up(n)) {
            return Err(err);
        }
        let id = loaded.record.id;
        let Some(again) = self
            .read(&loaded.token, loaded.routing.clone(), route, id, false)
            .await?
        else {
            return Err(SessionError::Gone);
        };
        let held = shared
            .store
            .read(&id, |s| placement::may_serve(shared, s.placement()))
            .unwrap_or(false);
        if !held || again.stale {
            return Err(err);
        }
        shared.metrics.failovers.inc();
        Box::pin(self.save_write(&again, delta)).await
    }
}
