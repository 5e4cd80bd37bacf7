//! A lock-free latency histogram with fixed, doubling buckets, shared by backends and apps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket upper bounds in microseconds: 50 µs … ~3.3 s, doubling.
const BOUNDS_US: [u64; 17] = [
    50, 100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 51_200, 102_400, 204_800, 409_600,
    819_200, 1_638_400, 3_276_800,
];

/// Records latencies into fixed doubling buckets (50 µs to 3.3 s, then +Inf); recording is three
/// relaxed atomic adds, so it can sit on hot paths.
///
/// ```
/// use std::time::Duration;
/// use session_core::Histogram;
/// let h = Histogram::default();
/// h.record(Duration::from_micros(70));
/// assert_eq!(h.quantile_us(0.5), Some(100));
/// let snap = h.snapshot();
/// assert_eq!(snap.count, 1);
/// assert_eq!(snap.buckets.last().map(|b| b.1), Some(1)); // cumulative
/// ```
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A point-in-time copy of a [`Histogram`] in Prometheus form.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, cumulative count)`, ending with `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of observations in seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
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

    /// The bucket bound (µs) at or below which fraction `q` of observations fall (an upper
    /// estimate; `u64::MAX` for the +Inf bucket).
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

    /// Cumulative buckets, sum and count.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                cumulative += b.load(Ordering::Relaxed);
                let le = BOUNDS_US
                    .get(i)
                    .map_or(f64::INFINITY, |us| *us as f64 / 1e6);
                (le, cumulative)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            count: self.count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_cumulative_buckets() {
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
        let s = h.snapshot();
        assert_eq!(s.count, 100);
        assert_eq!(s.buckets.last(), Some(&(f64::INFINITY, 100)));
        assert!(s.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
        assert!((s.sum - (90.0 * 70e-6 + 10.0 * 5e-3)).abs() < 1e-9);
    }
}
