//! A node's loss: SWIM detection, the news spreading by gossip, and the leaders' repair.
//!
//! Owns the loss phase, run once the workload is over and every pusher is idle:
//!
//! * **The death.** A random node stops answering at once (a crashed host: no refused
//!   connection, so the shortcut of `failure.rs` does not apply; nothing is being pushed to
//!   it either, the cluster being quiet).
//! * **Detection** (`gossip.rs`, foca). Every alive node probes one member per probe period
//!   (`heartbeat_interval`, with its own random phase), walking a shuffled list of the
//!   members it believes alive and reshuffling after each pass. A probe of the dead node is
//!   judged failed at the prober's next tick; the prober then suspects it and declares it
//!   down `failure_threshold` periods later (the direct and indirect pings in between change
//!   nothing when the node is dead). Only a prober's own timer declares: a node hearing a
//!   suspicion waits for the verdict.
//! * **Dissemination.** A node that declared or heard "down" piggybacks it on its next
//!   `max_transmissions` messages: the periodic gossip (every half period, to 3 members it
//!   believes alive), its probe pings and the acks of pings it gets. A node never reached
//!   this way learns by probing the dead node itself.
//! * **Repair** (`repair.rs`, `replication = k`). On hearing, a node runs `repair`: for
//!   each session it holds whose placement names the dead node and that it leads (it is the
//!   first holder it believes alive), it decides the placement again as
//!   `placement::decide` does (the dead owner is taken over by the leader, live backups
//!   stay, missing ones are filled by `internals::pick_backups` over the members it believes
//!   alive) and queues the whole state to every other holder of the new placement. With
//!   `all` there is nothing to re-place: every live node already holds every session.
//!
//! A session is *converged* when every holder of its placement is alive and holds its newest
//! version; the phase is converged when every session is.

use backend_instantcopy::NodeId;
use backend_instantcopy::internals::pick_backups;
use rand::RngExt;
use rand::seq::SliceRandom;

use super::Mode;
use super::cluster::{Sim, index_of, node_id};
use super::events::{Ev, Ns, ms};
use super::push::Item;
use super::report::LossResult;
use crate::error::Result;

/// Virtual time after the death when the phase gives up (reported as not converged).
const CAP_SECS: u64 = 3600;

/// SWIM's state, per node, from the death on.
#[derive(Debug)]
pub struct Swim {
    /// The dead node.
    pub victim: u32,
    /// When the loss happened.
    pub t0: Ns,
    /// Virtual time at which the phase stops.
    pub cap: Ns,
    knows: Vec<Option<Ns>>,
    remaining: Vec<u32>,
    order: Vec<Vec<u32>>,
    pos: Vec<usize>,
    probing: Vec<Option<u32>>,
    timer_set: Vec<bool>,
    gossip_phase: Vec<Ns>,
    informed: usize,
    short: Vec<bool>,
    short_count: usize,
    affected: usize,
    first_known: Option<Ns>,
    all_known: Option<Ns>,
    converged_at: Option<Ns>,
    down_messages: u64,
}

impl Sim<'_> {
    fn period(&self) -> Ns {
        ms(self.proto.probe_period_ms)
    }

    fn gossip_every(&self) -> Ns {
        ms(self.proto.gossip_every_ms).max(1)
    }

    /// Kills a random node and runs detection and repair to the end.
    pub(super) fn lose_node(&mut self) -> Result<LossResult> {
        let n = self.n as u32;
        let victim = self.rng.random_range(0..n);
        self.alive[victim as usize] = false;
        let t0 = self.q.now();
        let short: Vec<bool> = match self.mode {
            Mode::All => vec![false; self.sessions.len()],
            Mode::Backups(_) => (0..self.sessions.len() as u32)
                .map(|s| self.holders(s).contains(&victim))
                .collect(),
        };
        let short_count = short.iter().filter(|x| **x).count();
        let period = self.period();
        let gossip = self.gossip_every();
        let mut swim = Swim {
            victim,
            t0,
            cap: t0 + CAP_SECS * 1_000_000_000,
            knows: vec![None; self.n],
            remaining: vec![0; self.n],
            order: Vec::with_capacity(self.n),
            pos: vec![0; self.n],
            probing: vec![None; self.n],
            timer_set: vec![false; self.n],
            gossip_phase: vec![0; self.n],
            informed: 0,
            short,
            short_count,
            affected: short_count,
            first_known: None,
            all_known: None,
            converged_at: (short_count == 0).then_some(t0),
            down_messages: 0,
        };
        for i in 0..n {
            let mut others: Vec<u32> = (0..n).filter(|j| *j != i).collect();
            others.shuffle(&mut self.rng);
            swim.pos[i as usize] = self.rng.random_range(0..others.len().max(1));
            swim.order.push(others);
            swim.gossip_phase[i as usize] = t0 + self.rng.random_range(0..gossip);
            if i != victim {
                let phase = self.rng.random_range(0..period);
                self.q.at(t0 + phase, Ev::ProbeTick { node: i });
            }
        }
        self.swim = Some(swim);
        self.drain()?;
        let Some(swim) = self.swim.take() else {
            return Err(self.bug("the loss phase lost its state"));
        };
        let ms_after = |t: Option<Ns>| t.map(|t| (t - swim.t0) as f64 / 1e6);
        Ok(LossResult {
            killed: node_id(swim.victim).0,
            sessions_affected: swim.affected,
            first_detection_ms: ms_after(swim.first_known),
            all_detected_ms: ms_after(swim.all_known),
            converged_ms: ms_after(swim.converged_at),
            repair_updates: self.c.updates,
            repair_round_trips: self.c.batches,
            repair_bytes: self.c.push_bytes,
            down_messages: swim.down_messages,
            short_at_end: swim.short_count,
            inconsistent_at_end: self.inconsistent(),
        })
    }

    /// A node's probe tick: judge the last probe, probe the next member.
    pub(super) fn probe_tick(&mut self, i: u32) {
        let period = self.period();
        let suspect = ms(self.proto.suspect_to_down_ms);
        let latency = self.latency;
        let Some(swim) = self.swim.as_mut() else {
            return;
        };
        let iu = i as usize;
        let knows = swim.knows[iu].is_some();
        if knows && swim.remaining[iu] == 0 {
            // Nothing left to tell, nothing left to find out: this node's ticks no longer
            // matter to the outcome.
            return;
        }
        if swim.probing[iu].take() == Some(swim.victim) && !knows && !swim.timer_set[iu] {
            swim.timer_set[iu] = true;
            self.q.after(suspect, Ev::DownTimer { node: i });
        }
        // The next member it believes alive, round robin over a shuffled list.
        let mut target = None;
        for _ in 0..=swim.order[iu].len() {
            if swim.pos[iu] >= swim.order[iu].len() {
                swim.order[iu].shuffle(&mut self.rng);
                swim.pos[iu] = 0;
            }
            let Some(&j) = swim.order[iu].get(swim.pos[iu]) else {
                break;
            };
            swim.pos[iu] += 1;
            if !(j == swim.victim && knows) {
                target = Some(j);
                break;
            }
        }
        let Some(j) = target else {
            // Nobody left to probe (a cluster of one live node): nothing more to do.
            return;
        };
        {
            let ju = j as usize;
            if j == swim.victim {
                swim.probing[iu] = Some(j);
            } else {
                if knows && swim.remaining[iu] > 0 {
                    swim.remaining[iu] -= 1;
                    swim.down_messages += 1;
                    self.q.after(latency, Ev::LearnDown { node: j });
                }
                if !knows && swim.knows[ju].is_some() && swim.remaining[ju] > 0 {
                    // The ack carries it back.
                    swim.remaining[ju] -= 1;
                    swim.down_messages += 1;
                    self.q.after(2 * latency, Ev::LearnDown { node: i });
                }
            }
        }
        self.q.after(period, Ev::ProbeTick { node: i });
    }

    /// A node's periodic gossip: the news to up to 3 members it believes alive.
    pub(super) fn gossip_tick(&mut self, i: u32) {
        let fanout = self.proto.gossip_fanout;
        let latency = self.latency;
        let every = self.gossip_every();
        let n = self.n as u32;
        let Some(swim) = self.swim.as_mut() else {
            return;
        };
        let iu = i as usize;
        if swim.knows[iu].is_none() || swim.remaining[iu] == 0 {
            return;
        }
        let victim = swim.victim;
        let mut members: Vec<u32> = (0..n).filter(|j| *j != i && *j != victim).collect();
        members.shuffle(&mut self.rng);
        let count = fanout.min(swim.remaining[iu] as usize).min(members.len());
        for &j in &members[..count] {
            swim.down_messages += 1;
            self.q.after(latency, Ev::LearnDown { node: j });
        }
        swim.remaining[iu] -= count as u32;
        if swim.remaining[iu] > 0 && count > 0 {
            self.q.after(every, Ev::GossipTick { node: i });
        }
    }

    /// A node learns that the dead node is down (its own verdict, or the news).
    pub(super) fn learn_down(&mut self, i: u32) -> Result<()> {
        let now = self.q.now();
        let max_tx = self.max_tx;
        let every = self.gossip_every();
        let alive = self.alive.iter().filter(|a| **a).count();
        let Some(swim) = self.swim.as_mut() else {
            return Ok(());
        };
        let iu = i as usize;
        if i == swim.victim || swim.knows[iu].is_some() {
            return Ok(());
        }
        swim.knows[iu] = Some(now);
        swim.remaining[iu] = max_tx;
        swim.informed += 1;
        swim.first_known.get_or_insert(now);
        if swim.informed == alive {
            swim.all_known = Some(now);
        }
        // The next tick of this node's gossip timer (it runs all along; it sends only when
        // there is news).
        let phase = swim.gossip_phase[iu];
        let next = if now <= phase {
            phase
        } else {
            phase + (now - phase).div_ceil(every) * every
        };
        self.q.at(next, Ev::GossipTick { node: i });
        self.repair(i)
    }

    /// `repair.rs`'s pass on node `i`, which now believes the dead node down.
    fn repair(&mut self, i: u32) -> Result<()> {
        let Mode::Backups(k) = self.mode else {
            return Ok(());
        };
        let Some(victim) = self.swim.as_ref().map(|s| s.victim) else {
            return Ok(());
        };
        let n = self.n as u32;
        let now = self.q.now();
        for s in 0..self.sessions.len() as u32 {
            let holders = self.holders(s);
            if !holders.contains(&victim) || self.copies[self.at(i, s)] == 0 {
                continue;
            }
            // The leader: the first holder this node believes alive.
            if holders.iter().find(|h| **h != victim) != Some(&i) {
                continue;
            }
            let x = &self.sessions[s as usize];
            let owner = if x.owner == victim { i } else { x.owner };
            let mut backups: Vec<u32> = x
                .backups
                .iter()
                .copied()
                .filter(|b| *b != owner && *b != victim)
                .collect();
            if backups.len() < k as usize {
                let candidates: Vec<NodeId> = (0..n)
                    .filter(|c| *c != victim && *c != owner && !backups.contains(c))
                    .map(node_id)
                    .collect();
                let more = pick_backups(&x.id, &candidates, k as usize - backups.len());
                backups.extend(more.into_iter().map(index_of));
            }
            let stamp = self.hlc[i as usize].max(super::sizes::ntp64(now)) + 1;
            self.hlc[i as usize] = stamp;
            let x = &mut self.sessions[s as usize];
            x.owner = owner;
            x.backups = backups;
            x.placement_stamp = backend_instantcopy::Stamp {
                time: stamp,
                node: node_id(i).0,
            };
            let version = self.copies[self.at(i, s)];
            let (update, size) = self.full_update(s, version)?;
            let targets: Vec<u32> = self.holders(s).into_iter().filter(|h| *h != i).collect();
            if targets.is_empty() {
                // The only live node left: one copy is the full count.
                self.repaired(s);
            }
            for t in targets {
                self.enqueue(
                    i,
                    t,
                    Item {
                        session: s,
                        full: true,
                        version,
                        base: 0,
                        update: update.clone(),
                        size,
                        waiter: None,
                        repair: true,
                    },
                );
            }
        }
        Ok(())
    }

    /// A repair copy landed: is the session whole again?
    pub(super) fn repaired(&mut self, s: u32) {
        let now = self.q.now();
        let whole = {
            let latest = self.sessions[s as usize].latest;
            self.holders(s)
                .into_iter()
                .all(|h| self.alive[h as usize] && self.copies[self.at(h, s)] >= latest)
        };
        let Some(swim) = self.swim.as_mut() else {
            return;
        };
        if whole && swim.short[s as usize] {
            swim.short[s as usize] = false;
            swim.short_count -= 1;
            if swim.short_count == 0 {
                swim.converged_at = Some(now);
            }
        }
    }
}
