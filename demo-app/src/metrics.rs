//! `/metrics`: the paper's measurements and the backend's own counters in the OpenMetrics text
//! format (prometheus-client), plus per-route request latency.
//!
//! Public contract (names are stable):
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `session_network_calls_total` | counter | calls to other nodes or to the cache server (the paper's N) |
//! | `session_db_calls_total` | counter | database calls (the paper's D) |
//! | `session_client_bytes` | histogram (`_sum`, `_count`) | bytes of session token the client carried per request |
//! | `session_loads_total`, `session_creates_total`, `session_saves_total`, `session_cycles_total`, `session_destroys_total`, `session_invalid_tokens_total` | counter | backend operations |
//! | `session_unavailable_reads_total`, `session_unavailable_writes_total` | counter | operations that failed with `Unavailable` (answered 503), every backend |
//! | `session_requests_total{kind}` | counter | requests through the session layer, `kind` = `read` (session only read) or `write` (created, changed, cycled or destroyed) |
//! | `session_request_network_calls_total{kind}`, `session_request_db_calls_total{kind}` | counter | N and D made by those requests themselves (attributed per request; background replication is not in them) |
//! | `http_request_duration_seconds{route}` | histogram | request latency per route template |
//! | `http_requests_total{route,class}` | counter | requests per route and status class (`2xx`, `4xx`, `5xx`) |
//! | `session_<scheme>_<name>{...}` | any | the backend's own metrics (peers, pushes, replication lag, pool, ...) |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use session_core::cost::{RequestCosts, RequestCostsSnapshot};
use session_core::{Counters, Histogram, HistogramSnapshot, MetricKind};

use crate::app::AppState;

/// Route templates the app serves (anything else is counted as `other`).
const ROUTES: &[&str] = &[
    "/login",
    "/profile",
    "/cart",
    "/cart/items",
    "/cart/items/{sku}",
    "/logout",
    "/metrics",
    "/healthz",
    "/readyz",
    "/status.json",
    "/",
    "other",
];

#[derive(Debug, Default)]
struct RouteStats {
    latency: Histogram,
    by_class: [AtomicU64; 5],
}

/// Per-route request counts and latencies, and a sliding window of N/D per request.
#[derive(Debug)]
pub struct HttpMetrics {
    routes: Vec<(&'static str, RouteStats)>,
    requests: AtomicU64,
    /// `(ms since start, requests, N, D)` samples, one per second, for the status page.
    window: Mutex<std::collections::VecDeque<(u64, u64, u64, u64)>>,
    /// N and D attributed to each request by the session layer, by read and write.
    pub request_costs: Arc<RequestCosts>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpMetrics {
    /// Empty metrics.
    pub fn new() -> Self {
        HttpMetrics {
            routes: ROUTES.iter().map(|r| (*r, RouteStats::default())).collect(),
            requests: AtomicU64::new(0),
            window: Mutex::new(Default::default()),
            request_costs: Arc::new(RequestCosts::default()),
        }
    }

    /// Records one response.
    pub fn record(&self, route: &str, status: u16, took: Duration) {
        let stats = self
            .routes
            .iter()
            .find(|(r, _)| *r == route)
            .or_else(|| self.routes.last())
            .map(|(_, s)| s);
        if let Some(s) = stats {
            s.latency.record(took);
            let class = (status / 100).clamp(1, 5) as usize - 1;
            s.by_class[class].fetch_add(1, Ordering::Relaxed);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Responses recorded under `route` (a route template, or `"other"`) per status class:
    /// `[1xx, 2xx, 3xx, 4xx, 5xx]`. `None` for a route the demo does not have.
    pub fn responses(&self, route: &str) -> Option<[u64; 5]> {
        let (_, s) = self.routes.iter().find(|(r, _)| *r == route)?;
        Some(std::array::from_fn(|i| {
            s.by_class[i].load(Ordering::Relaxed)
        }))
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Adds a sample of the counters (called every second) and returns N and D per request
    /// over the last minute, with the number of requests it covers.
    pub fn sample(&self, now_ms: u64, c: &Counters) -> (u64, f64, f64) {
        let mut w = self.window.lock();
        w.push_back((now_ms, self.requests(), c.network_calls, c.db_calls));
        while w
            .front()
            .is_some_and(|f| now_ms.saturating_sub(f.0) > 60_000)
        {
            w.pop_front();
        }
        Self::rate(&w)
    }

    /// N and D per request over the sampled window.
    pub fn recent(&self) -> (u64, f64, f64) {
        Self::rate(&self.window.lock())
    }

    fn rate(w: &std::collections::VecDeque<(u64, u64, u64, u64)>) -> (u64, f64, f64) {
        match (w.front(), w.back()) {
            (Some(a), Some(b)) if b.1 > a.1 => {
                let reqs = b.1 - a.1;
                (
                    reqs,
                    (b.2 - a.2) as f64 / reqs as f64,
                    (b.3 - a.3) as f64 / reqs as f64,
                )
            }
            _ => (0, 0.0, 0.0),
        }
    }
}

/// Encodes the whole exposition for one scrape.
pub(crate) fn render(state: &AppState) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        counters: state.backend.session.counters(),
        costs: state.metrics.request_costs.snapshot(),
        scheme: state.backend.session.scheme(),
        routes: state
            .metrics
            .routes
            .iter()
            .map(|(r, s)| {
                (
                    *r,
                    s.latency.snapshot(),
                    s.by_class
                        .iter()
                        .map(|c| c.load(Ordering::Relaxed))
                        .collect(),
                )
            })
            .collect(),
    }));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// One scrape's values.
#[derive(Debug)]
struct Scrape {
    counters: Counters,
    costs: RequestCostsSnapshot,
    scheme: &'static str,
    routes: Vec<(&'static str, HistogramSnapshot, Vec<u64>)>,
}

/// Prometheus wants per-bucket counts; snapshots are cumulative.
fn per_bucket(s: &HistogramSnapshot) -> Vec<(f64, u64)> {
    let mut prev = 0;
    s.buckets
        .iter()
        .map(|(le, c)| {
            let d = c - prev;
            prev = *c;
            (*le, d)
        })
        .collect()
}

type Labels = Vec<(String, String)>;

/// Reads one total of a per-kind request cost.
type KindField = fn(&session_core::cost::KindSnapshot) -> u64;

fn counter(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    let m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let c = &self.counters;
        {
            let mut m = enc.encode_descriptor(
                "session_client_bytes",
                "Bytes of session token the client carried per request",
                None,
                MetricType::Histogram,
            )?;
            // Per-bucket counts (Prometheus text is cumulative; the encoder sums them).
            let mut prev = 0;
            let buckets: Vec<(f64, u64)> = c
                .client_bytes_buckets
                .iter()
                .map(|&(le, cum)| {
                    let le = if le == u64::MAX {
                        f64::INFINITY
                    } else {
                        le as f64
                    };
                    let n = cum - prev;
                    prev = cum;
                    (le, n)
                })
                .collect();
            let buckets = if buckets.is_empty() {
                vec![(f64::INFINITY, c.client_bytes_count)]
            } else {
                buckets
            };
            m.encode_histogram::<Labels>(
                c.client_bytes_sum as f64,
                c.client_bytes_count,
                &buckets,
                None,
            )?;
        }
        for (name, help, v) in c.core() {
            counter(&mut enc, name, help, v)?;
        }
        let per_kind: [(&str, &str, KindField); 3] = [
            (
                "session_requests",
                "Requests through the session layer, by kind (read: the session was only read; write: it was created, changed, cycled or destroyed)",
                |k| k.requests,
            ),
            (
                "session_request_network_calls",
                "Network calls made by the requests themselves, by kind (the paper's N per read / per write; background replication is not included)",
                |k| k.network_calls,
            ),
            (
                "session_request_db_calls",
                "Database calls made by the requests themselves, by kind (the paper's D per read / per write)",
                |k| k.db_calls,
            ),
        ];
        for (name, help, value) in per_kind {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (kind, totals) in self.costs.by_kind() {
                let labels: Labels = vec![("kind".into(), kind.as_str().into())];
                ConstCounter::new(value(&totals)).encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "http_request_duration_seconds",
                "Request latency per route template",
                None,
                MetricType::Histogram,
            )?;
            for (route, h, _) in &self.routes {
                let labels: Labels = vec![("route".into(), (*route).into())];
                m.encode_family(&labels)?.encode_histogram::<Labels>(
                    h.sum,
                    h.count,
                    &per_bucket(h),
                    None,
                )?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "http_requests",
                "Requests per route and status class",
                None,
                MetricType::Counter,
            )?;
            for (route, _, classes) in &self.routes {
                for (i, n) in classes.iter().enumerate() {
                    if *n == 0 {
                        continue;
                    }
                    let labels: Labels = vec![
                        ("route".into(), (*route).into()),
                        ("class".into(), format!("{}xx", i + 1)),
                    ];
                    ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        // The backend's own metrics, grouped into families by name.
        let mut families: BTreeMap<String, Vec<&session_core::Metric>> = BTreeMap::new();
        for metric in &c.extra {
            let base = metric.name.strip_suffix("_total").unwrap_or(&metric.name);
            families
                .entry(format!("session_{}_{}", self.scheme, base))
                .or_default()
                .push(metric);
        }
        for (name, metrics) in &families {
            let Some(first) = metrics.first() else {
                continue;
            };
            let kind = match first.kind {
                MetricKind::Counter => MetricType::Counter,
                MetricKind::Gauge => MetricType::Gauge,
                MetricKind::Histogram(_) => MetricType::Histogram,
            };
            let mut m = enc.encode_descriptor(name, &first.help, None, kind)?;
            for metric in metrics {
                let labels: Labels = metric
                    .labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                let fam = m.encode_family(&labels)?;
                match &metric.kind {
                    MetricKind::Counter => ConstCounter::new(metric.value as u64).encode(fam)?,
                    MetricKind::Gauge => ConstGauge::new(metric.value).encode(fam)?,
                    MetricKind::Histogram(h) => {
                        let mut fam = fam;
                        fam.encode_histogram::<Labels>(h.sum, h.count, &per_bucket(h), None)?
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_rates() {
        let m = HttpMetrics::new();
        let mut c = Counters::default();
        assert_eq!(m.sample(0, &c), (0, 0.0, 0.0));
        for _ in 0..10 {
            m.record("/profile", 200, Duration::from_millis(1));
        }
        c.network_calls = 5;
        c.db_calls = 10;
        assert_eq!(m.sample(1000, &c), (10, 0.5, 1.0));
        // Samples older than a minute drop out.
        assert_eq!(m.sample(120_000, &c), (0, 0.0, 0.0));
    }
}
