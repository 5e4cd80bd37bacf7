//! Getting updates to peers: one pusher per (sender, peer) with one batch in flight, as
//! `replication.rs` runs them, and the receiver's merge rule of `store.rs`.
//!
//! Owns batching and coalescing and what is counted for them:
//!
//! * An idle pusher with something queued takes up to `Config::max_batch` updates at once,
//!   folds the updates to one session into one (`internals::join`, the crate's own join;
//!   counted as *updates* after this), splits them into batches by count and by
//!   `Config::max_batch_bytes()` like `wire::push_batches`, and sends the batches one after
//!   the other, each a round trip (counted as *round trips*, its sealed body as *push bytes*).
//! * The receiver handles one peer request at a time (`handle_us` + `handle_update_us` per
//!   update) and merges each update: a whole state always; a partial one when its copy is at
//!   least as new as the update's `base`; otherwise it asks for the whole state in its
//!   acknowledgement, and the sender pushes its own copy whole in one more round trip before
//!   anything else (a sender with no copy — a forwarded write — cannot: that update is not
//!   delivered, and anti-entropy, not modelled, would repair it).
//! * Acknowledgements reach the waiting writers once the whole take is sent.
//!
//! One take in flight per pusher is the pusher this model was written against. Since commit
//! fab8aa0 the crate keeps up to two batches on the wire per peer (`PUSHES_IN_FLIGHT`), holding
//! back an update whose session is still on the wire; not modelled yet. At the simulated load a
//! pusher almost never has anything queued behind its batch (round trips ≈ updates per write),
//! so the second batch would change the round trips by little and the updates not at all.

use std::collections::VecDeque;
use std::rc::Rc;

use backend_instantcopy::internals::join;
use backend_instantcopy::wire::Update;

use super::cluster::Sim;
use super::events::Ev;
use super::sizes::split;

/// One queued update.
#[derive(Debug, Clone)]
pub struct Item {
    /// The session.
    pub session: u32,
    /// A whole state (a receiver without a copy can adopt it).
    pub full: bool,
    /// The version the update brings.
    pub version: u64,
    /// For a partial update: the version of the copy it was made on.
    pub base: u64,
    /// The real wire value (shared by the copies of one write to several peers).
    pub update: Rc<Update>,
    /// Its encoded size.
    pub size: usize,
    /// A forwarded write waiting for this delivery.
    pub waiter: Option<u32>,
    /// Sent by a repair.
    pub repair: bool,
}

/// What one pusher is sending now.
#[derive(Debug, Default)]
pub struct Flight {
    /// Batches still to send from this take.
    batches: VecDeque<Vec<Item>>,
    /// Whole states the receiver asked for, sent before the next batch.
    followups: VecDeque<Vec<Item>>,
    /// The batch on the wire.
    current: Vec<Item>,
    /// The batch on the wire is a follow-up.
    current_is_followup: bool,
    /// Sessions of the current batch the receiver asked to get whole.
    need_full: Vec<u32>,
    /// Forwarded writes to tell once the take is sent: (write, session).
    waiters: Vec<(u32, u32)>,
    /// Sessions of this take that were not delivered.
    failed: Vec<u32>,
}

/// One (sender, peer) pusher.
#[derive(Debug, Default)]
pub struct Pusher {
    /// Updates waiting.
    pub queue: VecDeque<Item>,
    /// A take is being sent.
    pub busy: bool,
    flight: Option<Box<Flight>>,
}

impl Sim<'_> {
    fn pusher_index(&self, src: u32, dst: u32) -> u32 {
        src * self.n as u32 + dst
    }

    fn ends(&self, pusher: u32) -> (u32, u32) {
        let n = self.n as u32;
        (pusher / n, pusher % n)
    }

    /// Queues an update from `src` for `dst`.
    pub(super) fn enqueue(&mut self, src: u32, dst: u32, item: Item) {
        if !self.alive[dst as usize] {
            self.c.dropped += 1;
            if let Some(w) = item.waiter {
                self.remote_ack(w, false);
            }
            return;
        }
        self.c.queued += 1;
        let p = self.pusher_index(src, dst);
        let pusher = &mut self.pushers[p as usize];
        pusher.queue.push_back(item);
        if !pusher.busy {
            pusher.busy = true;
            // At the same instant, after whatever else is being queued now.
            self.q.after(0, Ev::PushKick { pusher: p });
        }
    }

    /// Takes a batch's worth from the queue, coalesces it and starts sending.
    pub(super) fn kick(&mut self, p: u32) -> crate::error::Result<()> {
        let max = self.proto.max_batch.max(1);
        let taken: Vec<Item> = {
            let q = &mut self.pushers[p as usize].queue;
            let n = q.len().min(max);
            q.drain(..n).collect()
        };
        if taken.is_empty() {
            self.pushers[p as usize].busy = false;
            return Ok(());
        }
        let mut flight = Flight::default();
        let mut merged: Vec<Item> = Vec::with_capacity(taken.len());
        for item in taken {
            if let Some(w) = item.waiter {
                flight.waiters.push((w, item.session));
            }
            match merged.iter_mut().find(|m| m.session == item.session) {
                None => merged.push(item),
                Some(m) => {
                    self.c.coalesced += 1;
                    let mut a = (*m.update).clone();
                    if let (Update::State(a), Update::State(b)) = (&mut a, (*item.update).clone()) {
                        join(a, b);
                    }
                    m.size = self.enc.update_size(&a)?;
                    m.update = Rc::new(a);
                    m.full |= item.full;
                    m.base = if m.full { 0 } else { m.base.min(item.base) };
                    m.version = m.version.max(item.version);
                    m.repair |= item.repair;
                    m.waiter = None;
                }
            }
        }
        self.c.updates += merged.len() as u64;
        let sizes: Vec<usize> = merged.iter().map(|m| m.size).collect();
        let mut rest = merged.into_iter();
        for len in split(&sizes, max, self.proto.max_batch_bytes) {
            flight.batches.push_back(rest.by_ref().take(len).collect());
        }
        self.pushers[p as usize].flight = Some(Box::new(flight));
        self.send_next(p)
    }

    /// Sends the next batch of the take (follow-ups first), or finishes it.
    fn send_next(&mut self, p: u32) -> crate::error::Result<()> {
        let Some(flight) = self.pushers[p as usize].flight.as_mut() else {
            return Err(self.bug("a pusher sends without a take"));
        };
        let (batch, followup) = match flight.followups.pop_front() {
            Some(b) => (b, true),
            None => match flight.batches.pop_front() {
                Some(b) => (b, false),
                None => return self.finish(p),
            },
        };
        let sum: usize = batch.iter().map(|i| i.size).sum();
        let body = self.enc.batch_body(batch.len(), sum) as u64;
        flight.current = batch;
        flight.current_is_followup = followup;
        flight.need_full.clear();
        self.c.batches += 1;
        self.c.push_bytes += body;
        self.q.after(self.latency, Ev::BatchArrive { pusher: p });
        Ok(())
    }

    /// The batch reached its peer: it waits for the peer's CPU.
    pub(super) fn batch_arrive(&mut self, p: u32) {
        let (_, dst) = self.ends(p);
        let len = self.pushers[p as usize]
            .flight
            .as_ref()
            .map_or(0, |f| f.current.len()) as u64;
        let now = self.q.now();
        let done = now.max(self.cpu_free[dst as usize]) + self.handle + self.handle_update * len;
        self.cpu_free[dst as usize] = done;
        self.q.at(done, Ev::BatchApply { pusher: p });
    }

    /// The peer merges the batch and acknowledges it.
    pub(super) fn batch_apply(&mut self, p: u32) -> crate::error::Result<()> {
        let (_, dst) = self.ends(p);
        let Some(mut flight) = self.pushers[p as usize].flight.take() else {
            return Err(self.bug("a batch arrived without a take"));
        };
        let mut need = Vec::new();
        for item in &flight.current {
            let i = self.at(dst, item.session);
            let copy = self.copies[i];
            if item.full || (copy != 0 && copy >= item.base) {
                self.copies[i] = copy.max(item.version);
                self.observe(dst, item.version);
                if item.repair {
                    self.repaired(item.session);
                }
            } else {
                need.push(item.session);
            }
        }
        self.c.need_full += need.len() as u64;
        self.c.ack_bytes += self.enc.ack_body(need.len())? as u64;
        flight.need_full = need;
        self.pushers[p as usize].flight = Some(flight);
        self.q.after(self.latency, Ev::AckArrive { pusher: p });
        Ok(())
    }

    /// The acknowledgement is back: send what the peer lacked whole, then go on.
    pub(super) fn ack_arrive(&mut self, p: u32) -> crate::error::Result<()> {
        let (src, _) = self.ends(p);
        let Some(mut flight) = self.pushers[p as usize].flight.take() else {
            return Err(self.bug("an acknowledgement without a take"));
        };
        if !flight.current_is_followup && !flight.need_full.is_empty() {
            let mut whole = Vec::new();
            for &s in &flight.need_full {
                let mine = self.copies[self.at(src, s)];
                if mine == 0 {
                    // A forwarded write: this node has no whole state to offer.
                    self.c.undeliverable += 1;
                    flight.failed.push(s);
                    continue;
                }
                let partial = flight
                    .current
                    .iter()
                    .find(|i| i.session == s)
                    .map_or(0, |i| i.version);
                let version = mine.max(partial);
                let (update, size) = self.full_update(s, version)?;
                self.c.full_resends += 1;
                whole.push(Item {
                    session: s,
                    full: true,
                    version,
                    base: 0,
                    update,
                    size,
                    waiter: None,
                    repair: false,
                });
            }
            let sizes: Vec<usize> = whole.iter().map(|i| i.size).collect();
            let mut rest = whole.into_iter();
            for len in split(
                &sizes,
                self.proto.max_batch.max(1),
                self.proto.max_batch_bytes,
            ) {
                flight
                    .followups
                    .push_back(rest.by_ref().take(len).collect());
            }
        }
        flight.current.clear();
        self.pushers[p as usize].flight = Some(flight);
        self.send_next(p)
    }

    /// The take is sent: tell the waiting writers, then take the next one.
    fn finish(&mut self, p: u32) -> crate::error::Result<()> {
        let flight = self.pushers[p as usize].flight.take();
        if let Some(f) = flight {
            for (w, s) in f.waiters {
                let applied = !f.failed.contains(&s);
                self.remote_ack(w, applied);
            }
        }
        if self.pushers[p as usize].queue.is_empty() {
            self.pushers[p as usize].busy = false;
            Ok(())
        } else {
            self.kick(p)
        }
    }
}
