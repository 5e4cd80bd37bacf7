//! Publishing a backend's measurements through the [`metrics`](https://docs.rs/metrics) facade,
//! so whatever exporter an application installed (Prometheus, StatsD, OpenTelemetry, ...) gets
//! them without our demo's `/metrics` route. Feature `metrics`.
//!
//! Owns the mapping from a [`Counters`] snapshot to metric names, the same names the demo's
//! `/metrics` serves (README, "Metrics"):
//!
//! | metric | kind | from |
//! |---|---|---|
//! | `session_network_calls_total` | counter | the paper's N |
//! | `session_db_calls_total` | counter | the paper's D |
//! | `session_client_bytes_sum`, `session_client_bytes_count`, `session_client_bytes_bucket{le}` | counter | token bytes clients carried, how many requests carried one, and how many of those carried at most `le` bytes (cumulative, [`CLIENT_BYTES_BUCKETS`](crate::CLIENT_BYTES_BUCKETS)) |
//! | `session_loads_total`, `session_creates_total`, `session_saves_total`, `session_cycles_total`, `session_destroys_total`, `session_invalid_tokens_total` | counter | backend operations |
//! | `session_unavailable_reads_total`, `session_unavailable_writes_total` | counter | operations answered 503 |
//! | `session_<scheme>_<name>{labels}` | counter or gauge | the backend's own metrics ([`Counters::extra`]); a latency histogram as a `_count` counter and a `_sum` gauge (seconds) |
//!
//! Every value is the backend's running total, published with `Counter::absolute` and
//! `Gauge::set` (the facade's way to expose counters kept elsewhere): publishing costs nothing on
//! the request path, and twice in a row changes nothing.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use session_core::{ExpiryPolicy, KeyRing, MemoryBackend, SessionBackend};
//!
//! let backend: Arc<dyn SessionBackend> =
//!     Arc::new(MemoryBackend::new(ExpiryPolicy::default(), &KeyRing::generate()));
//! // With an exporter installed (e.g. metrics-exporter-prometheus), publish every 5 s:
//! let task = session_core::telemetry::spawn_publisher(backend.clone(), Duration::from_secs(5));
//! # task.abort();
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use metrics::Label;

use crate::backend::{Counters, MetricKind, SessionBackend};

/// Publishes one snapshot of `backend`'s counters and its own metrics to the installed
/// `metrics` recorder (a no-op without one).
pub fn publish(backend: &dyn SessionBackend) {
    publish_counters(backend.scheme(), &backend.counters());
}

/// Publishes a [`Counters`] snapshot of a backend of scheme `scheme`.
pub fn publish_counters(scheme: &str, c: &Counters) {
    for (name, help, value) in c.core() {
        let name = format!("{name}_total");
        metrics::describe_counter!(name.clone(), help);
        metrics::counter!(name).absolute(value);
    }
    for (name, help, value) in [
        (
            "session_client_bytes_sum",
            "Bytes of session token clients carried",
            c.client_bytes_sum,
        ),
        (
            "session_client_bytes_count",
            "Requests that carried a session token",
            c.client_bytes_count,
        ),
    ] {
        metrics::describe_counter!(name, help);
        metrics::counter!(name).absolute(value);
    }
    for &(le, cumulative) in &c.client_bytes_buckets {
        let le = if le == u64::MAX {
            "+Inf".to_owned()
        } else {
            le.to_string()
        };
        metrics::counter!("session_client_bytes_bucket", "le" => le).absolute(cumulative);
    }
    for m in &c.extra {
        let name = format!("session_{scheme}_{}", m.name);
        let labels: Vec<Label> = m
            .labels
            .iter()
            .map(|(k, v)| Label::new(k.clone(), v.clone()))
            .collect();
        match &m.kind {
            MetricKind::Counter => {
                metrics::describe_counter!(name.clone(), m.help.clone());
                metrics::counter!(name, labels).absolute(m.value as u64);
            }
            MetricKind::Gauge => {
                metrics::describe_gauge!(name.clone(), m.help.clone());
                metrics::gauge!(name, labels).set(m.value);
            }
            MetricKind::Histogram(h) => {
                // Running sums cannot be re-recorded as samples; expose them as counters.
                metrics::counter!(format!("{name}_count"), labels.clone()).absolute(h.count);
                metrics::gauge!(format!("{name}_sum"), labels).set(h.sum);
            }
        }
    }
}

/// Publishes `backend`'s measurements every `every` until the task is aborted (or the runtime
/// stops).
pub fn spawn_publisher(
    backend: Arc<dyn SessionBackend>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        loop {
            tick.tick().await;
            publish(backend.as_ref());
        }
    })
}
