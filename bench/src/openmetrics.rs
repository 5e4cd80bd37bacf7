//! Reading the demo's `/metrics` (OpenMetrics text), parsed by `prometheus-parse` (the one
//! metrics-text parser of the harness): counters summed over label sets, and histograms,
//! whose quantiles between two scrapes are estimated from the bucket deltas.
//!
//! `prometheus-parse` splits label sets on `,` and `=`, does not unescape `\"`, and skips a
//! line whose label value holds `}`. The series the harness reads (`session_*`: peer ids,
//! addresses, request kinds) have none of these; the demo's `http_*` series, labelled with
//! route templates such as `/cart/items/{sku}`, are skipped, and nothing here reads them.

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, with any `_total`/`_bucket` suffix as written.
    pub name: String,
    /// Label pairs in order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A scrape: every sample of a `/metrics` answer.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// The samples in order.
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses OpenMetrics/Prometheus text with `prometheus-parse`; comment lines and lines that
    /// do not parse are skipped. Histograms (declared by a `# TYPE ... histogram` line, which
    /// the crate groups into one value per label set) come back as their `_bucket{le}` samples,
    /// so counters and buckets are read the same way whether or not a type line was sent.
    pub fn parse(text: &str) -> Self {
        let Ok(parsed) = prometheus_parse::Scrape::parse(
            text.lines().map(|l| Ok::<_, std::io::Error>(l.to_owned())),
        ) else {
            return Scrape::default();
        };
        let mut samples = Vec::with_capacity(parsed.samples.len());
        for s in parsed.samples {
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => samples.push(Sample {
                    name: s.metric,
                    labels,
                    value: v,
                }),
                prometheus_parse::Value::Histogram(buckets) => {
                    let name = format!("{}_bucket", s.metric);
                    for b in buckets {
                        let mut labels = labels.clone();
                        labels.push(("le".to_owned(), bound_text(b.less_than)));
                        samples.push(Sample {
                            name: name.clone(),
                            labels,
                            value: b.count,
                        });
                    }
                }
                // Summaries' quantiles are precomputed by the exporter and cannot be summed
                // over nodes; their `_sum`/`_count` samples come through as plain samples.
                prometheus_parse::Value::Summary(_) => {}
            }
        }
        Scrape { samples }
    }

    /// Sum of every sample named `name` (all label sets).
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }

    /// The cumulative buckets of histogram `name` (`name_bucket{le=...}`), summed over other
    /// labels, sorted by bound (`+Inf` last).
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut out: Vec<(f64, f64)> = Vec::new();
        for s in self.samples.iter().filter(|s| s.name == bucket) {
            let Some(le) = s.label("le").and_then(parse_bound) else {
                continue;
            };
            match out.iter_mut().find(|(b, _)| *b == le) {
                Some(slot) => slot.1 += s.value,
                None => out.push((le, s.value)),
            }
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }
}

fn bound_text(le: f64) -> String {
    if le == f64::INFINITY {
        "+Inf".to_owned()
    } else {
        le.to_string()
    }
}

fn parse_bound(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        _ => s.parse().ok(),
    }
}

/// Quantile `q` of the observations that arrived between two cumulative bucket snapshots,
/// interpolated linearly inside the bucket it falls in (the Prometheus `histogram_quantile`
/// estimate); `None` when nothing was observed. Also returns the bucket's upper bound, the
/// guaranteed ceiling of the estimate.
pub fn quantile_between(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<(f64, f64)> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, c)| {
            let prev = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, p)| *p);
            (*le, (c - prev).max(0.0))
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower_bound = 0.0;
    let mut lower_count = 0.0;
    for (le, count) in &delta {
        if *count >= rank {
            if le.is_infinite() {
                return Some((lower_bound, f64::INFINITY));
            }
            let in_bucket = count - lower_count;
            let frac = if in_bucket > 0.0 {
                (rank - lower_count) / in_bucket
            } else {
                1.0
            };
            return Some((lower_bound + (le - lower_bound) * frac, *le));
        }
        lower_bound = *le;
        lower_count = *count;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP session_instantcopy_push_updates_total Updates sent.
# TYPE session_instantcopy_push_updates_total counter
session_instantcopy_push_updates_total{peer="2"} 10
session_instantcopy_push_updates_total{peer="3"} 12
session_loads_total 7
lag_bucket{le="0.0001"} 1
lag_bucket{le="0.0002"} 3
lag_bucket{le="+Inf"} 4
lag_sum 0.5
lag_count 4
odd{a="x",b="z"} 1.5
# HELP typed_seconds A declared histogram.
# TYPE typed_seconds histogram
typed_seconds_bucket{node="1",le="0.5"} 2
typed_seconds_bucket{node="1",le="+Inf"} 3
typed_seconds_bucket{node="2",le="0.5"} 1
typed_seconds_bucket{node="2",le="+Inf"} 1
typed_seconds_sum{node="1"} 1.25
typed_seconds_count{node="1"} 3
# EOF
"#;

    #[test]
    fn parses_counters_labels_and_buckets() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.sum("session_instantcopy_push_updates_total"), 22.0);
        assert_eq!(s.sum("session_loads_total"), 7.0);
        assert_eq!(s.sum("missing"), 0.0);
        let odd = s.samples.iter().find(|x| x.name == "odd").unwrap();
        assert_eq!(odd.label("a"), Some("x"));
        assert_eq!(odd.label("b"), Some("z"));
        assert_eq!(
            s.buckets("lag"),
            vec![(0.0001, 1.0), (0.0002, 3.0), (f64::INFINITY, 4.0)]
        );
        // A declared histogram is summed over its label sets per bound, like untyped buckets.
        assert_eq!(
            s.buckets("typed_seconds"),
            vec![(0.5, 3.0), (f64::INFINITY, 4.0)]
        );
        assert_eq!(s.sum("typed_seconds_sum"), 1.25);
        assert_eq!(s.sum("typed_seconds_count"), 3.0);
    }

    #[test]
    fn garbage_is_skipped_not_fatal() {
        let s = Scrape::parse("not a metric line at all\n{broken 1\nok_total 2\n\u{0}\n");
        assert_eq!(s.sum("ok_total"), 2.0);
    }

    #[test]
    fn quantiles_come_from_the_delta_and_interpolate() {
        let before = vec![(1.0, 10.0), (2.0, 10.0), (4.0, 10.0), (f64::INFINITY, 10.0)];
        let after = vec![
            (1.0, 10.0),
            (2.0, 60.0),
            (4.0, 110.0),
            (f64::INFINITY, 110.0),
        ];
        // 100 new observations: 50 in (1,2], 50 in (2,4].
        let (p50, ceil) = quantile_between(&before, &after, 0.5).unwrap();
        assert!((p50 - 2.0).abs() < 1e-9, "{p50}");
        assert_eq!(ceil, 2.0);
        let (p99, ceil) = quantile_between(&before, &after, 0.99).unwrap();
        assert!((p99 - 3.96).abs() < 1e-9, "{p99}");
        assert_eq!(ceil, 4.0);
        assert_eq!(quantile_between(&after, &after, 0.5), None);
        let inf = vec![(1.0, 0.0), (f64::INFINITY, 5.0)];
        assert_eq!(
            quantile_between(&[], &inf, 0.99),
            Some((1.0, f64::INFINITY))
        );
    }
}
