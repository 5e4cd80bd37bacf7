//! Bytes on the wire between the nodes and what they call (peers, Redis, PostgreSQL), as the
//! kernel counts them.
//!
//! Each scheme speaks its own protocol to its store (RESP, the PostgreSQL wire protocol, our
//! HTTP peer transport), so counting in each client library would count different things. The
//! kernel's TCP counters count the same thing for all of them: `tcp_info`'s `bytes_sent` and
//! `bytes_received` of every established connection a node process opened to one of the target
//! ports, read with `ss` (iproute2). That is TCP payload (protocol framing, headers and
//! acknowledging answers included; TCP/IP headers not). Each connection is counted once, on
//! the side that opened it, in both directions.
//!
//! A connection that closes takes its counters with it, so a [`Sampler`] reads them every
//! [`SAMPLE_EVERY`] during the workload and keeps each connection's last value: a connection
//! pool closes a connection only after it sat idle for longer than that (instant copy's peer
//! pool: 2.5 s by default), so its last sample already holds all its bytes. One `ss` run costs
//! about 12 ms of CPU here (it walks `/proc` to name the owners), so sampling twice a second
//! takes about 2 % of one core, the same for every scheme. [`Delta::closed`] says how
//! many connections closed during the run.

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often a [`Sampler`] reads the counters.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// One connection: `(local address, remote address)` as `ss` prints them.
type ConnKey = (String, String);

/// The byte counts of the matching connections at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    conns: BTreeMap<ConnKey, u64>,
}

/// What changed between two snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    /// Bytes sent plus received on the connections, over the interval.
    pub bytes: u64,
    /// Connections present at the end.
    pub connections: usize,
    /// Connections present at the start and gone at the end (their last bytes are missing).
    pub closed: usize,
}

impl Snapshot {
    /// Reads the connections owned by one of `pids` whose remote port is one of `ports`.
    /// Fails with the reason when `ss` cannot run or shows no owners.
    pub fn take(pids: &[u32], ports: &[u16]) -> Result<Snapshot, String> {
        if ports.is_empty() {
            return Ok(Snapshot::default());
        }
        // ss's own filter keeps the output to the target ports: `( dport = :a or dport = :b )`.
        let mut filter = vec!["(".to_owned()];
        for (i, p) in ports.iter().enumerate() {
            if i > 0 {
                filter.push("or".into());
            }
            filter.extend(["dport".into(), "=".into(), format!(":{p}")]);
        }
        filter.push(")".into());
        let out = Command::new("ss")
            .args(["-t", "-i", "-n", "-p", "-H", "state", "established"])
            .args(&filter)
            .output()
            .map_err(|e| format!("running ss (iproute2): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ss failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self::parse(
            &String::from_utf8_lossy(&out.stdout),
            pids,
            ports,
        ))
    }

    /// Parses `ss -t -i -n -p -H` output: a socket line (state omitted by `state established`:
    /// `Recv-Q Send-Q local peer users:((...))`) followed by an indented `tcp_info` line.
    pub fn parse(text: &str, pids: &[u32], ports: &[u16]) -> Snapshot {
        let pids: HashSet<u32> = pids.iter().copied().collect();
        let ports: HashSet<u16> = ports.iter().copied().collect();
        let mut conns = BTreeMap::new();
        let mut current: Option<ConnKey> = None;
        for line in text.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some(key) = current.take() {
                    let bytes = field(line, "bytes_sent:")
                        .or_else(|| field(line, "bytes_acked:"))
                        .unwrap_or(0)
                        + field(line, "bytes_received:").unwrap_or(0);
                    conns.insert(key, bytes);
                }
                continue;
            }
            current = None;
            let cols: Vec<&str> = line.split_whitespace().collect();
            // Recv-Q, Send-Q, local, peer, process; some versions print the state first.
            let start = usize::from(cols.first().is_some_and(|c| c.parse::<u64>().is_err()));
            let (Some(local), Some(peer)) = (cols.get(start + 2), cols.get(start + 3)) else {
                continue;
            };
            let owned = owner_pids(line).any(|p| pids.contains(&p));
            let to_target = port_of(peer).is_some_and(|p| ports.contains(&p));
            if owned && to_target {
                current = Some(((*local).to_owned(), (*peer).to_owned()));
            }
        }
        Snapshot { conns }
    }

    /// Matching connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True when no connection matched.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

/// Every connection seen over a run: its value at the first sample (0 for one opened during
/// the run) and at the last.
#[derive(Debug, Clone, Default)]
struct Seen {
    first: BTreeMap<ConnKey, u64>,
    last: BTreeMap<ConnKey, u64>,
}

impl Seen {
    fn starting_at(baseline: Snapshot) -> Self {
        Seen {
            first: baseline.conns.clone(),
            last: baseline.conns,
        }
    }

    fn observe(&mut self, snap: Snapshot) {
        for (k, v) in snap.conns {
            self.first.entry(k.clone()).or_insert(0);
            let last = self.last.entry(k).or_insert(0);
            *last = (*last).max(v);
        }
    }

    fn delta(&self, end: &Snapshot) -> Delta {
        Delta {
            bytes: self
                .last
                .iter()
                .map(|(k, v)| v.saturating_sub(self.first.get(k).copied().unwrap_or(0)))
                .sum(),
            connections: end.conns.len(),
            closed: self
                .last
                .keys()
                .filter(|k| !end.conns.contains_key(*k))
                .count(),
        }
    }
}

/// Reads the counters every [`SAMPLE_EVERY`] on a thread of its own until
/// [`finish`](Sampler::finish).
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Delta, String>>,
}

impl Sampler {
    /// Takes the first sample now (failing with the reason when `ss` cannot run), then samples
    /// in the background.
    pub fn start(pids: Vec<u32>, ports: Vec<u16>) -> Result<Sampler, String> {
        let baseline = Snapshot::take(&pids, &ports)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("compare-sockets".into())
            .spawn(move || {
                let mut seen = Seen::starting_at(baseline);
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(SAMPLE_EVERY);
                    seen.observe(Snapshot::take(&pids, &ports)?);
                }
                let end = Snapshot::take(&pids, &ports)?;
                seen.observe(end.clone());
                Ok(seen.delta(&end))
            })
            .map_err(|e| format!("starting the socket sampler: {e}"))?;
        Ok(Sampler { stop, thread })
    }

    /// Takes the last sample and returns the traffic since the first.
    pub fn finish(self) -> Result<Delta, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| "the socket sampler panicked".to_owned())?
    }
}

/// The number after `name` in a `tcp_info` line.
fn field(line: &str, name: &str) -> Option<u64> {
    let at = line.find(name)? + name.len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The port of `127.0.0.1:5432`, `[::1]:5432` or `*:5432`.
fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':')?.1.parse().ok()
}

/// The `pid=` values of a socket line's `users:((...))` column.
fn owner_pids(line: &str) -> impl Iterator<Item = u32> + '_ {
    line.split("pid=")
        .skip(1)
        .filter_map(|rest| rest.split([',', ')']).next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
0      0      127.0.0.1:40000 127.0.0.1:6379  users:((\"demo-app\",pid=100,fd=12))
\t cubic wscale:7,7 rto:204 rtt:0.05 bytes_sent:1200 bytes_acked:1201 bytes_received:800 segs_out:9
0      0      127.0.0.1:6379  127.0.0.1:40000 users:((\"redis-server\",pid=7,fd=9))
\t cubic bytes_sent:800 bytes_acked:800 bytes_received:1200
0      0      127.0.0.1:40002 127.0.0.1:6379  users:((\"other\",pid=555,fd=3))
\t cubic bytes_sent:99999 bytes_received:99999
0      0      [::1]:40010     [::1]:5432      users:((\"demo-app\",pid=101,fd=4),(\"demo-app\",pid=102,fd=4))
\t cubic bytes_acked:50 bytes_received:70
";

    #[test]
    fn only_the_nodes_outbound_connections_to_targets_count() {
        let s = Snapshot::parse(SAMPLE, &[100, 102], &[6379, 5432]);
        assert_eq!(s.len(), 2, "{s:?}");
        // redis-server's side of the same connection and another process are not counted.
        let mut seen = Seen::default();
        seen.observe(s.clone());
        assert_eq!(seen.delta(&s).bytes, 1200 + 800 + 50 + 70);
        assert!(Snapshot::parse(SAMPLE, &[100], &[1]).is_empty());
    }

    #[test]
    fn deltas_count_new_connections_in_full_and_report_closed_ones() {
        let before = Snapshot::parse(SAMPLE, &[100, 101], &[6379, 5432]);
        let later = SAMPLE
            .replace("bytes_sent:1200", "bytes_sent:1500")
            .replace("[::1]:40010", "[::1]:40011");
        let after = Snapshot::parse(&later, &[100, 101], &[6379, 5432]);
        let mut seen = Seen::starting_at(before);
        seen.observe(after.clone());
        let d = seen.delta(&after);
        assert_eq!(d.bytes, 300 + 120, "{d:?}");
        assert_eq!((d.connections, d.closed), (2, 1));
    }

    #[test]
    fn samples_keep_the_bytes_of_connections_that_closed_between_them() {
        let pids = [100, 101];
        let ports = [6379, 5432];
        let baseline = Snapshot::parse(SAMPLE, &pids, &ports);
        let mut seen = Seen::starting_at(baseline);
        // A new connection appears with 40 bytes, then the IPv6 one and the new one close.
        let mid = format!(
            "{SAMPLE}0 0 127.0.0.1:40003 127.0.0.1:6379 users:((\"demo-app\",pid=101,fd=9))\n\t bytes_sent:30 bytes_received:10\n"
        );
        seen.observe(Snapshot::parse(&mid, &pids, &ports));
        let end_text = SAMPLE
            .replace("bytes_sent:1200", "bytes_sent:1300")
            .lines()
            .take(2)
            .collect::<Vec<_>>()
            .join("\n");
        let end = Snapshot::parse(&end_text, &pids, &ports);
        seen.observe(end.clone());
        let d = seen.delta(&end);
        assert_eq!(d.bytes, 100 + 40, "{d:?}");
        assert_eq!((d.connections, d.closed), (1, 2));
    }

    #[test]
    fn the_sampler_reads_this_machine_or_says_why_not() {
        // No process of ours talks to port 1: zero bytes, or a reason when ss is missing.
        assert!(
            Snapshot::take(&[1], &[]).unwrap().is_empty(),
            "no ports: no ss run"
        );
        match Sampler::start(vec![std::process::id()], vec![1]) {
            Ok(s) => assert_eq!(s.finish().map(|d| d.bytes), Ok(0)),
            Err(e) => assert!(e.contains("ss"), "{e}"),
        }
    }

    #[test]
    fn garbage_lines_are_ignored() {
        let s = Snapshot::parse("nonsense\n\tbytes_sent:5\n\n", &[1], &[1]);
        assert!(s.is_empty());
    }
}
