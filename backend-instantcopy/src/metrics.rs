//! Counters and a lock-free latency histogram for the node's own measurements.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use session_core::Metric;

/// Bucket upper bounds in microseconds: 50 µs … ~3.3 s, doubling.
const BOUNDS_US: [u64; 17] = [
    50, 100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 51_200, 102_400, 204_800, 409_600,
    819_200, 1_638_400, 3_276_800,
];

/// A latency histogram with fixed, doubling buckets; recording is two atomic adds.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = BOUNDS_US.partition_point(|b| *b < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The bucket bound (µs) below which fraction `q` of observations fall (upper estimate).
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let target = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Some(BOUNDS_US.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        None
    }

    /// Prometheus-style metrics: cumulative `_bucket{le}` counters, `_sum` and `_count`.
    pub fn metrics(&self, name: &'static str, help: &'static str) -> Vec<Metric> {
        let mut out = Vec::with_capacity(BOUNDS_US.len() + 3);
        let mut cumulative = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = BOUNDS_US
                .get(i)
                .map(|us| format!("{}", *us as f64 / 1e6))
                .unwrap_or_else(|| "+Inf".into());
            out.push(
                Metric {
                    name: format!("{name}_bucket").into(),
                    help: help.into(),
                    kind: session_core::MetricKind::Counter,
                    labels: Vec::new(),
                    value: cumulative as f64,
                }
                .with_label("le", le),
            );
        }
        out.push(Metric {
            name: format!("{name}_sum").into(),
            help: help.into(),
            kind: session_core::MetricKind::Counter,
            labels: Vec::new(),
            value: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        });
        out.push(Metric {
            name: format!("{name}_count").into(),
            help: help.into(),
            kind: session_core::MetricKind::Counter,
            labels: Vec::new(),
            value: self.count() as f64,
        });
        out
    }
}

/// A named monotonic counter.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_buckets() {
        let h = Histogram::default();
        assert_eq!(h.quantile_us(0.5), None);
        for _ in 0..90 {
            h.record(Duration::from_micros(70));
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(5));
        }
        assert_eq!(h.quantile_us(0.5), Some(100));
        assert_eq!(h.quantile_us(0.99), Some(6_400));
        let m = h.metrics("lag_seconds", "lag");
        let inf = m
            .iter()
            .find(|m| m.labels.iter().any(|(_, v)| v == "+Inf"))
            .unwrap();
        assert_eq!(inf.value, 100.0);
    }
}
