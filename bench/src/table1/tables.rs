//! The Markdown a comparison writes (`results.md`, which the README copies verbatim): the
//! conditions (date, machine, load, command line), Table 1 counted like for like per read and
//! per write, the all-vs-k scaling table, and one line per column saying what it counts and how.

use std::fmt::Write as _;

use super::{Measured, Report, SchemeResult};

/// `0` for zero, else `v` with `decimals` places.
fn num(v: f64, decimals: usize) -> String {
    if v == 0.0 {
        "0".into()
    } else {
        format!("{v:.decimals$}")
    }
}

fn load_text(l: Option<[f64; 3]>) -> String {
    l.map_or_else(
        || "unknown".into(),
        |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"),
    )
}

/// `up + down` bytes.
fn bytes_pair(up: f64, down: f64) -> String {
    format!("{up:.0} + {down:.0}")
}

/// Node ↔ store/peer bytes, per request or per write; `≥` when a connection closed mid-run.
fn wire_bytes(m: &Measured, per_write: bool) -> String {
    match &m.backend_wire {
        Some(w) => {
            let v = if per_write {
                w.bytes_per_write
            } else {
                w.bytes_per_request
            };
            let lower = if w.closed_connections > 0 { "≥ " } else { "" };
            format!("{lower}{v:.0}")
        }
        None => "not measured".into(),
    }
}

fn errors(m: &Measured) -> String {
    if m.errors.lost_sessions > 0 {
        format!(
            "{} ({} lost sessions)",
            m.errors.total, m.errors.lost_sessions
        )
    } else {
        m.errors.total.to_string()
    }
}

/// N per write, with the replication round trips it includes.
fn n_per_write(m: &Measured) -> String {
    match &m.replication {
        Some(r) => format!(
            "{} ({} repl.)",
            num(m.n_per_write_total, 2),
            num(r.batches_per_write, 2)
        ),
        None => num(m.n_per_write_total, 2),
    }
}

fn row(t: &mut String, s: &SchemeResult) {
    match (&s.skipped, &s.measured) {
        (None, Some(m)) => {
            let (r, w) = (&m.reads, &m.writes_stats);
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.0} | {} | {} |",
                s.label,
                s.lives,
                num(r.n_per_request, 3),
                n_per_write(m),
                num(r.d_per_request, 3),
                num(w.d_per_request, 2),
                bytes_pair(r.client_bytes_up, r.client_bytes_down),
                bytes_pair(w.client_bytes_up, w.client_bytes_down),
                wire_bytes(m, false),
                r.latency.p50_ms,
                r.latency.p99_ms,
                w.latency.p50_ms,
                w.latency.p99_ms,
                m.throughput_rps,
                errors(m),
                s.paper
            );
        }
        (reason, _) => {
            let reason = reason.as_deref().unwrap_or("no result");
            let _ = writeln!(
                t,
                "| {} | {} | skipped: {} | | | | | | | | | | | {} |",
                s.label,
                s.lives,
                reason.replace('|', "\\|"),
                s.paper
            );
        }
    }
}

/// What each Table 1 column counts, one line each.
const TABLE_LEGEND: &str = "\
* **N / read, N / write**: network calls (round trips to another node or to Redis) per read and \
per write request. The calls a request makes itself are attributed to it by the session layer \
(`session_request_network_calls_total{kind}`); for instant copy N / write adds the replication \
round trips (push batches, each a request and its acknowledgement, sent in the background) \
divided over the writes, shown in brackets. A write is a request that created, changed, cycled \
or destroyed its session, as the layer counts it.
* **D / read, D / write**: database calls per read and per write, attributed per request \
(`session_request_db_calls_total{kind}`).
* **client ↔ node B**: session bytes on the wire per request, up + down: the `Cookie` header \
line the client sent and the `Set-Cookie` lines it got back, counted by the load generator.
* **node ↔ store B / request**: TCP payload bytes between the nodes and their store or peers \
(both directions, protocol framing included; for instant copy also its gossip datagrams), from \
the kernel's per-connection counters (`ss`), divided over all requests: replication, fetches, \
anti-entropy, Redis and PostgreSQL traffic alike. `≥` marks a run where a connection closed \
mid-run and took its last bytes with it.
* **p50 / p99**: latency of reads (`GET`) and writes (`POST`, `DELETE`) separately, as the load \
generator saw them. **req/s**: the whole workload. **errors**: transport errors and unexpected \
statuses (a 401 after login is a lost session).
* **paper**: what the paper's Table 1 claims per read.
";

/// What each scaling column counts.
const SCALING_LEGEND: &str = "\
* **replication updates / write**: session updates sent to peers per write (after coalescing \
queued updates to one session); **round trips / write**: push batches per write; \
**N / write**: those plus the calls the write requests made themselves.
* **push B / write**: sealed update bytes per write (the node's counter); **node ↔ peer B / \
write**: everything the nodes exchanged (TCP payload of pushes, fetches and anti-entropy, plus \
gossip datagrams), from the kernel's counters, divided over the writes.
";

impl Report {
    /// The paper's Table 1, measured like for like, as Markdown.
    pub fn table(&self) -> String {
        let mut t = String::from(
            "| scheme | session lives in | N / read | N / write | D / read | D / write | client ↔ node B / read (up + down) | client ↔ node B / write | node ↔ store B / request | read p50 / p99 ms | write p50 / p99 ms | req/s | errors | paper: N / D per read |\n\
             |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n",
        );
        for s in &self.schemes {
            row(&mut t, s);
        }
        t
    }

    /// The scaling experiment as Markdown (empty when it did not run).
    pub fn scaling_table(&self) -> String {
        if self.scaling.is_empty() {
            return String::new();
        }
        let mut t = String::from(
            "| nodes | instant copy | replication updates / write | round trips / write | N / write | push B / write | node ↔ peer B / write | req/s | write p50 / p99 ms | errors |\n\
             |--:|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        for s in &self.scaling {
            let m = &s.measured;
            let r = m.replication.clone().unwrap_or_default();
            let _ = writeln!(
                t,
                "| {} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {} | {:.0} | {:.2} / {:.2} | {} |",
                s.nodes,
                s.replication,
                r.messages_per_write,
                r.batches_per_write,
                m.n_per_write_total,
                r.bytes_per_write,
                wire_bytes(m, true),
                m.throughput_rps,
                m.writes_stats.latency.p50_ms,
                m.writes_stats.latency.p99_ms,
                errors(m)
            );
        }
        t
    }

    /// The whole Markdown report: conditions, Table 1 and its legend, the scaling table and its
    /// legend. This is `results.md`.
    pub fn markdown(&self) -> String {
        let o = &self.options;
        let m = &self.machine;
        let mut out = format!(
            "Measured {} on {} cores ({}; {}{}), load average before {} / after {}, by `{}`: \
             {} nodes per scheme, {} virtual users, {} requests ({}), each request to a random \
             node.\n\n",
            m.started_utc,
            m.cores,
            m.cpu.as_deref().unwrap_or("CPU unknown"),
            m.os,
            m.kernel
                .as_deref()
                .map(|k| format!(" {k}"))
                .unwrap_or_default(),
            load_text(m.load_before),
            load_text(m.load_after),
            self.command.as_deref().unwrap_or("bench table1"),
            o.nodes,
            o.users,
            o.requests,
            o.mix.describe(),
        );
        out.push_str(&self.table());
        out.push('\n');
        out.push_str(TABLE_LEGEND);
        if !self.scaling.is_empty() {
            let _ = write!(
                out,
                "\nInstant copy's admitted limit: \"all\" against one backup (k=1), write-heavy \
                 ({}), {} users, {} requests per run:\n\n",
                o.scaling_mix.describe(),
                o.scaling_users,
                o.scaling_requests
            );
            out.push_str(&self.scaling_table());
            out.push('\n');
            out.push_str(SCALING_LEGEND);
        }
        out
    }
}

/// The line before the generated block in a document that includes `results.md`.
pub const BEGIN_MARKER: &str =
    "<!-- compare:begin: generated by `bench table1` from results.md; do not edit by hand -->";
/// The line after it.
pub const END_MARKER: &str = "<!-- compare:end -->";

/// Why [`splice`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the document has no {BEGIN_MARKER} ... {END_MARKER} block (each marker once, on its own line, begin first)"
)]
pub struct NoGeneratedBlock;

/// `doc` with the lines between [`BEGIN_MARKER`] and [`END_MARKER`] replaced by `generated`
/// (the markers stay). Fails when the markers are missing, repeated or out of order, and never
/// touches anything outside them.
pub fn splice(doc: &str, generated: &str) -> Result<String, NoGeneratedBlock> {
    crate::markers::splice_between(doc, BEGIN_MARKER, END_MARKER, generated).ok_or(NoGeneratedBlock)
}

/// The generated block of `doc` (between the markers, trimmed), if it has one.
pub fn generated_block(doc: &str) -> Option<&str> {
    crate::markers::block_between(doc, BEGIN_MARKER, END_MARKER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_only_the_block_and_refuses_without_markers() {
        let doc = format!("# T\n\nbefore\n{BEGIN_MARKER}\nold table\n{END_MARKER}\nafter\n");
        let out = splice(&doc, "| new |\n").unwrap();
        assert_eq!(
            out,
            format!("# T\n\nbefore\n{BEGIN_MARKER}\n\n| new |\n\n{END_MARKER}\nafter\n")
        );
        assert_eq!(generated_block(&out), Some("| new |"));
        // Splicing again gives the same document.
        assert_eq!(splice(&out, "| new |").unwrap(), out);
        assert_eq!(splice("no markers", "x"), Err(NoGeneratedBlock));
        let twice = format!("{doc}{BEGIN_MARKER}\n");
        assert_eq!(splice(&twice, "x"), Err(NoGeneratedBlock));
        let reversed = format!("{END_MARKER}\n{BEGIN_MARKER}\n");
        assert_eq!(splice(&reversed, "x"), Err(NoGeneratedBlock));
    }
}
