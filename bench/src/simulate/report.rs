//! What a simulation reports: the counters of one run, the per-write figures derived from
//! them, the node loss, the measured rows beside them, and the Markdown and JSON forms.
//!
//! Owns the definitions of every published number (they follow the measured scaling table's:
//! *updates / write* are session updates sent to peers after coalescing, *round trips /
//! write* are push requests, *N / write* adds the fetches the write requests made, *push B /
//! write* is sealed push request bodies, all over the writes the session layer saw), the
//! loading of the measured 2/4/8-node rows from `docs/compare/results.json`, and the splice
//! of `results.md` into the README between its `simulate` markers.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::sizes::{Content, Encoder, SKUS, START_LINES, ntp64};
use super::{Mode, Protocol, SimOptions};
use crate::error::{BenchError, Result};

/// Raw counts of one phase of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counters {
    /// Requests sent.
    pub requests: u64,
    /// `GET` requests.
    pub reads: u64,
    /// `POST` and `DELETE` requests.
    pub write_requests: u64,
    /// Requests that changed their session (what the session layer counts as writes).
    pub writes: u64,
    /// Writes made on a node holding no copy (forwarded to the holders).
    pub remote_writes: u64,
    /// Forwarded writes no holder acknowledged.
    pub failed_writes: u64,
    /// Loads that found no copy as new as the token.
    pub unavailable: u64,
    /// Updates queued to pushers.
    pub queued: u64,
    /// Updates sent, after coalescing (follow-up whole states not included).
    pub updates: u64,
    /// Queued updates folded into another for the same session.
    pub coalesced: u64,
    /// Push requests (round trips), follow-ups included.
    pub batches: u64,
    /// Sealed push request bodies, bytes.
    pub push_bytes: u64,
    /// Sealed push acknowledgement bodies, bytes.
    pub ack_bytes: u64,
    /// Whole states re-sent because the receiver's copy was behind the update's base.
    pub full_resends: u64,
    /// Partial updates a receiver could not merge.
    pub need_full: u64,
    /// Of those, updates the sender could not send whole (it held no copy).
    pub undeliverable: u64,
    /// Updates for a dead peer, dropped.
    pub dropped: u64,
    /// Fetch calls made by reads.
    pub fetch_calls_reads: u64,
    /// Fetch calls made by write requests (their load).
    pub fetch_calls_writes: u64,
    /// Sealed fetch request and response bodies, bytes.
    pub fetch_bytes: u64,
}

/// The node loss of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LossResult {
    /// The node that died.
    pub killed: u16,
    /// Sessions whose placement named it (`k` modes; 0 with `all`).
    pub sessions_affected: usize,
    /// From the death until the first node declared it down, ms.
    pub first_detection_ms: Option<f64>,
    /// Until every live node knew, ms.
    pub all_detected_ms: Option<f64>,
    /// Until every session had its full replica count on live nodes again, ms (`None`: not
    /// within the phase's hour).
    pub converged_ms: Option<f64>,
    /// Whole states the repair sent (after coalescing).
    pub repair_updates: u64,
    /// Push requests the repair took.
    pub repair_round_trips: u64,
    /// Sealed bytes of those pushes.
    pub repair_bytes: u64,
    /// Gossip messages and piggybacked pings/acks that carried the news.
    pub down_messages: u64,
    /// Sessions still short of copies when the phase ended (0 when converged).
    pub short_at_end: usize,
    /// Sessions some live holder of which lacks the newest version at the end.
    pub inconsistent_at_end: usize,
}

/// One cluster size and mode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunResult {
    /// Cluster size.
    pub nodes: usize,
    /// `all`, `k=1`, ...
    pub mode: String,
    /// The workload's raw counts.
    pub counters: Counters,
    /// Virtual time the workload took, s.
    pub virtual_secs: f64,
    /// Requests per virtual second.
    pub requests_per_sec: f64,
    /// Writes per virtual second.
    pub writes_per_sec: f64,
    /// Updates queued per write (before coalescing).
    pub updates_queued_per_write: f64,
    /// Updates sent per write, after coalescing.
    pub updates_per_write: f64,
    /// Push round trips per write.
    pub round_trips_per_write: f64,
    /// Fetch calls per write (the write requests' own loads).
    pub fetch_calls_per_write: f64,
    /// Round trips plus fetch calls, per write.
    pub n_per_write: f64,
    /// Sealed push request bytes per write.
    pub push_bytes_per_write: f64,
    /// Every peer byte (pushes, acks, fetches) per write.
    pub peer_bytes_per_write: f64,
    /// Fetch calls per read.
    pub fetch_calls_per_read: f64,
    /// Share of writes made on a node holding no copy.
    pub remote_write_share: f64,
    /// Sessions some holder of which lacked the newest version after the workload.
    pub inconsistent_after_workload: usize,
    /// The node loss, when run.
    pub loss: Option<LossResult>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl RunResult {
    /// The figures of a finished run.
    pub fn new(
        nodes: usize,
        mode: Mode,
        c: &Counters,
        virtual_secs: f64,
        inconsistent: usize,
        loss: Option<LossResult>,
    ) -> Self {
        let w = c.writes;
        let per_sec = |x: u64| {
            if virtual_secs > 0.0 {
                x as f64 / virtual_secs
            } else {
                0.0
            }
        };
        RunResult {
            nodes,
            mode: mode.to_string(),
            counters: c.clone(),
            virtual_secs,
            requests_per_sec: per_sec(c.requests),
            writes_per_sec: per_sec(w),
            updates_queued_per_write: ratio(c.queued, w),
            updates_per_write: ratio(c.updates, w),
            round_trips_per_write: ratio(c.batches, w),
            fetch_calls_per_write: ratio(c.fetch_calls_writes, w),
            n_per_write: ratio(c.batches + c.fetch_calls_writes, w),
            push_bytes_per_write: ratio(c.push_bytes, w),
            peer_bytes_per_write: ratio(c.push_bytes + c.ack_bytes + c.fetch_bytes, w),
            fetch_calls_per_read: ratio(c.fetch_calls_reads, c.reads),
            remote_write_share: ratio(c.remote_writes, w),
            inconsistent_after_workload: inconsistent,
            loss,
        }
    }
}

/// One row of the measured scaling table (`docs/compare/results.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeasuredRow {
    /// Cluster size.
    pub nodes: usize,
    /// `all` or `k=1`.
    pub mode: String,
    /// Updates sent per write.
    pub updates_per_write: f64,
    /// Push round trips per write.
    pub round_trips_per_write: f64,
    /// Round trips plus the write requests' own calls, per write.
    pub n_per_write: f64,
    /// Sealed push bytes per write.
    pub push_bytes_per_write: f64,
}

/// The measured rows and when they were measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Measured {
    /// Where they came from.
    pub source: String,
    /// When that run started (UTC).
    pub measured_utc: String,
    /// The rows.
    pub rows: Vec<MeasuredRow>,
}

impl Measured {
    /// Reads the scaling rows of a `bench table1` results file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BenchError(format!("reading {}: {e}", path.display())))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| BenchError(format!("parsing {}: {e}", path.display())))?;
        let mut rows = Vec::new();
        for row in v["scaling"].as_array().into_iter().flatten() {
            let m = &row["measured"];
            let r = &m["replication"];
            let (Some(nodes), Some(mode)) = (row["nodes"].as_u64(), row["replication"].as_str())
            else {
                continue;
            };
            let f = |x: &Value| x.as_f64().unwrap_or(f64::NAN);
            rows.push(MeasuredRow {
                nodes: nodes as usize,
                mode: mode.to_string(),
                updates_per_write: f(&r["messages_per_write"]),
                round_trips_per_write: f(&r["batches_per_write"]),
                n_per_write: f(&m["n_per_write_total"]),
                push_bytes_per_write: f(&r["bytes_per_write"]),
            });
        }
        Ok(Measured {
            source: path.display().to_string(),
            measured_utc: v["machine"]["started_utc"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
            rows,
        })
    }

    fn row(&self, nodes: usize, mode: &str) -> Option<&MeasuredRow> {
        self.rows
            .iter()
            .find(|r| r.nodes == nodes && r.mode == mode)
    }
}

/// Sizes of the simulated session on the wire.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sizes {
    /// Seal overhead per body (nonce + tag).
    pub seal_bytes: usize,
    /// A whole session of three cart lines, as an update.
    pub full_update_bytes: usize,
    /// Its payload (keys and JSON values).
    pub payload_bytes: usize,
    /// A one-line write's delta, as an update.
    pub delta_update_bytes: usize,
}

impl Sizes {
    fn measure(enc: &Encoder) -> Result<Self> {
        use backend_instantcopy::internals::Placement;
        use backend_instantcopy::wire::Update;
        use backend_instantcopy::{NodeId, Stamp};
        let mut cart = [0u16; SKUS];
        for (i, q) in cart.iter_mut().take(START_LINES).enumerate() {
            *q = i as u16 + 1;
        }
        let c = Content {
            user: 17,
            csrf: u128::MAX / 3,
            cart,
            removed: [false; SKUS],
            created_ns: 0,
            last_access_ns: 1_000_000_000,
        };
        let id = session_core::SessionId::from_bytes([0x5a; 16]);
        let stamp = Stamp {
            time: ntp64(1_000_000_000),
            node: 1,
        };
        let placement = Placement {
            stamp,
            owner: NodeId(1),
            backups: vec![NodeId(2)],
        };
        let full = enc.full_state(id, &c, stamp, placement)?;
        let payload = full
            .entries
            .iter()
            .map(|e| e.key.len() + e.value.as_ref().map_or(0, session_core::RawJson::len))
            .sum();
        let delta = enc.delta(id, &c, stamp.time, stamp, 1, 3)?;
        Ok(Sizes {
            seal_bytes: enc.seal_overhead(),
            full_update_bytes: enc.update_size(&Update::State(full))?,
            payload_bytes: payload,
            delta_update_bytes: enc.update_size(&Update::State(delta))?,
        })
    }
}

/// Everything one `bench simulate` run produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    /// Format version of this file.
    pub version: u32,
    /// The command line (set by the CLI).
    pub command: Option<String>,
    /// When it was generated (set by the CLI; the numbers do not depend on it).
    pub generated_utc: Option<String>,
    /// The model's parameters.
    pub options: SimOptions,
    /// The crate's defaults it used.
    pub protocol: Protocol,
    /// The session's wire sizes.
    pub sizes: Option<Sizes>,
    /// One entry per size and mode.
    pub runs: Vec<RunResult>,
    /// The measured rows shown beside the simulated ones.
    pub measured: Option<Measured>,
}

impl SimReport {
    /// A report of finished runs.
    pub fn new(
        options: SimOptions,
        protocol: Protocol,
        enc: &Encoder,
        runs: Vec<RunResult>,
    ) -> Self {
        SimReport {
            version: 1,
            command: None,
            generated_utc: None,
            options,
            protocol,
            sizes: Sizes::measure(enc).ok(),
            runs,
            measured: None,
        }
    }

    /// The run of `nodes` in `mode`.
    pub fn run(&self, nodes: usize, mode: Mode) -> Option<&RunResult> {
        let m = mode.to_string();
        self.runs.iter().find(|r| r.nodes == nodes && r.mode == m)
    }

    /// The JSON form.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| BenchError(format!("report JSON: {e}")))
    }

    /// The Markdown of `results.md` (and the README's generated block).
    pub fn markdown(&self) -> String {
        let o = &self.options;
        let p = &self.protocol;
        let mut out = String::new();
        let when = self
            .generated_utc
            .as_deref()
            .map_or(String::new(), |d| format!(" on {d}"));
        let cmd = self.command.as_deref().unwrap_or("bench simulate");
        out.push_str(&format!(
            "Simulated{when} by `{cmd}` (seed {}; virtual time, so the numbers are the same on any machine). \
             A model of the protocol, not the nodes' code: it reuses the crate's placement functions \
             (`pick_backups`, `score`, `owner_of`), its `Config` defaults, its coalescing (`join`) and \
             its wire encoding and seal, and re-states the rest of the rules (`bench/src/simulate/`).\n\n",
            o.seed
        ));
        out.push_str(&format!(
            "* **Links**: {} µs one way (node ↔ node and client ↔ node), no loss. **Peer CPU**: a node handles one peer request at a time, {} µs each + {} µs per update in a push.\n",
            o.latency_us, o.handle_us, o.handle_update_us
        ));
        out.push_str(&format!(
            "* **Workload**: {} users, one session and one request at a time each, exponential think time for {} req/s in all; {} requests per run (30% GET /profile, 10% GET /cart, 45% POST /cart/items, 15% DELETE /cart/items/{{sku}}, 12 SKUs), each to a random node; {} sessions in the cluster (the users' and idle ones), created before the run on random nodes.\n",
            o.users, o.rate, o.requests, o.sessions
        ));
        out.push_str(&format!(
            "* **Crate defaults**: ack `async`, near cache off, `max_batch` {}, batches cut at {} KiB; SWIM probe period {} ms (direct ping timeout {:.0} ms), suspicion {} ms (`failure_threshold` {}), gossip every {} ms to {} members, each update piggybacked {} (foca's `max_transmissions` for the cluster size {}).\n",
            p.max_batch,
            p.max_batch_bytes / 1024,
            p.probe_period_ms,
            p.probe_rtt_ms,
            p.suspect_to_down_ms,
            p.failure_threshold,
            p.gossip_every_ms,
            p.gossip_fanout,
            match o.size_hint {
                Some(h) => format!("{} times", super::max_transmissions(h)),
                None => "floor(4 · log10(n + 1)) times, at least 4".to_string(),
            },
            match o.size_hint {
                Some(h) => format!("fixed at {h} (gossip.rs re-tunes it to the live size)"),
                None => "of each run, at least 16, as gossip.rs re-tunes it".to_string(),
            }
        ));
        if let Some(s) = &self.sizes {
            out.push_str(&format!(
                "* **Sizes** (postcard, + {} B seal per body): a whole session (user, roles, CSRF token, 3 cart lines: {} B of payload) is a {} B update, a one-line write's delta {} B.\n",
                s.seal_bytes, s.payload_bytes, s.full_update_bytes, s.delta_update_bytes
            ));
        }
        out.push('\n');
        out.push_str(&self.scaling_table());
        out.push('\n');
        out.push_str(SCALING_LEGEND);
        if self.runs.iter().any(|r| r.loss.is_some()) {
            out.push('\n');
            out.push_str(&self.loss_table());
            out.push('\n');
            out.push_str(&format!(
                "* After the workload, with the cluster quiet, one random node dies silently (a crashed host: no refused connection to notice). **first / all know**: from the death until the first live node, and every live node, believes it down: some member's probe reaches it within one probe period, the probe is judged failed one period later, then {} ms of suspicion, then gossip. **converged**: until every session again has its full replica count on live nodes (with `all` every live node already holds every session: nothing to copy). **repair**: the whole states the sessions' leaders pushed to their new holders, the round trips and sealed bytes that took.\n",
                p.suspect_to_down_ms
            ));
        }
        out
    }

    fn scaling_table(&self) -> String {
        let mut t = String::from(
            "| nodes | instant copy | updates / write | round trips / write | N / write | push B / write | measured updates / write | measured round trips / write | measured N / write | measured push B / write |\n|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        for r in &self.runs {
            let m = self.measured.as_ref().and_then(|m| m.row(r.nodes, &r.mode));
            let mf = |f: fn(&MeasuredRow) -> f64, d: usize| {
                m.map_or("–".to_string(), |m| format!("{:.*}", d, f(m)))
            };
            t.push_str(&format!(
                "| {} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {} | {} | {} | {} |\n",
                r.nodes,
                r.mode,
                r.updates_per_write,
                r.round_trips_per_write,
                r.n_per_write,
                r.push_bytes_per_write,
                mf(|m| m.updates_per_write, 2),
                mf(|m| m.round_trips_per_write, 2),
                mf(|m| m.n_per_write, 2),
                mf(|m| m.push_bytes_per_write, 0),
            ));
        }
        t
    }

    fn loss_table(&self) -> String {
        let mut t = String::from(
            "| nodes | instant copy | sessions to re-place | first / all know ms | converged ms | repair updates | repair round trips | repair B |\n|--:|---|--:|--:|--:|--:|--:|--:|\n",
        );
        let f = |x: Option<f64>| x.map_or("never".to_string(), |v| format!("{v:.0}"));
        for r in &self.runs {
            let Some(l) = &r.loss else { continue };
            t.push_str(&format!(
                "| {} | {} | {} | {} / {} | {} | {} | {} | {} |\n",
                r.nodes,
                r.mode,
                l.sessions_affected,
                f(l.first_detection_ms),
                f(l.all_detected_ms),
                f(l.converged_ms),
                l.repair_updates,
                l.repair_round_trips,
                l.repair_bytes
            ));
        }
        t
    }

    /// Writes `results.json`, `results.md` and `scaling.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
        std::fs::create_dir_all(dir)
            .map_err(|e| BenchError(format!("creating {}: {e}", dir.display())))?;
        let svg = super::chart::scaling_svg(self)?;
        let files = [
            ("results.json", self.to_json()? + "\n"),
            ("results.md", self.markdown()),
            ("scaling.svg", svg),
        ];
        let mut written = Vec::new();
        for (name, body) in files {
            let path = dir.join(name);
            std::fs::write(&path, body)
                .map_err(|e| BenchError(format!("writing {}: {e}", path.display())))?;
            written.push(path);
        }
        Ok(written)
    }
}

const SCALING_LEGEND: &str = "* **updates / write**: session updates sent to peers per write, after coalescing queued updates to one session; **round trips / write**: push requests per write (one batch in flight per peer, plus any whole-state follow-up); **N / write**: those plus the fetches the write requests made to load their session (a node holding no copy asks all k + 1 holders at once); **push B / write**: sealed push request bodies per write. A write is a request that changed its session (a DELETE of a line that is not there writes nothing).\n* **measured**: the same columns of the scaling runs above (real demo-app processes on one 2-core machine, loopback, 20 users back to back). Coalescing and batching depend on load and latency, so the round trips differ where that machine was saturated; the updates per write, set by the placement rules, are what the model must get right.\n";

/// The line before the generated block in the README.
pub const BEGIN_MARKER: &str =
    "<!-- simulate:begin: generated by `bench simulate` from results.md; do not edit by hand -->";
/// The line after it.
pub const END_MARKER: &str = "<!-- simulate:end -->";

/// `doc` with the text between [`BEGIN_MARKER`] and [`END_MARKER`] replaced by `generated`
/// (the markers stay). Fails when a marker is missing, repeated or out of order.
pub fn splice(doc: &str, generated: &str) -> Result<String> {
    crate::markers::splice_between(doc, BEGIN_MARKER, END_MARKER, generated).ok_or_else(|| {
        BenchError(format!(
            "no {BEGIN_MARKER} ... {END_MARKER} block (each marker once, begin first)"
        ))
    })
}

/// The generated block of `doc` (between the markers, trimmed), if it has one.
pub fn generated_block(doc: &str) -> Option<&str> {
    crate::markers::block_between(doc, BEGIN_MARKER, END_MARKER)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn splice_replaces_only_the_block() {
        let doc = format!("a\n{BEGIN_MARKER}\nold\n{END_MARKER}\nb\n");
        let out = splice(&doc, "new\n").unwrap();
        assert_eq!(
            out,
            format!("a\n{BEGIN_MARKER}\n\nnew\n\n{END_MARKER}\nb\n")
        );
        assert_eq!(generated_block(&out), Some("new"));
        assert_eq!(splice(&out, "new").unwrap(), out);
        assert!(splice("nothing", "x").is_err());
        assert!(splice(&format!("{END_MARKER}\n{BEGIN_MARKER}\n"), "x").is_err());
    }
}
