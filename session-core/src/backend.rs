//! The `SessionBackend` trait every scheme implements, and the counters that measure it.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::error::SessionError;
use crate::expiry::ExpiryPolicy;
use crate::record::{Delta, Loaded, Saved, SessionData};

/// A session storage scheme: instant copy between nodes, sealed cookie, SQL database or Redis.
///
/// The trait is object safe; an application picks a backend at startup and holds it as
/// `Arc<dyn SessionBackend>`. Handlers never call it directly: the [`Session`](crate::Session)
/// handle (and the axum layer around it) loads lazily and writes back only what changed.
///
/// # Contract
///
/// * `load` parses and authenticates the token **before any I/O**. A malformed, forged or
///   oversized token is `Err(SessionError::InvalidToken)` with no network or database call; an
///   unknown, destroyed or expired session is `Ok(None)`. `load` never returns an expired
///   session, and records the token's length as bytes the client carried.
/// * `create` persists a new session holding `data` and returns its token. Nothing is persisted
///   for a session that never held data.
/// * `save` applies a [`Delta`] atomically on the store's side (keys set, keys removed, version
///   bumped, idle deadline refreshed), so two concurrent saves to different keys both survive.
///   An empty delta is a *touch*: only the idle deadline moves. If the session no longer exists
///   the result is [`SessionError::Gone`]; it is never silently recreated or dropped.
/// * `cycle_id` moves the session to a fresh id (applying `delta` too); the new id exists before
///   the old one is removed, and afterwards the old token loads as `None` everywhere.
/// * `destroy` removes the session everywhere it is stored.
/// * `counters` reports the paper's measurements: network calls (N), database calls (D) and the
///   bytes of token the client carried, plus the backend's own metrics.
#[async_trait]
pub trait SessionBackend: Send + Sync + 'static {
    /// Short scheme name ("instantcopy", "cookie", "sql", "redis", "memory").
    fn scheme(&self) -> &'static str;

    /// The expiry policy the backend enforces.
    fn policy(&self) -> &ExpiryPolicy;

    /// Loads the session a token names. See the trait docs for the contract.
    async fn load(&self, token: &str) -> Result<Option<Loaded>, SessionError>;

    /// Persists a new session with `data` and returns the token for it.
    async fn create(&self, data: SessionData) -> Result<Saved, SessionError>;

    /// Applies a delta (or, when it is empty, refreshes the idle deadline).
    async fn save(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError>;

    /// Gives the session a new id and token, applying `delta`, and kills the old id.
    async fn cycle_id(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError>;

    /// Removes the session everywhere.
    async fn destroy(&self, loaded: &Loaded) -> Result<(), SessionError>;

    /// A snapshot of the backend's counters.
    fn counters(&self) -> Counters;

    /// Flushes pending work (replication queues, background tasks) and stops background tasks.
    /// The default does nothing.
    async fn shutdown(&self) {}

    /// The routing data a token for session `id` should carry when only the bare id is known
    /// (adapters for session frameworks whose cookie holds an unsigned id, such as
    /// tower-sessions). Empty by default, which is right for every backend whose tokens carry
    /// no routing; instant copy derives the session's owner from the id.
    fn routing_for_id(&self, id: &crate::SessionId) -> Vec<u8> {
        let _ = id;
        Vec::new()
    }
}

/// What kind of value a [`Metric`] is.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricKind {
    /// Monotonic total.
    Counter,
    /// Current level (sessions held, peers online).
    Gauge,
    /// A latency distribution (the metric's `value` is its count).
    Histogram(crate::HistogramSnapshot),
}

/// One backend-specific metric, ready to be exported (for example as Prometheus text).
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Metric name, `snake_case`, without a prefix (the exporter adds `session_<scheme>_`).
    pub name: Cow<'static, str>,
    /// One-line description.
    pub help: Cow<'static, str>,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// Label pairs (for example `("peer", "2")`).
    pub labels: Vec<(Cow<'static, str>, String)>,
    /// The value.
    pub value: f64,
}

impl Metric {
    /// An unlabelled counter.
    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Self {
        Metric {
            name: name.into(),
            help: help.into(),
            kind: MetricKind::Counter,
            labels: Vec::new(),
            value: value as f64,
        }
    }

    /// An unlabelled gauge.
    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> Self {
        Metric {
            name: name.into(),
            help: help.into(),
            kind: MetricKind::Gauge,
            labels: Vec::new(),
            value,
        }
    }

    /// A histogram of latencies.
    pub fn histogram(name: &'static str, help: &'static str, h: &crate::Histogram) -> Self {
        let snap = h.snapshot();
        Metric {
            name: name.into(),
            help: help.into(),
            value: snap.count as f64,
            kind: MetricKind::Histogram(snap),
            labels: Vec::new(),
        }
    }

    /// Adds a label.
    pub fn with_label(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }
}

/// A snapshot of a backend's measurements.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Counters {
    /// Calls to other nodes or to a cache server (the paper's N).
    pub network_calls: u64,
    /// Calls to a database (the paper's D).
    pub db_calls: u64,
    /// Total bytes of token the client carried, over all requests that carried one.
    pub client_bytes_sum: u64,
    /// Number of requests that carried a token.
    pub client_bytes_count: u64,
    /// The distribution of those token sizes: `(upper bound in bytes, cumulative count)` for
    /// each of [`CLIENT_BYTES_BUCKETS`], then `(u64::MAX, count)` for the rest (a Prometheus
    /// histogram's `le` buckets).
    pub client_bytes_buckets: Vec<(u64, u64)>,
    /// `load` calls.
    pub loads: u64,
    /// Sessions created.
    pub creates: u64,
    /// Deltas and touches saved.
    pub saves: u64,
    /// Id cycles.
    pub cycles: u64,
    /// Sessions destroyed.
    pub destroys: u64,
    /// Tokens rejected before any I/O.
    pub invalid_tokens: u64,
    /// Loads that failed with [`SessionError::Unavailable`]: the session may exist but the
    /// store (or the node holding its newest copy) could not be reached.
    pub unavailable_reads: u64,
    /// Creates, saves, touches, id cycles and destroys that failed with
    /// [`SessionError::Unavailable`] (nothing was written, or the write's outcome is unknown).
    pub unavailable_writes: u64,
    /// Backend-specific metrics.
    pub extra: Vec<Metric>,
}

impl Counters {
    /// The counters every backend has, as `(name, help, value)`: the names exporters publish
    /// (with a `_total` suffix: `session_network_calls_total`, ...). One list for the demo's
    /// `/metrics` and the `metrics`-facade publisher, so the two cannot drift apart. The
    /// token-size histogram (`client_bytes_*`) is not in it: it is not a plain counter.
    pub fn core(&self) -> [(&'static str, &'static str, u64); 10] {
        [
            (
                "session_network_calls",
                "Calls to other nodes or to a cache server (the paper's N)",
                self.network_calls,
            ),
            (
                "session_db_calls",
                "Database calls (the paper's D)",
                self.db_calls,
            ),
            ("session_loads", "Session loads", self.loads),
            ("session_creates", "Sessions created", self.creates),
            ("session_saves", "Deltas and touches saved", self.saves),
            ("session_cycles", "Session id cycles", self.cycles),
            ("session_destroys", "Sessions destroyed", self.destroys),
            (
                "session_invalid_tokens",
                "Tokens rejected before any I/O",
                self.invalid_tokens,
            ),
            (
                "session_unavailable_reads",
                "Loads refused with 503: the store or the newest copy could not be reached",
                self.unavailable_reads,
            ),
            (
                "session_unavailable_writes",
                "Writes refused with 503: the store or the session's holders could not be reached",
                self.unavailable_writes,
            ),
        ]
    }
}

/// Upper bounds (bytes) of the token-size histogram: an id token is 40–60 bytes, a sealed
/// cookie up to the 4096-byte browser limit.
pub const CLIENT_BYTES_BUCKETS: [u64; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];

/// Atomic counters a backend embeds and updates; [`snapshot`](CoreCounters::snapshot) gives the
/// [`Counters`] the trait reports.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct CoreCounters {
    network_calls: AtomicU64,
    db_calls: AtomicU64,
    client_bytes_sum: AtomicU64,
    client_bytes_count: AtomicU64,
    /// Per bucket of [`CLIENT_BYTES_BUCKETS`] (not cumulative), the last one for larger tokens.
    client_bytes_buckets: [AtomicU64; CLIENT_BYTES_BUCKETS.len() + 1],
    loads: AtomicU64,
    creates: AtomicU64,
    saves: AtomicU64,
    cycles: AtomicU64,
    destroys: AtomicU64,
    invalid_tokens: AtomicU64,
    unavailable_reads: AtomicU64,
    unavailable_writes: AtomicU64,
}

macro_rules! bump {
    ($($(#[$doc:meta])* $fn:ident => $field:ident;)*) => {
        $( $(#[$doc])* pub fn $fn(&self) { self.$field.fetch_add(1, Ordering::Relaxed); } )*
    };
}

impl CoreCounters {
    /// Records `n` calls to other nodes or a cache server (N), node-wide and, inside
    /// [`cost::measure`](crate::cost::measure), for the request being served.
    pub fn network(&self, n: u64) {
        self.network_calls.fetch_add(n, Ordering::Relaxed);
        crate::cost::add_network(n);
    }

    /// Records `n` database calls (D), node-wide and for the request being served.
    pub fn db(&self, n: u64) {
        self.db_calls.fetch_add(n, Ordering::Relaxed);
        crate::cost::add_db(n);
    }

    /// Records a token of `len` bytes carried by the client, and counts the load.
    pub fn loaded_token(&self, len: usize) {
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.client_bytes_sum
            .fetch_add(len as u64, Ordering::Relaxed);
        self.client_bytes_count.fetch_add(1, Ordering::Relaxed);
        let bucket = CLIENT_BYTES_BUCKETS.partition_point(|&le| le < len as u64);
        self.client_bytes_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    bump! {
        /// Counts a created session.
        created => creates;
        /// Counts a saved delta or touch.
        saved => saves;
        /// Counts an id cycle.
        cycled => cycles;
        /// Counts a destroyed session.
        destroyed => destroys;
        /// Counts a token rejected before I/O.
        invalid_token => invalid_tokens;
        /// Counts a load that failed with `Unavailable`.
        unavailable_read => unavailable_reads;
        /// Counts a write that failed with `Unavailable`.
        unavailable_write => unavailable_writes;
    }

    /// Passes a load's result through, counting it when it is `Unavailable`.
    pub fn read_result<T>(&self, r: Result<T, SessionError>) -> Result<T, SessionError> {
        if matches!(r, Err(SessionError::Unavailable { .. })) {
            self.unavailable_read();
        }
        r
    }

    /// Passes a write's result through, counting it when it is `Unavailable`.
    pub fn write_result<T>(&self, r: Result<T, SessionError>) -> Result<T, SessionError> {
        if matches!(r, Err(SessionError::Unavailable { .. })) {
            self.unavailable_write();
        }
        r
    }

    /// The current values, with `extra` metrics appended.
    pub fn snapshot(&self, extra: Vec<Metric>) -> Counters {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            network_calls: r(&self.network_calls),
            db_calls: r(&self.db_calls),
            client_bytes_sum: r(&self.client_bytes_sum),
            client_bytes_count: r(&self.client_bytes_count),
            client_bytes_buckets: {
                let mut total = 0;
                CLIENT_BYTES_BUCKETS
                    .iter()
                    .copied()
                    .chain([u64::MAX])
                    .zip(&self.client_bytes_buckets)
                    .map(|(le, n)| {
                        total += r(n);
                        (le, total)
                    })
                    .collect()
            },
            loads: r(&self.loads),
            creates: r(&self.creates),
            saves: r(&self.saves),
            cycles: r(&self.cycles),
            destroys: r(&self.destroys),
            invalid_tokens: r(&self.invalid_tokens),
            unavailable_reads: r(&self.unavailable_reads),
            unavailable_writes: r(&self.unavailable_writes),
            extra,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_sizes_fall_into_cumulative_buckets() {
        let c = CoreCounters::default();
        for len in [10, 32, 64, 65, 4096, 5000] {
            c.loaded_token(len);
        }
        let b = c.snapshot(Vec::new()).client_bytes_buckets;
        assert_eq!(b.len(), CLIENT_BYTES_BUCKETS.len() + 1);
        assert_eq!(b[0], (32, 2));
        assert_eq!(b[1], (64, 3));
        assert_eq!(b[2], (128, 4));
        assert_eq!(b[7], (4096, 5));
        assert_eq!(b[8], (u64::MAX, 6));
    }
}
