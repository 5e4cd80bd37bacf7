//! The read path of `read.rs`, as the model applies it: how a request loads its session.
//!
//! Owns the rule of when a node serves its own copy (it is a holder and the copy is at least
//! as new as the client's token) and the fetch otherwise: the holders the token names, other
//! than this node, are asked all at once; only if none had a copy that new, the alive members
//! ranked by `internals::score` (all of them with `all`, the first k + 1 with `k`). The first
//! copy as new as the token lets the request go on; the other asks run on in the background
//! and are counted (each is a call, N). A holder merges the fetched copy; a non-holder keeps
//! nothing (the near cache is off by default).

use backend_instantcopy::internals::score;

use super::Mode;
use super::cluster::{Req, Sim, node_id};
use super::events::Ev;
use crate::error::Result;

/// A fetch in progress (one request's asks).
#[derive(Debug, Clone)]
pub struct Fetch {
    /// The request it loads for.
    pub req: u32,
    /// Asks not answered yet.
    pub pending: u32,
    /// The second wave, sent only if the first found nothing new enough.
    pub wave2: Vec<u32>,
    /// The second wave is out.
    pub in_wave2: bool,
    /// The request went on (later answers only finish in the background).
    pub done: bool,
    /// The newest version any answer had.
    pub best: u64,
}

impl Sim<'_> {
    /// A request reached its node: load the session (locally, or by asking its holders).
    pub(super) fn load(&mut self, req: u32) -> Result<()> {
        let Req {
            node,
            session: s,
            token_version,
            ..
        } = self.reqs[req as usize];
        let local = self.copies[self.at(node, s)];
        if self.is_holder(node, s) && local != 0 && local >= token_version {
            return self.proceed(req, local);
        }
        // The holders the token names (with `all`: the owner), then the ranked members.
        let x = &self.sessions[s as usize];
        let mut wave1: Vec<u32> = Vec::new();
        for h in std::iter::once(x.owner).chain(x.backups.iter().copied()) {
            if h != node && !wave1.contains(&h) {
                wave1.push(h);
            }
        }
        let mut ranked: Vec<u32> = (0..self.n as u32)
            .filter(|p| *p != node && self.alive[*p as usize])
            .collect();
        let id = x.id;
        ranked.sort_by_key(|p| std::cmp::Reverse(score(&id, node_id(*p))));
        let extra = match self.mode {
            Mode::All => ranked.len(),
            Mode::Backups(k) => k as usize + 1,
        };
        let wave2: Vec<u32> = ranked
            .into_iter()
            .take(extra)
            .filter(|p| !wave1.contains(p))
            .collect();
        self.fetches.push(Fetch {
            req,
            pending: 0,
            wave2,
            in_wave2: false,
            done: false,
            best: 0,
        });
        let f = (self.fetches.len() - 1) as u32;
        if wave1.is_empty() {
            self.fetches[f as usize].in_wave2 = true;
            wave1 = std::mem::take(&mut self.fetches[f as usize].wave2);
        }
        self.ask(f, &wave1);
        if wave1.is_empty() {
            // Nobody to ask (a one-node view): what this node has is all there is.
            self.fetches[f as usize].done = true;
            return self.proceed(req, local);
        }
        Ok(())
    }

    fn ask(&mut self, f: u32, peers: &[u32]) {
        let req = self.fetches[f as usize].req as usize;
        let by_write = !self.reqs[req].op.is_read();
        for &p in peers {
            if by_write {
                self.c.fetch_calls_writes += 1;
            } else {
                self.c.fetch_calls_reads += 1;
            }
            self.c.fetch_bytes += self.fetch_request_bytes;
            self.fetches[f as usize].pending += 1;
            self.q
                .after(self.latency, Ev::FetchArrive { fetch: f, peer: p });
        }
    }

    /// A fetch reached a peer: it answers with its copy once its CPU is free.
    pub(super) fn fetch_arrive(&mut self, f: u32, peer: u32) -> Result<()> {
        let s = self.reqs[self.fetches[f as usize].req as usize].session;
        let now = self.q.now();
        let done = now.max(self.cpu_free[peer as usize]) + self.handle;
        self.cpu_free[peer as usize] = done;
        let version = self.copies[self.at(peer, s)];
        self.c.fetch_bytes += if version == 0 {
            self.not_found_bytes
        } else {
            let w = self.full_state(s, version)?;
            self.enc.fetch_response_body(Some(w))? as u64
        };
        self.q
            .at(done + self.latency, Ev::FetchReply { fetch: f, version });
        Ok(())
    }

    /// A peer's answer is back.
    pub(super) fn fetch_reply(&mut self, f: u32, version: u64) -> Result<()> {
        let req = self.fetches[f as usize].req;
        let (node, token) = {
            let r = &self.reqs[req as usize];
            (r.node, r.token_version)
        };
        self.observe(node, version);
        let fetch = &mut self.fetches[f as usize];
        fetch.pending -= 1;
        if fetch.done {
            return Ok(());
        }
        fetch.best = fetch.best.max(version);
        if version != 0 && version >= token {
            fetch.done = true;
            return self.fetched(req, version);
        }
        if fetch.pending > 0 {
            return Ok(());
        }
        if !fetch.in_wave2 && !fetch.wave2.is_empty() {
            fetch.in_wave2 = true;
            let wave = std::mem::take(&mut fetch.wave2);
            self.ask(f, &wave);
            return Ok(());
        }
        fetch.done = true;
        // No copy as new as the token anywhere reachable: the node answers 503 (the model
        // never loses a write during the workload, so this counts a modelling gap).
        self.c.unavailable += 1;
        self.respond(req);
        Ok(())
    }

    fn fetched(&mut self, req: u32, version: u64) -> Result<()> {
        let (node, s) = {
            let r = &self.reqs[req as usize];
            (r.node, r.session)
        };
        if self.is_holder(node, s) {
            let i = self.at(node, s);
            self.copies[i] = self.copies[i].max(version);
        }
        self.proceed(req, version)
    }
}
