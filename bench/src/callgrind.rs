//! `bench instructions`: CPU instructions per request of one route on one target, counted by
//! valgrind's callgrind. Instruction counts barely move on a noisy shared machine (unlike
//! req/s), so they are how hot-path changes are compared before and after, and the dump's
//! per-function costs say where the time goes.
//!
//! The target runs under `valgrind --tool=callgrind`; after set-up, the counters are zeroed
//! (`callgrind_control -z`), wrk drives the route, the counters are dumped
//! (`callgrind_control -d`), and the dump's total is divided by the requests wrk completed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client;
use crate::error::{BenchError, Context, Result};
use crate::peers::PeerKind;
use crate::targets::{Cleanup, Launcher, Target};
use crate::wrk::{self, Route, WrkConfig};

/// What one count found.
#[derive(Debug, Clone)]
pub struct Count {
    /// Target measured.
    pub target: Target,
    /// Route measured.
    pub route: Route,
    /// Requests completed while counting.
    pub requests: u64,
    /// Instructions executed by the server meanwhile (all threads).
    pub instructions: u64,
    /// The dump, for `callgrind_annotate`.
    pub dump: PathBuf,
}

impl Count {
    /// Instructions per request.
    pub fn per_request(&self) -> f64 {
        self.instructions as f64 / self.requests.max(1) as f64
    }
}

/// The `summary:` (or `totals:`) instruction count of a callgrind dump.
pub fn dump_total(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

async fn control(args: &[&str]) -> Result<()> {
    let out = tokio::process::Command::new("callgrind_control")
        .args(args)
        .output()
        .await
        .context("running callgrind_control (install valgrind)")?;
    if !out.status.success() {
        return Err(BenchError(format!(
            "callgrind_control {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

fn newest_dump(dir: &Path, pid: u32) -> Result<PathBuf> {
    let prefix = format!("callgrind.out.{pid}");
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).context(format!("reading {}", dir.display()))? {
        let entry = entry.context("reading a directory entry")?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&prefix) {
            continue;
        }
        let modified = entry
            .metadata()
            .and_then(|m| m.modified())
            .context("reading a dump's time")?;
        if best.as_ref().is_none_or(|(t, _)| modified > *t) {
            best = Some((modified, entry.path()));
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        BenchError(format!(
            "no callgrind dump for pid {pid} in {}",
            dir.display()
        ))
    })
}

/// Counts instructions per request of `route` on `target` (the launcher's wrapper is replaced
/// by callgrind; its log directory receives the dumps).
pub async fn count(
    launcher: &Launcher,
    target: Target,
    route: Route,
    duration: Duration,
    sessions: usize,
) -> Result<Count> {
    let dir = launcher
        .log_dir
        .join(format!("callgrind-{}", target.name()));
    std::fs::create_dir_all(&dir).context(format!("creating {}", dir.display()))?;
    let mut launcher = launcher.clone();
    launcher.wrapper = vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}/callgrind.out.%p", dir.display()),
    ];
    let mut cleanup = Cleanup::default();
    let outcome = async {
        let server = launcher.start(target, &mut cleanup).await?;
        let result = async {
            let pid = server
                .pid()
                .ok_or_else(|| BenchError::msg("the server has no pid"))?;
            let client = client::http_client()?;
            let needs_token = target != Target::Peer(PeerKind::Floor);
            let mut tokens =
                client::setup_sessions(&client, &server.url, sessions, 4, needs_token).await?;
            if !needs_token {
                tokens = (0..sessions).map(|i| format!("floor{i:0>17}")).collect();
            }
            let config = WrkConfig {
                threads: 1,
                connections: 4,
                duration,
                pin: None,
            };
            // Warm up (lazy statics, pools, allocator), then count.
            let mut warm = config.clone();
            warm.duration = Duration::from_secs(2);
            wrk::run(&server.url, route, &tokens, &warm, &dir).await?;
            let p = pid.to_string();
            control(&["-z", &p]).await?;
            let r = wrk::run(&server.url, route, &tokens, &config, &dir).await?;
            control(&["-d", &p]).await?;
            if r.errors() > 0 {
                return Err(BenchError(format!("{} errors while counting", r.errors())));
            }
            let dump = newest_dump(&dir, pid)?;
            let text =
                std::fs::read_to_string(&dump).context(format!("reading {}", dump.display()))?;
            let instructions = dump_total(&text)
                .ok_or_else(|| BenchError(format!("no total in {}", dump.display())))?;
            Ok(Count {
                target,
                route,
                requests: r.requests,
                instructions,
                dump,
            })
        }
        .await;
        server.stop(Duration::from_secs(60)).await;
        result
    }
    .await;
    for problem in cleanup.run(&launcher.services).await {
        eprintln!("cleanup problem: {problem}");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_read_from_dumps() {
        let dump =
            "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 123456789\n\nfn=main\n";
        assert_eq!(dump_total(dump), Some(123_456_789));
        assert_eq!(dump_total("events: Ir\ntotals: 42\n"), Some(42));
        assert_eq!(dump_total("events: Ir\n"), None);
    }

    #[test]
    fn per_request_divides() {
        let c = Count {
            target: Target::Peer(PeerKind::Floor),
            route: Route::Profile,
            requests: 4,
            instructions: 100,
            dump: PathBuf::new(),
        };
        assert_eq!(c.per_request(), 25.0);
    }
}
