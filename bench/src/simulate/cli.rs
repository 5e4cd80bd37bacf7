//! `bench simulate`: the command line (flags, the files written, the README splice).

use std::path::PathBuf;

use super::report::{Measured, splice};
use super::{Mode, SimOptions};
use crate::error::{BenchError, Result};

/// The measured results read by default, when present.
pub const DEFAULT_MEASURED: &str = "docs/compare/results.json";

/// `--size-hint`: a cluster size, or `None` for `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeHint(pub Option<usize>);

fn size_hint(s: &str) -> std::result::Result<SizeHint, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(SizeHint(None));
    }
    s.parse::<usize>()
        .map(|n| SizeHint(Some(n)))
        .map_err(|_| format!("{s:?}: a cluster size or `auto`"))
}

/// The arguments of `bench simulate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Cluster sizes, comma-separated (2 to 1024).
    #[arg(long, value_delimiter = ',', default_value = "2,4,8,16,64,256")]
    pub nodes: Vec<usize>,
    /// Replication modes, comma-separated: all, k=1, k=2, ... (or 1, 2, ...).
    #[arg(long, value_delimiter = ',', default_value = "all,k=1,k=2")]
    pub modes: Vec<Mode>,
    /// One-way link latency, µs (node ↔ node and client ↔ node).
    #[arg(long, default_value_t = 200.0)]
    pub latency_us: f64,
    /// CPU time a node spends on one peer request, µs.
    #[arg(long, default_value_t = 20.0)]
    pub handle_us: f64,
    /// Extra CPU time per update in a push batch, µs.
    #[arg(long, default_value_t = 2.0)]
    pub handle_update_us: f64,
    /// Target request rate of all users together, req/s.
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
    /// Virtual users (one session and one request at a time each).
    #[arg(long, default_value_t = 20)]
    pub users: usize,
    /// Sessions in the cluster (the users' plus idle ones).
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,
    /// Requests per run.
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The cluster size foca's dissemination is tuned for (sets how many messages carry each
    /// membership update): `auto` for each run's own size, as gossip.rs does, or a fixed
    /// number (16 models the fixed hint gossip.rs used before).
    #[arg(long, default_value = "auto", value_parser = size_hint)]
    pub size_hint: SizeHint,
    /// Skip the node-loss phase.
    #[arg(long)]
    pub no_loss: bool,
    /// The measured `bench table1` results to show beside the simulated rows [default:
    /// docs/compare/results.json when it exists].
    #[arg(long)]
    pub measured: Option<PathBuf>,
    /// Directory for results.json, results.md and scaling.svg.
    #[arg(long, default_value = "docs/simulate")]
    pub out: PathBuf,
    /// Also copy results.md into this Markdown file (the README), between its
    /// `<!-- simulate:begin ... -->` and `<!-- simulate:end -->` lines.
    #[arg(long)]
    pub readme: Option<PathBuf>,
}

impl Args {
    /// The model parameters these arguments ask for.
    pub fn options(&self) -> SimOptions {
        SimOptions {
            nodes: self.nodes.clone(),
            modes: self.modes.clone(),
            latency_us: self.latency_us,
            handle_us: self.handle_us,
            handle_update_us: self.handle_update_us,
            rate: self.rate,
            users: self.users,
            sessions: self.sessions,
            requests: self.requests,
            seed: self.seed,
            loss: !self.no_loss,
            size_hint: self.size_hint.0,
        }
    }
}

/// Runs the simulation, prints the Markdown, writes `--out` (and splices `--readme`).
pub fn run(args: Args) -> Result<()> {
    let options = args.options();
    options.validate()?;
    // Check the inputs before simulating.
    let readme = match &args.readme {
        Some(path) => {
            let doc = std::fs::read_to_string(path)
                .map_err(|e| BenchError(format!("reading {}: {e}", path.display())))?;
            splice(&doc, "").map_err(|e| BenchError(format!("{}: {e}", path.display())))?;
            Some(path.clone())
        }
        None => None,
    };
    let measured = match &args.measured {
        Some(path) => Some(Measured::load(path)?),
        None => {
            let path = PathBuf::from(DEFAULT_MEASURED);
            if path.exists() {
                Some(Measured::load(&path)?)
            } else {
                eprintln!("simulate: no {DEFAULT_MEASURED} here; the tables show no measured rows");
                None
            }
        }
    };
    let mut report = super::run(&options, true)?;
    report.measured = measured;
    report.command = Some(format!(
        "bench {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    ));
    report.generated_utc = Some(crate::machine::utc_now());
    let md = report.markdown();
    println!("{md}");
    for f in report.write(&args.out)? {
        eprintln!("wrote {}", f.display());
    }
    if let Some(path) = readme {
        let doc = std::fs::read_to_string(&path)
            .map_err(|e| BenchError(format!("reading {}: {e}", path.display())))?;
        let spliced =
            splice(&doc, &md).map_err(|e| BenchError(format!("{}: {e}", path.display())))?;
        std::fs::write(&path, spliced)
            .map_err(|e| BenchError(format!("writing {}: {e}", path.display())))?;
        eprintln!("updated the simulated section of {}", path.display());
    }
    Ok(())
}
