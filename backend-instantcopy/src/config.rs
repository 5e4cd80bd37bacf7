//! Configuration: who this node is, who the members are, how many copies a session gets and how
//! long a write waits for them.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A cluster member's id: a small positive integer, unique in the cluster, stable across
/// restarts. Tokens carry node ids, never addresses.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct NodeId(pub u16);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One configured cluster member.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The member's id.
    pub id: NodeId,
    /// Where its cluster port listens (`host:port`). Only these addresses are ever contacted.
    pub addr: SocketAddr,
}

/// How many nodes hold a copy of each session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Replication {
    /// Every member (the paper's scheme): each write is pushed to every other online node.
    #[default]
    All,
    /// The owner plus this many backups chosen by rendezvous hashing over live members: each
    /// write costs `k` messages whatever the cluster size.
    Backups(u8),
}

impl fmt::Display for Replication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Replication::All => f.write_str("all"),
            Replication::Backups(k) => write!(f, "{k}"),
        }
    }
}

impl std::str::FromStr for Replication {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("all") {
            return Ok(Replication::All);
        }
        match s.parse::<u8>() {
            Ok(k) if (1..=MAX_BACKUPS).contains(&k) => Ok(Replication::Backups(k)),
            _ => Err(format!(
                "replication must be \"all\" or a number of backups from 1 to {MAX_BACKUPS}, got {s:?}"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Replication {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => n.to_string().parse(),
            Raw::S(s) => s.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// Largest backup count a token can carry.
pub const MAX_BACKUPS: u8 = 16;

/// When a write's response may go out, relative to its replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ack {
    /// Respond at once; replicas get the write in the background (lowest latency; a crash of
    /// the serving node in the next few milliseconds can lose the write).
    #[default]
    Async,
    /// Respond once at least one replica acknowledged: the write is held by two live nodes, so
    /// no single crash loses it.
    One,
    /// Respond once every replica acknowledged.
    All,
}

impl fmt::Display for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ack::Async => "async",
            Ack::One => "one",
            Ack::All => "all",
        })
    }
}

impl std::str::FromStr for Ack {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "async" => Ok(Ack::Async),
            "one" => Ok(Ack::One),
            "all" => Ok(Ack::All),
            _ => Err(format!("ack must be async, one or all, got {s:?}")),
        }
    }
}

/// Everything an instant-copy node needs except its secrets (which come as a
/// [`KeyRing`](session_core::KeyRing)).
///
/// ```
/// use backend_instantcopy::{Config, Replication, Ack};
/// let config: Config = serde_json::from_value(serde_json::json!({
///     "node_id": 1,
///     "cluster_addr": "10.0.0.1:7001",
///     "members": [
///         {"id": 1, "addr": "10.0.0.1:7001"},
///         {"id": 2, "addr": "10.0.0.2:7001"},
///         {"id": 3, "addr": "10.0.0.3:7001"}
///     ],
///     "replication": 1,
///     "ack": "one",
///     "request_timeout": "800ms"
/// })).unwrap();
/// config.validate().unwrap();
/// assert_eq!(config.replication, Replication::Backups(1));
/// assert_eq!(config.ack, Ack::One);
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node's id; must be one of `members`.
    pub node_id: NodeId,
    /// Where this node's cluster port listens (must differ from the app's port).
    pub cluster_addr: SocketAddr,
    /// Every member of the cluster, this node included.
    pub members: Vec<Member>,
    /// How many copies each session gets.
    pub replication: Replication,
    /// When a write may be acknowledged to the client.
    pub ack: Ack,
    /// Time to open a TCP connection to a peer.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time for a whole peer request (fetch, push, ping).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a write waits for acknowledgements under `ack = one | all`.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Interval between health probes of each peer.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Consecutive failed probes after which a peer is considered down.
    pub failure_threshold: u32,
    /// Accepted age of a signed peer request (and clock skew between nodes).
    #[serde(with = "humantime_serde")]
    pub replay_window: Duration,
    /// Largest peer request or response body.
    pub max_body_bytes: usize,
    /// Most updates sent to one peer in one batch.
    pub max_batch: usize,
    /// Updates queued per peer before writers wait (backpressure).
    pub queue_capacity: usize,
    /// Upper bound of the random delay added to each sweep (spreads sweeps across nodes).
    #[serde(with = "humantime_serde")]
    pub sweep_jitter: Duration,
    /// Keep a copy of sessions fetched from other nodes (so the next read is local). The copy is
    /// checked against the version in the client's token, so it is never served stale to that
    /// client.
    pub keep_fetched_copies: bool,
}

impl Default for Config {
    fn default() -> Self {
        let addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 7001));
        Config {
            node_id: NodeId(1),
            cluster_addr: addr,
            members: vec![Member {
                id: NodeId(1),
                addr,
            }],
            replication: Replication::All,
            ack: Ack::Async,
            connect_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_secs(1),
            ack_timeout: Duration::from_secs(1),
            heartbeat_interval: Duration::from_millis(500),
            failure_threshold: 3,
            replay_window: Duration::from_secs(30),
            max_body_bytes: 8 * 1024 * 1024,
            max_batch: 512,
            queue_capacity: 16_384,
            sweep_jitter: Duration::from_millis(250),
            keep_fetched_copies: true,
        }
    }
}

/// A configuration mistake, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid instant-copy config: {field}: {problem}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        problem: problem.into(),
    }
}

impl Config {
    /// Checks the configuration, naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id.0 == 0 {
            return Err(bad("node_id", "node ids start at 1"));
        }
        let mut ids: Vec<u16> = self.members.iter().map(|m| m.id.0).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(bad("members", "two members share an id"));
        }
        if ids.contains(&0) {
            return Err(bad("members", "node ids start at 1"));
        }
        let mut addrs: Vec<SocketAddr> = self.members.iter().map(|m| m.addr).collect();
        addrs.sort_unstable();
        if addrs.windows(2).any(|w| w[0] == w[1]) {
            return Err(bad("members", "two members share an address"));
        }
        if !self.members.iter().any(|m| m.id == self.node_id) {
            return Err(bad(
                "members",
                format!("this node's id {} is not a member", self.node_id),
            ));
        }
        if let Replication::Backups(k) = self.replication {
            if k == 0 || k > MAX_BACKUPS {
                return Err(bad("replication", format!("1..={MAX_BACKUPS} backups")));
            }
        }
        if self.ack != Ack::Async && self.members.len() < 2 {
            return Err(bad(
                "ack",
                format!(
                    "ack = {} needs a replica, but the cluster has one member",
                    self.ack
                ),
            ));
        }
        for (field, d) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("ack_timeout", self.ack_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("replay_window", self.replay_window),
        ] {
            if d.is_zero() {
                return Err(bad(field, "must be greater than zero"));
            }
        }
        if self.failure_threshold == 0 {
            return Err(bad("failure_threshold", "must be at least 1"));
        }
        if self.max_body_bytes < 64 * 1024 {
            return Err(bad("max_body_bytes", "must be at least 64 KiB"));
        }
        if self.max_batch == 0 || self.queue_capacity == 0 {
            return Err(bad("max_batch", "batch and queue sizes must be positive"));
        }
        Ok(())
    }

    /// The configured members other than this node.
    pub fn peers(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(move |m| m.id != self.node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Config {
        let m = |i: u16| Member {
            id: NodeId(i),
            addr: SocketAddr::from(([127, 0, 0, 1], 7000 + i)),
        };
        Config {
            members: vec![m(1), m(2), m(3)],
            ..Default::default()
        }
    }

    #[test]
    fn replication_parses_all_or_a_count() {
        assert_eq!("all".parse::<Replication>(), Ok(Replication::All));
        assert_eq!("2".parse::<Replication>(), Ok(Replication::Backups(2)));
        assert!("0".parse::<Replication>().is_err());
        assert!("many".parse::<Replication>().is_err());
        let r: Replication = serde_json::from_str("3").unwrap();
        assert_eq!(r, Replication::Backups(3));
        let r: Replication = serde_json::from_str("\"all\"").unwrap();
        assert_eq!(r, Replication::All);
    }

    #[test]
    fn validation_names_the_field() {
        assert!(three().validate().is_ok());
        let mut c = three();
        c.node_id = NodeId(9);
        assert_eq!(c.validate().unwrap_err().field, "members");
        let mut c = three();
        c.members[1].id = NodeId(1);
        assert_eq!(c.validate().unwrap_err().field, "members");
        let c = Config {
            ack: Ack::One,
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "ack");
        let mut c = three();
        c.request_timeout = Duration::ZERO;
        assert_eq!(c.validate().unwrap_err().field, "request_timeout");
        assert!(
            serde_json::from_str::<Config>(r#"{"node_id": 1, "bogus": true}"#).is_err(),
            "unknown fields are refused"
        );
    }
}
