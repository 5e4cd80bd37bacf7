//! Configuration: who this node is, how it finds the cluster, how many copies a session gets,
//! how long a write waits for them, and the timings of membership, anti-entropy and drain.

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
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        if s.eq_ignore_ascii_case("all") {
            return Ok(Replication::All);
        }
        match s.parse::<u8>() {
            Ok(k) if (1..=MAX_BACKUPS).contains(&k) => Ok(Replication::Backups(k)),
            _ => Err(bad(
                "replication",
                format!(
                    "must be \"all\" or a number of backups from 1 to {MAX_BACKUPS}, got {s:?}"
                ),
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
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.to_ascii_lowercase().as_str() {
            "async" => Ok(Ack::Async),
            "one" => Ok(Ack::One),
            "all" => Ok(Ack::All),
            _ => Err(bad("ack", format!("must be async, one or all, got {s:?}"))),
        }
    }
}

/// What a read does when the newest copy of a session is out of reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnreachable {
    /// Refuse the read with `SessionError::Unavailable` (the layer answers 503 with
    /// `Retry-After` and leaves the client's token alone): a client never sees a copy older
    /// than its own last write. Once membership confirms the newer holders are gone, the newest
    /// surviving copy is served.
    #[default]
    Unavailable,
    /// Serve the newest copy that can be reached, even if it is older than the client's token,
    /// marked stale (`Loaded::stale`, the `x-session-stale` response header and the
    /// `stale_serves_total` metric). Writes to such a session are still refused.
    Stale,
}

impl fmt::Display for OnUnreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnUnreachable::Unavailable => "unavailable",
            OnUnreachable::Stale => "stale",
        })
    }
}

/// Everything an instant-copy node needs except its secrets (which come as a
/// [`KeyRing`](session_core::KeyRing)).
///
/// Membership is dynamic: a node is started with its own stable `node_id` and a few `seeds`
/// (any members' cluster addresses, or a DNS name that resolves to several of them, such as a
/// Kubernetes headless Service), and learns every other member by authenticated gossip. The
/// older static `members` list still works: its addresses are used as seeds.
///
/// ```
/// use backend_instantcopy::{Config, Replication, Ack};
/// let config: Config = serde_json::from_value(serde_json::json!({
///     "node_id": 2,
///     "cluster_addr": "0.0.0.0:7001",
///     "advertise_addr": "10.0.0.2:7001",
///     "seeds": ["sessions-headless.default.svc.cluster.local:7001"],
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
#[non_exhaustive]
pub struct Config {
    /// This node's id: unique in the cluster and stable across restarts (for example a
    /// StatefulSet ordinal + 1, given through an environment variable). A second live node
    /// claiming the same id is refused at start.
    pub node_id: NodeId,
    /// Where this node's cluster port listens, TCP for peer requests and UDP for membership
    /// gossip on the same port number (must differ from the app's port).
    pub cluster_addr: SocketAddr,
    /// The address peers use to reach this node (`ip:port` or `host:port`, resolved once at
    /// start). Defaults to `cluster_addr` unless that is a wildcard address, in which case it
    /// must be set (for example to the pod IP).
    pub advertise_addr: Option<String>,
    /// Where to find the cluster: `host:port` of any members' cluster ports. A host may be a
    /// DNS name resolving to several addresses; names are resolved again every
    /// `seed_refresh_interval`, so members that appear later are found. This node's own address
    /// may be among them. Empty (and no `members`): this node starts a new cluster. Also
    /// accepted as one comma-separated string (convenient in an environment variable).
    #[serde(deserialize_with = "list_or_commas")]
    pub seeds: Vec<String>,
    /// The older static member list (`{ id, addr }`); still accepted, and used as seeds.
    pub members: Vec<Member>,
    /// How often seed names are resolved and contacted again.
    #[serde(with = "humantime_serde")]
    pub seed_refresh_interval: Duration,
    /// How long a starting node tries to reach its seeds before it decides it is the first
    /// member (and is ready without a sync).
    #[serde(with = "humantime_serde")]
    pub join_timeout: Duration,
    /// How many copies each session gets.
    pub replication: Replication,
    /// When a write may be acknowledged to the client.
    pub ack: Ack,
    /// What a read does when the newest copy is out of reach.
    pub on_unreachable: OnUnreachable,
    /// Time to open a TCP connection to a peer.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time for a whole peer request (fetch, push, ping).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a write waits for acknowledgements under `ack = one | all`.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// The membership protocol's probe period (SWIM): each period one random member is
    /// pinged directly, then through others if it does not answer.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A member that stays suspected for this many probe periods is declared down.
    pub failure_threshold: u32,
    /// Longest a connection to the cluster port may take to deliver a complete request head
    /// (also how long an idle kept-alive peer connection stays open): a host that opens
    /// connections and sends headers byte by byte is cut off after this long.
    #[serde(with = "humantime_serde")]
    pub cluster_header_read_timeout: Duration,
    /// Longest a request on the cluster port may take, body and handler included (408 after).
    #[serde(with = "humantime_serde")]
    pub cluster_request_timeout: Duration,
    /// Longest a cluster-port connection may go without reading or writing a byte.
    #[serde(with = "humantime_serde")]
    pub cluster_idle_timeout: Duration,
    /// Most connections open on the cluster port at once; at the cap it stops accepting until
    /// one closes.
    pub cluster_max_connections: usize,
    /// Accepted age of a sealed peer message (and clock skew between nodes).
    #[serde(with = "humantime_serde")]
    pub replay_window: Duration,
    /// With `replication = k`: most copies of sessions held elsewhere that this node keeps
    /// after fetching them, so the next read here is local. Off (0) by default, because it
    /// weakens what a read sees: a copy is served while it is at least as new as the client's
    /// token, so a client always sees its own writes, but a write another client (another tab)
    /// made to the same session since the fetch can go unseen here for up to
    /// `near_cache_ttl`; holders' copies, which receive every write, have no such window.
    pub near_cache_capacity: usize,
    /// Longest a near-cache copy is served after its fetch: how long another client's write
    /// to the same session can go unseen on this node.
    #[serde(with = "humantime_serde")]
    pub near_cache_ttl: Duration,
    /// Most sessions this node holds before it refuses to create more (`503`, counted in
    /// `sessions_refused_total`); copies replicated from peers are still accepted, and no
    /// live session is ever evicted to make room.
    pub max_sessions: usize,
    /// Most tombstones of destroyed or cycled-away sessions this node keeps before it refuses
    /// to create or cycle more (`503`, counted); logouts always succeed.
    pub max_tombstones: usize,
    /// Largest peer request or response body (the same on every node). Push batches and pull
    /// responses stay under half of it; a session whose encoding exceeds it cannot be
    /// replicated (counted in `oversized_updates_total`), so keep it well above the session
    /// layer's `max_bytes`.
    pub max_body_bytes: usize,
    /// Most updates sent to one peer in one batch (also the batch size of syncs and drains);
    /// batches are also cut at half of `max_body_bytes`.
    pub max_batch: usize,
    /// Updates queued per peer before writers wait (backpressure).
    pub queue_capacity: usize,
    /// Upper bound of the random delay added to each sweep (spreads sweeps across nodes).
    #[serde(with = "humantime_serde")]
    pub sweep_jitter: Duration,
    /// How often each pair of members compares what they hold (a digest exchange whose cost
    /// follows the number of differences) and repairs what differs, so a replica that missed
    /// updates converges without client traffic.
    #[serde(with = "humantime_serde")]
    pub anti_entropy_interval: Duration,
    /// How long a graceful shutdown waits for the sessions this node holds to reach their new
    /// holders before it exits anyway (logging what it left behind).
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Most sessions per second moved to a newly joined member when placements are rebalanced
    /// (`replication = k`).
    pub rebalance_rate: u32,
}

impl Default for Config {
    fn default() -> Self {
        let addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 7001));
        Config {
            node_id: NodeId(1),
            cluster_addr: addr,
            advertise_addr: None,
            seeds: Vec::new(),
            members: Vec::new(),
            seed_refresh_interval: Duration::from_secs(30),
            join_timeout: Duration::from_secs(3),
            replication: Replication::All,
            ack: Ack::Async,
            on_unreachable: OnUnreachable::Unavailable,
            connect_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_secs(1),
            ack_timeout: Duration::from_secs(1),
            heartbeat_interval: Duration::from_millis(500),
            failure_threshold: 3,
            cluster_header_read_timeout: Duration::from_secs(5),
            cluster_request_timeout: Duration::from_secs(30),
            cluster_idle_timeout: Duration::from_secs(60),
            cluster_max_connections: 512,
            replay_window: Duration::from_secs(30),
            near_cache_capacity: 0,
            near_cache_ttl: Duration::from_secs(30),
            max_sessions: 1_000_000,
            max_tombstones: 1_000_000,
            max_body_bytes: 2 * 1024 * 1024,
            max_batch: 512,
            queue_capacity: 16_384,
            sweep_jitter: Duration::from_millis(250),
            anti_entropy_interval: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
            rebalance_rate: 1000,
        }
    }
}

/// A list of strings, given as a list or as one comma-separated string.
fn list_or_commas<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        One(String),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::List(v) => v,
        Raw::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

pub use session_core::ConfigError;

fn bad(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::new("instant-copy", field, problem)
}

/// Splits `host:port` (IPv6 literals in brackets), checking the port.
pub(crate) fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not host:port"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?} has no valid port"))?;
    if port == 0 {
        return Err(format!("{s:?}: port 0 cannot be reached"));
    }
    Ok((host, port))
}

impl Config {
    /// The encoded bytes a push batch or a pull response aims to stay under: half of
    /// `max_body_bytes`, so any update that fits the body limit at all still fits a batch of
    /// its own.
    pub fn max_batch_bytes(&self) -> usize {
        self.max_body_bytes / 2
    }

    /// The cluster port's connection bounds.
    pub fn cluster_limits(&self) -> session_core::serve::ServeLimits {
        let mut limits = session_core::serve::ServeLimits::default();
        limits.header_read_timeout = self.cluster_header_read_timeout;
        limits.request_timeout = self.cluster_request_timeout;
        limits.idle_timeout = self.cluster_idle_timeout;
        limits.max_connections = self.cluster_max_connections;
        limits
    }

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
        if !self.members.is_empty() && !self.members.iter().any(|m| m.id == self.node_id) {
            return Err(bad(
                "members",
                format!("this node's id {} is not a member", self.node_id),
            ));
        }
        for s in &self.seeds {
            split_host_port(s).map_err(|e| bad("seeds", e))?;
        }
        match &self.advertise_addr {
            Some(a) => {
                split_host_port(a).map_err(|e| bad("advertise_addr", e))?;
            }
            None if self.cluster_addr.ip().is_unspecified() => {
                return Err(bad(
                    "advertise_addr",
                    format!(
                        "cluster_addr {} is a wildcard address; set advertise_addr to the address \
                         peers reach this node at",
                        self.cluster_addr
                    ),
                ));
            }
            None => {}
        }
        if let Replication::Backups(k) = self.replication
            && (k == 0 || k > MAX_BACKUPS)
        {
            return Err(bad("replication", format!("1..={MAX_BACKUPS} backups")));
        }
        if self.ack != Ack::Async && self.seeds.is_empty() && self.members.len() < 2 {
            return Err(bad(
                "ack",
                format!(
                    "ack = {} needs a replica, but no seeds or other members are configured",
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
            ("seed_refresh_interval", self.seed_refresh_interval),
            ("join_timeout", self.join_timeout),
            ("anti_entropy_interval", self.anti_entropy_interval),
            ("drain_timeout", self.drain_timeout),
            ("near_cache_ttl", self.near_cache_ttl),
        ] {
            if d.is_zero() {
                return Err(bad(field, "must be greater than zero"));
            }
        }
        self.cluster_limits().validate().map_err(|e| {
            let field = match e.field.as_str() {
                "header_read_timeout" => "cluster_header_read_timeout",
                "request_timeout" => "cluster_request_timeout",
                "idle_timeout" => "cluster_idle_timeout",
                _ => "cluster_max_connections",
            };
            bad(field, e.problem)
        })?;
        if self.heartbeat_interval < Duration::from_millis(20) {
            return Err(bad("heartbeat_interval", "must be at least 20ms"));
        }
        if self.failure_threshold == 0 {
            return Err(bad("failure_threshold", "must be at least 1"));
        }
        if self.max_sessions == 0 {
            return Err(bad("max_sessions", "must be at least 1"));
        }
        if self.max_tombstones == 0 {
            return Err(bad("max_tombstones", "must be at least 1"));
        }
        if self.max_body_bytes < 64 * 1024 {
            return Err(bad("max_body_bytes", "must be at least 64 KiB"));
        }
        if self.max_batch == 0 || self.queue_capacity == 0 {
            return Err(bad("max_batch", "batch and queue sizes must be positive"));
        }
        if self.rebalance_rate == 0 {
            return Err(bad(
                "rebalance_rate",
                "must be at least 1 session per second",
            ));
        }
        Ok(())
    }

    /// Every configured seed: `seeds`, then the addresses of the static `members` other than
    /// this node.
    pub fn seed_list(&self) -> Vec<String> {
        let mut out = self.seeds.clone();
        out.extend(
            self.members
                .iter()
                .filter(|m| m.id != self.node_id)
                .map(|m| m.addr.to_string()),
        );
        out
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
    fn seeds_advertise_and_static_members_mix() {
        let mut c = three();
        c.seeds = vec!["sessions.default.svc:7001".into(), "[::1]:7002".into()];
        assert!(c.validate().is_ok());
        assert_eq!(
            c.seed_list(),
            vec![
                "sessions.default.svc:7001".to_string(),
                "[::1]:7002".into(),
                "127.0.0.1:7002".into(),
                "127.0.0.1:7003".into()
            ]
        );
        let c: Config = serde_json::from_str(r#"{"seeds": "a.svc:7001, 10.0.0.2:7001,"}"#).unwrap();
        assert_eq!(
            c.seeds,
            vec!["a.svc:7001".to_string(), "10.0.0.2:7001".into()]
        );
        for bad_seed in ["no-port", "host:0", ":7001", "host:http"] {
            let c = Config {
                seeds: vec![bad_seed.into()],
                ..Config::default()
            };
            assert_eq!(c.validate().unwrap_err().field, "seeds", "{bad_seed}");
        }
        let wildcard = Config {
            cluster_addr: "0.0.0.0:7001".parse().unwrap(),
            ..Config::default()
        };
        assert_eq!(wildcard.validate().unwrap_err().field, "advertise_addr");
        let advertised = Config {
            advertise_addr: Some("10.1.2.3:7001".into()),
            ..wildcard
        };
        assert!(advertised.validate().is_ok());
        let ack_alone = Config {
            ack: Ack::One,
            ..Config::default()
        };
        assert_eq!(ack_alone.validate().unwrap_err().field, "ack");
        let ack_seeded = Config {
            ack: Ack::One,
            seeds: vec!["127.0.0.1:7002".into()],
            ..Config::default()
        };
        assert!(ack_seeded.validate().is_ok());
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
        let mut c = three();
        c.request_timeout = Duration::ZERO;
        assert_eq!(c.validate().unwrap_err().field, "request_timeout");
        assert!(
            serde_json::from_str::<Config>(r#"{"node_id": 1, "bogus": true}"#).is_err(),
            "unknown fields are refused"
        );
    }
}
