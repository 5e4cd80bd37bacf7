//! # bench
//!
//! Proof, measured: session-sync against the most used Rust session library, tower-sessions,
//! in one run on one machine, plus the instant-copy cluster's replication lag and a soak run.
//!
//! * [`compare`] (`bench compare-peers`): the demo's three routes — `POST /login` (creates a
//!   session and cycles its id), `GET /profile` (read-only), `POST /cart/items` (read + write)
//!   — on our demo node with each backend, on tower-sessions with its `MemoryStore`, Redis and
//!   Postgres stores ([`peers`]), and on the same routes without any session layer (the
//!   *floor*). Each target is its own process, measured one at a time with the same
//!   [`wrk`](https://github.com/wg/wrk) settings, in rounds with the order rotated; medians and
//!   ratios to tower-sessions go to a Markdown table and `benches/RESULTS.md`.
//! * [`replication`] (`bench replication`): a 3-node instant-copy cluster written to at a fixed
//!   rate; replication lag percentiles and messages per write from the nodes' `/metrics`.
//! * [`soak`] (`bench soak`): a 3-node cluster under steady mixed load with a short idle
//!   timeout; RSS and errors sampled into CSV and an SVG chart.
//! * [`operations`] (`bench operations`): restart-to-ready, drain, anti-entropy bytes, join
//!   and membership times on in-process instant-copy nodes with the production timings.
//! * [`table1`] (`bench table1`): the paper's Table 1 measured — every scheme as a real
//!   multi-node cluster of demo-app processes under the same non-sticky workload, with N and D
//!   per read and per write, bytes on every link, latency and throughput, plus the all-vs-k=1
//!   scaling runs; results, charts ([`charts`]) and the README's generated block.
//! * [`simulate`] (`bench simulate`): instant copy's replication protocol at 16, 64 and 256
//!   nodes (and 2, 4, 8 beside the measured table) as a deterministic discrete-event model:
//!   messages and bytes per write for `all`, k=1, k=2, and detection and repair after a node
//!   loss, in virtual time.
//! * [`callgrind`] (`bench instructions`): CPU instructions per request of a route, counted
//!   by valgrind — the stable number hot-path work is judged by on a noisy machine.
//!
//! Design choices that keep the comparison honest:
//!
//! * **Same work.** The peer apps validate and answer exactly like the demo (same bodies, rules
//!   and JSON); the tower-sessions apps use the library's documented defaults (plain id cookie,
//!   unmodified sessions not re-saved, a 30-minute inactivity expiry like the demo's).
//! * **Real sessions.** Before measuring, each target gets a thousand users logged in with two
//!   cart lines each; wrk replays one pre-formatted request per session round-robin, so every
//!   request loads a distinct stored session.
//! * **Noise.** The machine is shared: the server and wrk can be pinned to different CPUs,
//!   every target is re-measured in every round, and ratios are taken within a round before
//!   the median. The 1-minute load average before each run is recorded next to its numbers.
//! * **Isolation.** Runs use a unique PostgreSQL schema and Redis key prefix per target and
//!   round (tower-sessions' Redis store has no prefix: its app deletes exactly the keys it
//!   created on shutdown), all removed at the end.
//!
//! ```no_run
//! # async fn run() -> Result<(), bench::error::BenchError> {
//! use std::time::Duration;
//! use bench::targets::{Binaries, Launcher, Services, Target};
//! use bench::wrk::WrkConfig;
//!
//! let launcher = Launcher {
//!     binaries: Binaries::locate(None)?,
//!     services: Services::from_env(),
//!     pin: Some("0".into()),
//!     wrapper: vec![],
//!     log_dir: std::env::temp_dir().join("bench-logs"),
//!     demo_env: vec![],
//! };
//! let options = bench::compare::CompareOptions {
//!     targets: Target::all(),
//!     repeats: 3,
//!     wrk: WrkConfig { threads: 1, connections: 32, duration: Duration::from_secs(10), pin: Some("1".into()) },
//!     warmup: Duration::from_secs(2),
//!     sessions: 1000,
//! };
//! let comparison = bench::compare::run(options, &launcher).await?;
//! println!("{}", comparison.to_markdown());
//! # Ok(()) }
//! ```

pub mod callgrind;
pub mod charts;
pub mod client;
pub mod compare;
pub mod error;
pub mod machine;
pub mod markers;
pub mod openmetrics;
pub mod operations;
pub mod peers;
pub mod replication;
pub mod results;
pub mod simulate;
pub mod soak;
pub mod table1;
pub mod targets;
pub mod wrk;
