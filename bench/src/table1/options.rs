//! What to measure: the schemes, the workload mix and the options of a run (validated
//! before anything starts).

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use demo_app::config::BackendKind;

use super::*;

/// Default PostgreSQL URL when neither `--database-url` nor `DATABASE_URL` is given.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Default Redis URL when neither `--redis-url` nor `REDIS_URL` is given.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// One of the compared schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Scheme {
    /// Instant copy, every write pushed to every other node (the paper's scheme).
    #[serde(rename = "instantcopy-all")]
    InstantCopyAll,
    /// Instant copy, each session on its owner and one backup.
    #[serde(rename = "instantcopy-k1")]
    InstantCopyK1,
    /// Instant copy with one backup, and a near cache on the node that holds no copy
    /// (`near_cache_capacity`).
    #[serde(rename = "instantcopy-k1-near")]
    InstantCopyK1Near,
    /// The whole session sealed in the cookie.
    #[serde(rename = "cookie")]
    Cookie,
    /// PostgreSQL.
    #[serde(rename = "sql")]
    Sql,
    /// Redis.
    #[serde(rename = "redis")]
    Redis,
}

impl Scheme {
    /// Every scheme, in table order.
    pub const ALL: [Scheme; 6] = [
        Scheme::InstantCopyAll,
        Scheme::InstantCopyK1,
        Scheme::InstantCopyK1Near,
        Scheme::Cookie,
        Scheme::Sql,
        Scheme::Redis,
    ];

    /// The name on the command line and in `results.json`.
    pub fn id(self) -> &'static str {
        match self {
            Scheme::InstantCopyAll => "instantcopy-all",
            Scheme::InstantCopyK1 => "instantcopy-k1",
            Scheme::InstantCopyK1Near => "instantcopy-k1-near",
            Scheme::Cookie => "cookie",
            Scheme::Sql => "sql",
            Scheme::Redis => "redis",
        }
    }

    /// The name in the table and the charts.
    pub fn label(self) -> &'static str {
        match self {
            Scheme::InstantCopyAll => "instant copy \"all\"",
            Scheme::InstantCopyK1 => "instant copy k=1",
            Scheme::InstantCopyK1Near => "instant copy k=1 + near cache",
            Scheme::Cookie => "cookie",
            Scheme::Sql => "SQL (PostgreSQL)",
            Scheme::Redis => "Redis",
        }
    }

    /// Where the session lives.
    pub fn lives(self) -> &'static str {
        match self {
            Scheme::InstantCopyAll => "every node's memory",
            Scheme::InstantCopyK1 => "owner + 1 backup (memory)",
            Scheme::InstantCopyK1Near => "owner + 1 backup, fetched copies cached elsewhere",
            Scheme::Cookie => "the client (sealed)",
            Scheme::Sql => "PostgreSQL",
            Scheme::Redis => "Redis",
        }
    }

    /// What the client carries (the measured mean size is added in the table).
    pub fn carries(self) -> &'static str {
        match self {
            Scheme::InstantCopyAll | Scheme::InstantCopyK1 | Scheme::InstantCopyK1Near => {
                "signed id + owner + version"
            }
            Scheme::Cookie => "the whole session, encrypted",
            Scheme::Sql | Scheme::Redis => "signed session id",
        }
    }

    /// The paper's N and D per read.
    pub fn paper(self) -> &'static str {
        match self {
            Scheme::InstantCopyAll | Scheme::InstantCopyK1 | Scheme::InstantCopyK1Near => {
                "N ≤ 1, D = 0"
            }
            Scheme::Cookie => "N = 0, D = 0",
            Scheme::Sql => "N = 0, D = 1",
            Scheme::Redis => "N = 1, D = 0",
        }
    }

    /// The backend the nodes run.
    pub fn backend(self) -> BackendKind {
        match self {
            Scheme::InstantCopyAll | Scheme::InstantCopyK1 | Scheme::InstantCopyK1Near => {
                BackendKind::Instantcopy
            }
            Scheme::Cookie => BackendKind::Cookie,
            Scheme::Sql => BackendKind::Sql,
            Scheme::Redis => BackendKind::Redis,
        }
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

impl std::str::FromStr for Scheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Scheme::ALL
            .into_iter()
            .find(|x| x.id() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scheme {s:?}: expected one of {}",
                    Scheme::ALL.map(Scheme::id).join(", ")
                )
            })
    }
}

/// The request mix, in relative weights (percent by convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mix {
    /// `GET /profile` (read-only).
    pub profile: u32,
    /// `GET /cart` (read-only).
    pub cart: u32,
    /// `POST /cart/items` (a write).
    pub add_item: u32,
    /// `DELETE /cart/items/{sku}` (a write).
    pub remove_item: u32,
}

impl Mix {
    /// The main table's workload: mostly profile reads, some cart writes.
    pub const READ_MOSTLY: Mix = Mix {
        profile: 75,
        cart: 10,
        add_item: 12,
        remove_item: 3,
    };
    /// The scaling experiment's workload: 60 % writes.
    pub const WRITE_HEAVY: Mix = Mix {
        profile: 30,
        cart: 10,
        add_item: 45,
        remove_item: 15,
    };

    pub(super) fn total(&self) -> u32 {
        self.profile + self.cart + self.add_item + self.remove_item
    }

    /// The operation for a draw in `0..total`.
    pub(super) fn pick(&self, draw: u32) -> Op {
        if draw < self.profile {
            Op::Profile
        } else if draw < self.profile + self.cart {
            Op::Cart
        } else if draw < self.profile + self.cart + self.add_item {
            Op::AddItem
        } else {
            Op::RemoveItem
        }
    }

    /// The share of writes, in percent.
    pub fn write_percent(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            t => f64::from(self.add_item + self.remove_item) * 100.0 / f64::from(t),
        }
    }

    /// "75% GET /profile, 10% GET /cart, ..." (shares of the total).
    pub fn describe(&self) -> String {
        let t = f64::from(self.total().max(1));
        [
            (self.profile, "GET /profile"),
            (self.cart, "GET /cart"),
            (self.add_item, "POST /cart/items"),
            (self.remove_item, "DELETE /cart/items/{sku}"),
        ]
        .iter()
        .filter(|(w, _)| *w > 0)
        .map(|(w, r)| format!("{:.0}% {r}", f64::from(*w) * 100.0 / t))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct Table1Options {
    /// Nodes per cluster in the main table.
    pub nodes: usize,
    /// Virtual users (concurrent).
    pub users: usize,
    /// Workload requests per scheme (spread over the users).
    pub requests: usize,
    /// The schemes, in table order.
    pub schemes: Vec<Scheme>,
    /// The main workload.
    pub mix: Mix,
    /// Cluster sizes of the scaling experiment (empty: no scaling experiment).
    pub scaling_nodes: Vec<usize>,
    /// Virtual users per scaling run.
    pub scaling_users: usize,
    /// Requests per scaling run.
    pub scaling_requests: usize,
    /// The scaling workload.
    pub scaling_mix: Mix,
    /// PostgreSQL for the SQL scheme.
    pub database_url: String,
    /// Redis for the Redis scheme.
    pub redis_url: String,
    /// Seed of the workload's random choices (users use `seed` + their index).
    pub seed: u64,
    /// How long the service checks wait.
    #[serde(with = "humantime_serde")]
    pub service_timeout: Duration,
    /// Sample the nodes with `perf` during every run and write the profiles here
    /// ([`profile`](super::profile); `bench table1 --profile` puts them in `<out>/profile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<PathBuf>,
}

impl Default for Table1Options {
    fn default() -> Self {
        Self::full()
    }
}

pub(super) fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

impl Table1Options {
    /// The full run: 3 nodes, 50 users, 100 000 requests, scaling at 2, 4 and 8 nodes (20 users,
    /// 20 000 requests each). Service
    /// URLs from `DATABASE_URL` / `REDIS_URL`, else the local defaults.
    pub fn full() -> Self {
        Table1Options {
            nodes: 3,
            users: 50,
            requests: 100_000,
            schemes: Scheme::ALL.to_vec(),
            mix: Mix::READ_MOSTLY,
            scaling_nodes: vec![2, 4, 8],
            scaling_users: 20,
            scaling_requests: 20_000,
            scaling_mix: Mix::WRITE_HEAVY,
            database_url: env_or("DATABASE_URL", DEFAULT_DATABASE_URL),
            redis_url: env_or("REDIS_URL", DEFAULT_REDIS_URL),
            seed: 1,
            service_timeout: Duration::from_secs(3),
            profile: None,
        }
    }

    /// A quick run (seconds, for tests and smoke checks): 2 nodes, 4 users, 120 requests,
    /// scaling at 2 and 4 nodes with 60 requests each.
    pub fn quick() -> Self {
        Table1Options {
            nodes: 2,
            users: 4,
            requests: 120,
            scaling_nodes: vec![2, 4],
            scaling_users: 4,
            scaling_requests: 60,
            ..Self::full()
        }
    }

    /// Checks the numbers.
    pub fn validate(&self) -> Result<(), Table1Error> {
        let bad = |m: String| Err(Table1Error::Options(m));
        if !(1..=64).contains(&self.nodes) {
            return bad(format!("--nodes must be 1 to 64, not {}", self.nodes));
        }
        if self.users == 0 || self.requests == 0 {
            return bad("--users and --requests must be at least 1".into());
        }
        if self.schemes.is_empty() && self.scaling_nodes.is_empty() {
            return bad("nothing to run: no scheme and no scaling size".into());
        }
        if let Some(n) = self.scaling_nodes.iter().find(|n| !(2..=64).contains(*n)) {
            return bad(format!("scaling sizes must be 2 to 64 nodes, not {n}"));
        }
        if !self.scaling_nodes.is_empty() && (self.scaling_users == 0 || self.scaling_requests == 0)
        {
            return bad("scaling users and requests must be at least 1".into());
        }
        if self.mix.total() == 0 || self.scaling_mix.total() == 0 {
            return bad("a request mix has no weight".into());
        }
        Ok(())
    }

    /// A copy without passwords in the service URLs (for `results.json`).
    pub(super) fn redacted(&self) -> Self {
        let mut o = self.clone();
        o.database_url = redact(&self.database_url);
        o.redis_url = redact(&self.redis_url);
        o
    }
}
