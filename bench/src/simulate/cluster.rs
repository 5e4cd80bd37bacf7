//! The simulated cluster: nodes, sessions and their copies, and the write path.
//!
//! Owns the state one run evolves, the run's event loop, and the placement and write rules of
//! `placement.rs` and `write.rs` as the model applies them (the read path is [`super::read`]):
//!
//! * **Placement.** A session is created on a random node, which owns it (its id carries the
//!   owner in its first two bytes, read back with `internals::owner_of`). With `all` every
//!   alive member holds it; with `k` the owner plus `internals::pick_backups(id, live peers,
//!   k)`.
//! * **Write at a holder.** The delta (the one key changed, stamped by the node's HLC, `base`
//!   = the copy's version before it) goes to every other alive member (`all`) or the other
//!   holders (`k`) through the per-peer pushers; `ack = async` answers at once.
//! * **Write at a non-holder** (`k` only, `save_remote`): the delta goes to every holder and
//!   the response waits for the first holder's acknowledgement.
//!
//! Not modelled: touches (reads move no deadline here), logins and logouts during the run,
//! anti-entropy, the near cache, request CPU time on the serving node (only peer requests cost
//! CPU), packet loss.

use std::rc::Rc;

use backend_instantcopy::internals::{Placement, WireState, owner_of, pick_backups};
use backend_instantcopy::wire::Update;
use backend_instantcopy::{NodeId, Stamp};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use session_core::SessionId;

use super::events::{Ev, Ns, Queue, us};
use super::loss::Swim;
use super::push::{Item, Pusher};
use super::read::Fetch;
use super::report::{Counters, RunResult};
use super::sizes::{Content, Encoder, SKUS, START_LINES, ntp64};
use super::workload::{self, Op, User};
use super::{Mode, Protocol, SimOptions};
use crate::error::{BenchError, Result};

/// One session: where it lives and what it holds.
#[derive(Debug, Clone)]
pub struct Session {
    /// Its id (owner in the first two bytes).
    pub id: SessionId,
    /// The owner's index.
    pub owner: u32,
    /// The backups' indexes (empty with `all`).
    pub backups: Vec<u32>,
    /// The placement decision's stamp.
    pub placement_stamp: Stamp,
    /// Its content now (the newest write's result).
    pub content: Content,
    /// The newest version any copy has.
    pub latest: u64,
}

/// A request in progress.
#[derive(Debug, Clone)]
pub struct Req {
    /// Who sent it.
    pub user: u32,
    /// The node it went to.
    pub node: u32,
    /// The session.
    pub session: u32,
    /// The route.
    pub op: Op,
    /// The version the client's token carried.
    pub token_version: u64,
}

/// A write made on a non-holder, waiting for its first holder's acknowledgement.
#[derive(Debug, Clone)]
pub struct RemoteWrite {
    /// The request.
    pub req: u32,
    /// Holders not answered yet.
    pub outstanding: u32,
    /// The response went out.
    pub answered: bool,
}

/// One run's whole state.
pub struct Sim<'a> {
    pub(super) opts: &'a SimOptions,
    pub(super) proto: &'a Protocol,
    pub(super) enc: &'a Encoder,
    pub(super) n: usize,
    pub(super) mode: Mode,
    pub(super) rng: StdRng,
    pub(super) q: Queue,
    pub(super) latency: Ns,
    pub(super) handle: Ns,
    pub(super) handle_update: Ns,
    pub(super) alive: Vec<bool>,
    pub(super) cpu_free: Vec<Ns>,
    pub(super) hlc: Vec<u64>,
    pub(super) sessions: Vec<Session>,
    /// `copies[node * sessions + s]`: the version of that node's copy (0: none).
    pub(super) copies: Vec<u64>,
    pub(super) pushers: Vec<Pusher>,
    pub(super) users: Vec<User>,
    pub(super) reqs: Vec<Req>,
    pub(super) fetches: Vec<Fetch>,
    pub(super) remote: Vec<RemoteWrite>,
    pub(super) issued: usize,
    pub(super) think_mean_ns: f64,
    pub(super) c: Counters,
    pub(super) swim: Option<Swim>,
    /// Messages each membership update rides on (foca's `max_transmissions`).
    pub(super) max_tx: u32,
    pub(super) fetch_request_bytes: u64,
    pub(super) not_found_bytes: u64,
}

/// Node index → node id.
pub fn node_id(i: u32) -> NodeId {
    NodeId(i as u16 + 1)
}

/// Node id → node index.
pub fn index_of(id: NodeId) -> u32 {
    u32::from(id.0.saturating_sub(1))
}

impl<'a> Sim<'a> {
    /// A cluster of `n` nodes in `mode`, its sessions created and fully replicated (setup is
    /// not counted), and its users scheduled.
    pub fn new(
        opts: &'a SimOptions,
        proto: &'a Protocol,
        enc: &'a Encoder,
        n: usize,
        mode: Mode,
    ) -> Result<Self> {
        // One stream per (seed, size, mode): a run does not depend on which others ran.
        let salt = (n as u64) << 16 | u64::from(mode_code(mode));
        let rng = StdRng::seed_from_u64(opts.seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut sim = Sim {
            opts,
            proto,
            enc,
            n,
            mode,
            rng,
            q: Queue::default(),
            latency: us(opts.latency_us),
            handle: us(opts.handle_us),
            handle_update: us(opts.handle_update_us),
            alive: vec![true; n],
            cpu_free: vec![0; n],
            hlc: vec![ntp64(0); n],
            sessions: Vec::with_capacity(opts.sessions),
            copies: vec![0; n * opts.sessions],
            pushers: (0..n * n).map(|_| Pusher::default()).collect(),
            users: Vec::with_capacity(opts.users),
            reqs: Vec::new(),
            fetches: Vec::new(),
            remote: Vec::new(),
            issued: 0,
            think_mean_ns: opts.users as f64 / opts.rate * 1e9,
            c: Counters::default(),
            swim: None,
            max_tx: super::max_transmissions(opts.size_hint.unwrap_or(n)),
            fetch_request_bytes: enc.fetch_request_body()? as u64,
            not_found_bytes: enc.fetch_response_body(None)? as u64,
        };
        sim.create_sessions();
        for u in 0..opts.users {
            sim.users.push(User {
                session: u as u32,
                token_version: sim.sessions[u].latest,
            });
            let start = workload::think(&mut sim.rng, sim.think_mean_ns);
            sim.q.at(start, Ev::UserSend { user: u as u32 });
        }
        Ok(sim)
    }

    fn create_sessions(&mut self) {
        let v0 = ntp64(0);
        let all: Vec<NodeId> = (0..self.n as u32).map(node_id).collect();
        for s in 0..self.opts.sessions {
            let creator = self.rng.random_range(0..self.n as u32);
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&self.rng.random::<u64>().to_le_bytes());
            b[8..].copy_from_slice(&self.rng.random::<u64>().to_le_bytes());
            b[..2].copy_from_slice(&node_id(creator).0.to_be_bytes());
            let id = SessionId::from_bytes(b);
            let owner = index_of(owner_of(&id));
            let backups = match self.mode {
                Mode::All => Vec::new(),
                Mode::Backups(k) => {
                    let peers: Vec<NodeId> = all
                        .iter()
                        .copied()
                        .filter(|p| *p != node_id(owner))
                        .collect();
                    pick_backups(&id, &peers, k as usize)
                        .into_iter()
                        .map(index_of)
                        .collect()
                }
            };
            let mut cart = [0u16; SKUS];
            while cart.iter().filter(|q| **q > 0).count() < START_LINES {
                let sku = self.rng.random_range(0..SKUS);
                cart[sku] = self.rng.random_range(1..=3u16);
            }
            let content = Content {
                user: s as u64,
                csrf: self.rng.random::<u128>(),
                cart,
                removed: [false; SKUS],
                created_ns: 0,
                last_access_ns: 0,
            };
            self.sessions.push(Session {
                id,
                owner,
                backups,
                placement_stamp: Stamp {
                    time: v0,
                    node: node_id(owner).0,
                },
                content,
                latest: v0,
            });
            for h in self.holders(s as u32) {
                self.copies[h as usize * self.opts.sessions + s] = v0;
            }
        }
    }

    /// Runs the workload to quiescence, then (with `loss`) kills a node and runs detection
    /// and repair to the end.
    pub fn run(mut self) -> Result<RunResult> {
        self.drain()?;
        let workload = std::mem::take(&mut self.c);
        let seconds = self.q.now() as f64 / 1e9;
        let inconsistent = self.inconsistent();
        let loss = if self.opts.loss {
            Some(self.lose_node()?)
        } else {
            None
        };
        Ok(RunResult::new(
            self.n,
            self.mode,
            &workload,
            seconds,
            inconsistent,
            loss,
        ))
    }

    /// Processes events until none is left (or, in the loss phase, the time cap).
    pub(super) fn drain(&mut self) -> Result<()> {
        while let Some(ev) = self.q.pop() {
            if let Some(cap) = self.swim.as_ref().map(|s| s.cap) {
                if self.q.now() > cap {
                    self.q.clear();
                    break;
                }
            }
            self.dispatch(ev)?;
        }
        Ok(())
    }

    fn dispatch(&mut self, ev: Ev) -> Result<()> {
        match ev {
            Ev::UserSend { user } => self.send_request(user),
            Ev::RequestArrive { req } => self.load(req)?,
            Ev::FetchArrive { fetch, peer } => self.fetch_arrive(fetch, peer)?,
            Ev::FetchReply { fetch, version } => self.fetch_reply(fetch, version)?,
            Ev::Response { user } => {
                let wait = workload::think(&mut self.rng, self.think_mean_ns);
                self.q.after(wait, Ev::UserSend { user });
            }
            Ev::PushKick { pusher } => self.kick(pusher)?,
            Ev::BatchArrive { pusher } => self.batch_arrive(pusher),
            Ev::BatchApply { pusher } => self.batch_apply(pusher)?,
            Ev::AckArrive { pusher } => self.ack_arrive(pusher)?,
            Ev::ProbeTick { node } => self.probe_tick(node),
            Ev::GossipTick { node } => self.gossip_tick(node),
            Ev::DownTimer { node } | Ev::LearnDown { node } => self.learn_down(node)?,
        }
        Ok(())
    }

    /// Index into `copies`.
    pub(super) fn at(&self, node: u32, s: u32) -> usize {
        node as usize * self.opts.sessions + s as usize
    }

    /// The session's holders: every alive member with `all`, owner and backups with `k`.
    pub(super) fn holders(&self, s: u32) -> Vec<u32> {
        match self.mode {
            Mode::All => (0..self.n as u32)
                .filter(|i| self.alive[*i as usize])
                .collect(),
            Mode::Backups(_) => {
                let x = &self.sessions[s as usize];
                std::iter::once(x.owner)
                    .chain(x.backups.iter().copied())
                    .collect()
            }
        }
    }

    pub(super) fn is_holder(&self, node: u32, s: u32) -> bool {
        match self.mode {
            Mode::All => true,
            Mode::Backups(_) => {
                let x = &self.sessions[s as usize];
                x.owner == node || x.backups.contains(&node)
            }
        }
    }

    /// A fresh HLC stamp on `node` (after everything it has seen).
    fn stamp(&mut self, node: u32) -> u64 {
        let t = ntp64(self.q.now()).max(self.hlc[node as usize] + 1);
        self.hlc[node as usize] = t;
        t
    }

    /// `node` observed version `v` (its HLC moves past it).
    pub(super) fn observe(&mut self, node: u32, v: u64) {
        let h = &mut self.hlc[node as usize];
        *h = (*h).max(v);
    }

    /// The session's whole state as its copy of version `version` would send it.
    pub(super) fn full_state(&self, s: u32, version: u64) -> Result<WireState> {
        let x = &self.sessions[s as usize];
        let placement = Placement {
            stamp: x.placement_stamp,
            owner: node_id(x.owner),
            backups: x.backups.iter().copied().map(node_id).collect(),
        };
        let stamp = Stamp {
            time: version,
            node: node_id(x.owner).0,
        };
        self.enc.full_state(x.id, &x.content, stamp, placement)
    }

    /// Encoded bytes of the session's whole state as an update.
    pub(super) fn full_update(&self, s: u32, version: u64) -> Result<(Rc<Update>, usize)> {
        let u = Update::State(self.full_state(s, version)?);
        let size = self.enc.update_size(&u)?;
        Ok((Rc::new(u), size))
    }

    fn send_request(&mut self, user: u32) {
        if self.issued >= self.opts.requests {
            return;
        }
        self.issued += 1;
        let op = workload::pick_op(&mut self.rng);
        let node = self.rng.random_range(0..self.n as u32);
        let u = &self.users[user as usize];
        self.c.requests += 1;
        if op.is_read() {
            self.c.reads += 1;
        } else {
            self.c.write_requests += 1;
        }
        self.reqs.push(Req {
            user,
            node,
            session: u.session,
            op,
            token_version: u.token_version,
        });
        let req = (self.reqs.len() - 1) as u32;
        self.q.after(self.latency, Ev::RequestArrive { req });
    }

    pub(super) fn respond(&mut self, req: u32) {
        let user = self.reqs[req as usize].user;
        self.q.after(self.latency, Ev::Response { user });
    }

    /// The session is loaded (`loaded`: the version the request saw): answer a read, apply
    /// and replicate a write.
    pub(super) fn proceed(&mut self, req: u32, loaded: u64) -> Result<()> {
        let Req {
            node,
            session: s,
            op,
            user,
            ..
        } = self.reqs[req as usize];
        let change = {
            let cart = &self.sessions[s as usize].content.cart;
            match op {
                Op::Profile | Op::Cart => None,
                // Nothing changed: the layer writes nothing.
                Op::Remove { sku } if cart[sku as usize] == 0 => None,
                Op::Remove { sku } => Some((sku as usize, 0u16)),
                Op::Add { sku, qty } => {
                    let max = u16::try_from(demo_api::MAX_QTY).unwrap_or(u16::MAX);
                    Some((
                        sku as usize,
                        cart[sku as usize].saturating_add(u16::from(qty)).min(max),
                    ))
                }
            }
        };
        let Some((sku, qty)) = change else {
            self.respond(req);
            return Ok(());
        };
        self.c.writes += 1;
        let stamp = self.stamp(node).max(loaded + 1);
        self.hlc[node as usize] = stamp;
        let now = self.q.now();
        let holder = self.is_holder(node, s);
        let base = if holder {
            self.copies[self.at(node, s)]
        } else {
            loaded
        };
        let (update, size) = {
            let x = &mut self.sessions[s as usize];
            x.content.cart[sku] = qty;
            if qty == 0 {
                x.content.removed[sku] = true;
            }
            x.content.last_access_ns = now;
            x.latest = x.latest.max(stamp);
            let st = Stamp {
                time: stamp,
                node: node_id(node).0,
            };
            let u = Update::State(self.enc.delta(x.id, &x.content, base, st, sku, qty)?);
            let size = self.enc.update_size(&u)?;
            (Rc::new(u), size)
        };
        self.users[user as usize].token_version = stamp;
        let item = |waiter| Item {
            session: s,
            full: false,
            version: stamp,
            base,
            update: update.clone(),
            size,
            waiter,
            repair: false,
        };
        if holder {
            let i = self.at(node, s);
            self.copies[i] = stamp;
            let targets: Vec<u32> = self
                .holders(s)
                .into_iter()
                .filter(|h| *h != node && self.alive[*h as usize])
                .collect();
            for t in targets {
                self.enqueue(node, t, item(None));
            }
            self.respond(req);
        } else {
            self.c.remote_writes += 1;
            let targets: Vec<u32> = self
                .holders(s)
                .into_iter()
                .filter(|h| self.alive[*h as usize])
                .collect();
            if targets.is_empty() {
                self.c.failed_writes += 1;
                self.respond(req);
                return Ok(());
            }
            self.remote.push(RemoteWrite {
                req,
                outstanding: targets.len() as u32,
                answered: false,
            });
            let w = (self.remote.len() - 1) as u32;
            for t in targets {
                self.enqueue(node, t, item(Some(w)));
            }
        }
        Ok(())
    }

    /// A holder answered a forwarded write (`applied`: it merged it).
    pub(super) fn remote_ack(&mut self, w: u32, applied: bool) {
        let rw = &mut self.remote[w as usize];
        rw.outstanding = rw.outstanding.saturating_sub(1);
        let req = rw.req;
        if applied && !rw.answered {
            rw.answered = true;
            self.respond(req);
        } else if rw.outstanding == 0 && !rw.answered {
            rw.answered = true;
            self.c.failed_writes += 1;
            self.respond(req);
        }
    }

    /// Sessions some alive holder of which lacks the newest version (0 after a clean run).
    pub(super) fn inconsistent(&self) -> usize {
        (0..self.sessions.len() as u32)
            .filter(|s| {
                let latest = self.sessions[*s as usize].latest;
                self.holders(*s)
                    .into_iter()
                    .filter(|h| self.alive[*h as usize])
                    .any(|h| self.copies[self.at(h, *s)] < latest)
            })
            .count()
    }

    /// The model's invariant breaks would be bugs: report them as errors, never panic.
    pub(super) fn bug(&self, what: &str) -> BenchError {
        BenchError(format!(
            "simulate ({} nodes, {}): internal error: {what}",
            self.n, self.mode
        ))
    }
}

fn mode_code(mode: Mode) -> u8 {
    match mode {
        Mode::All => 0,
        Mode::Backups(k) => k,
    }
}
