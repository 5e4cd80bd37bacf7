//! `bench table1`: the command line of the Table 1 comparison (options, the README splice,
//! the files written).

use std::path::PathBuf;

use super::{Scheme, Table1Options};

/// The arguments of `bench table1`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Nodes per cluster (default: 3, --quick: 2).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Concurrent virtual users (default: 50, --quick: 4).
    #[arg(long)]
    pub users: Option<usize>,
    /// Workload requests per scheme (default: 100000, --quick: 120).
    #[arg(long)]
    pub requests: Option<usize>,
    /// Directory for results.json, results.md and the charts.
    #[arg(long, default_value = "compare-results")]
    pub out: PathBuf,
    /// Also copy results.md into this Markdown file (the README), between its
    /// `<!-- compare:begin ... -->` and `<!-- compare:end -->` lines.
    #[arg(long)]
    pub readme: Option<PathBuf>,
    /// Sample the nodes with Linux `perf` during every run; the profiles (CPU per request, the
    /// share of each crate, the hottest symbols) go to `<out>/profile.md` and `<out>/profile/`.
    /// Sampling slows the nodes, so it cannot be combined with --readme.
    #[arg(long, conflicts_with = "readme")]
    pub profile: bool,
    /// Small numbers, for a smoke run in seconds.
    #[arg(long)]
    pub quick: bool,
    /// Schemes to run, comma-separated (default: all of instantcopy-all, instantcopy-k1,
    /// instantcopy-k1-near, cookie, sql, redis).
    #[arg(long, value_delimiter = ',')]
    pub schemes: Option<Vec<Scheme>>,
    /// Cluster sizes of the all-vs-k=1 scaling runs, comma-separated (default: 2,4,8,
    /// --quick: 2,4); 0 skips them.
    #[arg(long, value_delimiter = ',')]
    pub scaling_nodes: Option<Vec<usize>>,
    /// Requests per scaling run (default: 20000, --quick: 60).
    #[arg(long)]
    pub scaling_requests: Option<usize>,
    /// Virtual users per scaling run (default: 20, --quick: 4).
    #[arg(long)]
    pub scaling_users: Option<usize>,
    /// PostgreSQL for the SQL scheme (default: DATABASE_URL, else
    /// postgres://postgres@127.0.0.1:5432/postgres).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Redis for the Redis scheme (default: REDIS_URL, else redis://127.0.0.1:6379).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Seed of the workload's random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The demo-app binary the nodes run (default: DEMO_APP_BIN, else `demo-app` next to this
    /// executable, built when missing in a release build).
    #[arg(long)]
    pub demo_bin: Option<PathBuf>,
}

impl Args {
    /// The comparison these arguments ask for.
    pub fn options(&self) -> Table1Options {
        let mut opts = if self.quick {
            Table1Options::quick()
        } else {
            Table1Options::full()
        };
        opts.nodes = self.nodes.unwrap_or(opts.nodes);
        opts.users = self.users.unwrap_or(opts.users);
        opts.requests = self.requests.unwrap_or(opts.requests);
        if let Some(schemes) = &self.schemes {
            opts.schemes = schemes.clone();
        }
        if let Some(sizes) = &self.scaling_nodes {
            opts.scaling_nodes = sizes.iter().copied().filter(|n| *n != 0).collect();
        }
        opts.scaling_requests = self.scaling_requests.unwrap_or(opts.scaling_requests);
        opts.scaling_users = self.scaling_users.unwrap_or(opts.scaling_users);
        if let Some(url) = &self.database_url {
            opts.database_url = url.clone();
        }
        if let Some(url) = &self.redis_url {
            opts.redis_url = url.clone();
        }
        opts.seed = self.seed;
        if self.profile {
            opts.profile = Some(self.out.join("profile"));
        }
        opts
    }
}

/// Runs the comparison, prints the Markdown tables, writes `--out` (and splices `--readme`).
pub async fn run(args: Args) -> Result<(), String> {
    let opts = args.options();
    let Args {
        out,
        readme,
        demo_bin,
        ..
    } = args;
    // Check the README before spending minutes measuring.
    let readme = match readme {
        Some(path) => {
            let doc = std::fs::read_to_string(&path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            super::splice(&doc, "").map_err(|e| format!("{}: {e}", path.display()))?;
            Some(path)
        }
        None => None,
    };
    let exe = crate::targets::locate_demo(demo_bin).map_err(|e| e.to_string())?;
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut report = super::run(&exe, &opts, progress)
        .await
        .map_err(|e| e.to_string())?;
    // The command as a reader would type it (service URLs are not on the line: they come
    // from the environment or flags, and a flag's password is redacted).
    let line: Vec<String> = std::env::args()
        .skip(1)
        .map(|a| {
            if a.contains("://") {
                super::redact(&a)
            } else {
                a
            }
        })
        .collect();
    report.command = Some(format!("bench {}", line.join(" ")));
    println!("{}", report.markdown());
    let files = report.write(&out).map_err(|e| e.to_string())?;
    for f in files {
        eprintln!("wrote {}", f.display());
    }
    if let Some(path) = readme {
        let doc = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let spliced = super::splice(&doc, &report.markdown())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::write(&path, spliced).map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("updated the generated tables in {}", path.display());
    }
    Ok(())
}
