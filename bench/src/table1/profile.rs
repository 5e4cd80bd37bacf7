//! `bench table1 --profile DIR`: where the nodes' CPU goes during a run, sampled by Linux
//! `perf`.
//!
//! For every run, once its cluster is up, a [`Recorder`] attaches `perf record -e cpu-clock` to
//! the node processes (software clock sampling at [`FREQUENCY`] Hz per CPU: it works where the
//! hardware counters are not exposed, as on virtual machines) and stops it with SIGINT when the
//! workload ends. [`Recorder::finish`] then asks `perf report` for the self time per symbol and
//! sums it into a [`Profile`]: CPU per request (samples ÷ frequency ÷ requests, so schemes
//! compare like for like) and the share of each *area* — the crate a symbol belongs to (the
//! first path segment that is not `core`, `alloc` or `std`, so `drop_in_place<hyper::...>`
//! counts as hyper), the kernel, or the shared library.
//!
//! Only the nodes are sampled, not the load generator. Sampling slows the nodes a little, so a
//! profiled run's req/s are not comparison figures (the CLI refuses `--profile` with
//! `--readme`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::process::{Child, Command};

/// Samples per second per CPU.
pub const FREQUENCY: u32 = 999;

/// How many symbols a profile keeps, hottest first.
const TOP_SYMBOLS: usize = 15;

/// A `perf record` attached to a run's nodes.
#[derive(Debug)]
pub struct Recorder {
    child: Child,
    data: PathBuf,
    run: String,
}

/// What one profiled run found.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    /// The run.
    pub run: String,
    /// Samples taken in the nodes.
    pub samples: u64,
    /// Workload requests served meanwhile.
    pub requests: u64,
    /// Node CPU time per request, in microseconds.
    pub cpu_us_per_request: f64,
    /// Share of the samples per area (crate, kernel or library), largest first.
    pub areas: Vec<(String, f64)>,
    /// The hottest symbols by self time: (area, symbol, share).
    pub symbols: Vec<(String, String, f64)>,
    /// `perf report`'s full output.
    pub report: PathBuf,
}

/// A file name for a run: its label with anything but letters and digits turned into `-`.
fn file_stem(run: &str) -> String {
    let mut s: String = run
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    s.trim_matches('-').to_owned()
}

/// Checks that `perf` can run at all, before minutes are spent measuring.
pub async fn check() -> Result<(), String> {
    let out = Command::new("perf")
        .arg("--version")
        .output()
        .await
        .map_err(|e| {
            format!(
                "--profile needs Linux perf, which could not be run ({e}); on Debian: \
                 apt-get install linux-perf"
            )
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`perf --version` failed: {}", out.status))
    }
}

impl Recorder {
    /// Attaches `perf record` to `pids`, writing `DIR/<run>.perf.data`.
    pub async fn start(dir: &Path, run: &str, pids: &[u32]) -> Result<Recorder, String> {
        if pids.is_empty() {
            return Err(format!("{run}: no node process to profile"));
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let data = dir.join(format!("{}.perf.data", file_stem(run)));
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        let mut child = Command::new("perf")
            .args(["record", "-q", "-e", "cpu-clock", "-F"])
            .arg(FREQUENCY.to_string())
            .arg("-p")
            .arg(list.join(","))
            .arg("-o")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting perf record: {e}"))?;
        // perf attaches within a few milliseconds; one that cannot (permissions, no such
        // pid) exits at once, and that is better reported now than after the run.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Ok(Some(status)) = child.try_wait() {
            let stderr = match child.wait_with_output().await {
                Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                Err(e) => e.to_string(),
            };
            return Err(format!("perf record exited at once ({status}): {stderr}"));
        }
        Ok(Recorder {
            child,
            data,
            run: run.to_owned(),
        })
    }

    /// Stops the sampler (SIGINT, so it writes its file) and reads the profile out of it.
    pub async fn finish(mut self, requests: u64) -> Result<Profile, String> {
        if let Some(pid) = self.child.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)
                .map_err(|e| format!("stopping perf record: {e}"))?;
        }
        match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("waiting for perf record: {e}")),
            Err(_) => {
                let _ = self.child.kill().await;
                return Err("perf record did not stop within 60 s of SIGINT".into());
            }
        }
        let out = Command::new("perf")
            .args(["report", "--stdio", "-q", "-n", "--no-children"])
            .args(["--sort", "dso,symbol", "--percent-limit", "0", "-i"])
            .arg(&self.data)
            .output()
            .await
            .map_err(|e| format!("running perf report: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "perf report on {} failed: {}",
                self.data.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text: String = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| format!("{}\n", l.trim_end()))
            .collect();
        let report = self.data.with_extension("txt");
        std::fs::write(&report, text.as_bytes())
            .map_err(|e| format!("writing {}: {e}", report.display()))?;
        Ok(Profile::of(
            &self.run,
            &parse_report(&text),
            requests,
            report,
        ))
    }
}

/// One line of `perf report -n --sort dso,symbol`.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    samples: u64,
    dso: String,
    kernel: bool,
    symbol: String,
}

/// The rows of `perf report --stdio -q -n --sort dso,symbol`: `  12.5%  340  dso  [.] symbol`.
/// Lines of any other shape (call chains, blank lines) are skipped.
fn parse_report(text: &str) -> Vec<Row> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.next()?.strip_suffix('%')?.parse::<f64>().ok()?;
            let samples = words.next()?.parse::<u64>().ok()?;
            let dso = words.next()?.to_owned();
            let kind = words.next()?;
            let kernel = match kind {
                "[k]" => true,
                "[.]" | "[g]" | "[u]" => false,
                _ => return None,
            };
            // perf pads the line with empty columns shown as `-`.
            let mut words: Vec<&str> = words.collect();
            while words.last() == Some(&"-") {
                words.pop();
            }
            let symbol = words.join(" ");
            Some(Row {
                samples,
                dso,
                kernel,
                symbol,
            })
        })
        .collect()
}

/// The area a symbol's time counts to: the kernel, its crate, or its shared library.
fn area(row: &Row) -> String {
    if row.kernel || row.dso.starts_with("[kernel") {
        return "kernel (TCP, epoll, syscalls)".into();
    }
    if let Some(krate) = crate_of(&row.symbol) {
        return krate;
    }
    if row.dso.starts_with("libc") {
        return "libc (malloc, memcpy)".into();
    }
    if !row.symbol.starts_with("0x") && !row.dso.starts_with('[') && !row.dso.contains(".so") {
        // A symbol of the binary that names no crate: the standard library's own code.
        return "Rust core/alloc/std".into();
    }
    if row.symbol.starts_with("0x") {
        return format!("{} (no symbol)", row.dso);
    }
    row.dso.clone()
}

/// The first crate a Rust symbol names, skipping the standard library's: `core`, `alloc`, `std`
/// and the leading `<`, `&`, `mut`, `dyn` of generic paths.
fn crate_of(symbol: &str) -> Option<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let bytes = symbol.as_bytes();
    let mut i = 0;
    while i < symbol.len() {
        // A path starts where an identifier follows anything but an identifier or a `:`.
        let starts = i == 0 || !(ident(bytes[i - 1] as char) || bytes[i - 1] == b':');
        let len = symbol[i..]
            .find(|c: char| !ident(c))
            .unwrap_or(symbol.len() - i);
        if starts && len > 0 && symbol[i + len..].starts_with("::") {
            let name = &symbol[i..i + len];
            if !matches!(name, "core" | "alloc" | "std") {
                return Some(name.to_owned());
            }
        }
        i += if len > 0 {
            len
        } else {
            symbol[i..].chars().next().map_or(1, char::len_utf8)
        };
    }
    None
}

impl Profile {
    fn of(run: &str, rows: &[Row], requests: u64, report: PathBuf) -> Profile {
        let samples: u64 = rows.iter().map(|r| r.samples).sum();
        let share = |n: u64| {
            if samples == 0 {
                0.0
            } else {
                n as f64 / samples as f64
            }
        };
        let mut by_area: BTreeMap<String, u64> = BTreeMap::new();
        for row in rows {
            *by_area.entry(area(row)).or_default() += row.samples;
        }
        let mut areas: Vec<(String, f64)> =
            by_area.into_iter().map(|(a, n)| (a, share(n))).collect();
        areas.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut hottest: Vec<&Row> = rows.iter().collect();
        hottest.sort_by_key(|r| std::cmp::Reverse(r.samples));
        let symbols = hottest
            .into_iter()
            .take(TOP_SYMBOLS)
            .map(|r| (area(r), r.symbol.clone(), share(r.samples)))
            .collect();
        Profile {
            run: run.to_owned(),
            samples,
            requests,
            cpu_us_per_request: samples as f64 / f64::from(FREQUENCY) * 1e6
                / requests.max(1) as f64,
            areas,
            symbols,
            report,
        }
    }

    /// The profile as Markdown: CPU per request, the areas, the hottest symbols.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "### {}\n\n{} samples at {} Hz over {} requests: **{:.0} µs of node CPU per \
             request** (full report: `{}`).\n",
            self.run,
            self.samples,
            FREQUENCY,
            self.requests,
            self.cpu_us_per_request,
            self.report.display()
        );
        s.push_str("| area | share of node CPU |\n|---|---:|\n");
        for (area, share) in self.areas.iter().filter(|(_, s)| *s >= 0.005) {
            let _ = writeln!(s, "| {area} | {:.1} % |", share * 100.0);
        }
        s.push_str("\n| hottest symbols (self time) | area | share |\n|---|---|---:|\n");
        for (area, symbol, share) in &self.symbols {
            let symbol: String = symbol.chars().take(110).collect();
            let _ = writeln!(
                s,
                "| `{}` | {area} | {:.1} % |",
                symbol.replace('|', "\\|").replace('`', "'"),
                share * 100.0
            );
        }
        s
    }
}

/// All profiles of a run as one Markdown file.
pub fn markdown(profiles: &[Profile]) -> String {
    let mut s = String::from(
        "## Where the nodes' CPU goes (`bench table1 --profile`)\n\n\
         Sampled by `perf record -e cpu-clock` on the node processes only, during the workload \
         phase; the share is self time. Sampling slows the nodes a little: req/s of a profiled \
         run are not comparison figures.\n\n",
    );
    for p in profiles {
        s.push_str(&p.markdown());
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crates_are_found_past_the_standard_library() {
        let c = |s: &str| crate_of(s);
        assert_eq!(
            c("core::ptr::drop_in_place<hyper::proto::h1::conn::Conn<T>>"),
            Some("hyper".into())
        );
        assert_eq!(
            c("<tokio::runtime::task::Harness<T,S> as core::ops::Drop>::drop"),
            Some("tokio".into())
        );
        assert_eq!(
            c("session_core::layer::SessionLayer::call"),
            Some("session_core".into())
        );
        assert_eq!(
            c("<&mut serde_json::Serializer as serde::Serializer>::x"),
            Some("serde_json".into())
        );
        assert_eq!(c("alloc::raw_vec::finish_grow"), None);
        assert_eq!(c("__memmove_avx_unaligned_erms"), None);
    }

    #[test]
    fn report_rows_are_parsed_and_shared_out_by_area() {
        let text = "\
    40.00%  400  [kernel.kallsyms]  [k] tcp_sendmsg
    30.00%  300  demo-app           [.] hyper::proto::h1::role::parse_headers
               |--10.00%--caller
    20.00%  200  libc.so.6          [.] __memmove_avx_unaligned_erms
    10.00%  100  demo-app           [.] core::ptr::drop_in_place<tokio::sync::Notify>    -     -
     0.00%    0  demo-app           [.] core::str::converts::from_utf8

garbage line
";
        let rows = parse_report(text);
        assert_eq!(rows.len(), 5);
        assert_eq!(
            rows[3].symbol,
            "core::ptr::drop_in_place<tokio::sync::Notify>"
        );
        assert_eq!(rows[1].samples, 300);
        assert!(rows[0].kernel && !rows[1].kernel);
        let p = Profile::of("instant copy, all", &rows, 1000, PathBuf::from("r.txt"));
        assert_eq!(p.samples, 1000);
        // 1000 samples / 999 Hz / 1000 requests ≈ 1001 µs.
        assert!((p.cpu_us_per_request - 1001.0).abs() < 1.0);
        let area = |name: &str| p.areas.iter().find(|(a, _)| a == name).map(|(_, s)| *s);
        assert_eq!(area("kernel (TCP, epoll, syscalls)"), Some(0.4));
        assert_eq!(area("hyper"), Some(0.3));
        assert_eq!(area("libc (malloc, memcpy)"), Some(0.2));
        assert_eq!(area("tokio"), Some(0.1));
        assert_eq!(area("Rust core/alloc/std"), Some(0.0));
        assert_eq!(p.symbols[0].1, "tcp_sendmsg");
        assert!(p.markdown().contains("| hyper | 30.0 % |"));
    }

    #[test]
    fn run_labels_become_file_names() {
        assert_eq!(
            file_stem("scaling: instant copy all, 4 nodes"),
            "scaling-instant-copy-all-4-nodes"
        );
    }

    /// A process that burns one CPU until it is killed, or for some seconds at most (a bounded
    /// loop of shell builtins: it stops by itself whatever happens to the test, and forks
    /// nothing, so all its work is in the sampled process).
    fn busy() -> Child {
        Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 30000000 ]; do i=$((i+1)); done"])
            .kill_on_drop(true)
            .spawn()
            .expect("starting a busy shell")
    }

    /// The real thing: `perf record` attached to a busy process, stopped, and its report read
    /// into a profile whose samples and CPU per request follow from what ran. Needs `perf`
    /// (./scripts/test installs linux-perf) and root or `perf_event_paranoid` <= 1.
    #[tokio::test]
    async fn a_busy_process_is_sampled_and_its_cpu_shared_out() {
        check().await.expect("perf is needed for this test");
        let dir = tempfile::tempdir().unwrap();
        let mut child = busy();
        let pid = child.id().expect("a running child");
        let rec = Recorder::start(dir.path(), "busy: sh, 1 node", &[pid])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let profile = rec.finish(1_000).await.unwrap();
        let _ = child.kill().await;
        // About one second of one CPU at FREQUENCY Hz (fewer on a loaded machine, but never
        // none: a recorder attached to the wrong process, such as a parent that only waits,
        // samples nothing), never more than the test's wall time on every CPU.
        assert!(profile.samples > 0, "no samples");
        assert!(
            profile.samples <= 10 * u64::from(FREQUENCY),
            "{}",
            profile.samples
        );
        let expected = profile.samples as f64 / f64::from(FREQUENCY) * 1e6 / 1_000.0;
        assert!((profile.cpu_us_per_request - expected).abs() < 1e-6);
        let total: f64 = profile.areas.iter().map(|(_, s)| s).sum();
        assert!((total - 1.0).abs() < 1e-9, "areas sum to {total}");
        assert!(!profile.symbols.is_empty());
        assert_eq!(profile.report, dir.path().join("busy-sh-1-node.perf.txt"));
        let report = std::fs::read_to_string(&profile.report).unwrap();
        assert_eq!(
            parse_report(&report).iter().map(|r| r.samples).sum::<u64>(),
            profile.samples
        );
        assert!(dir.path().join("busy-sh-1-node.perf.data").exists());
    }

    #[tokio::test]
    async fn nothing_to_profile_or_a_process_that_is_gone_is_an_error_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let e = Recorder::start(dir.path(), "empty", &[]).await.unwrap_err();
        assert!(e.contains("no node process"), "{e}");
        check().await.expect("perf is needed for this test");
        // A process that has exited and been reaped: perf cannot attach and says so at once.
        let mut gone = Command::new("true").spawn().unwrap();
        let pid = gone.id().unwrap();
        gone.wait().await.unwrap();
        let e = Recorder::start(dir.path(), "gone", &[pid])
            .await
            .unwrap_err();
        assert!(e.contains("perf record exited at once"), "{e}");
    }
}
