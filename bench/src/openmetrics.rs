//! Reading the demo's `/metrics` (OpenMetrics text): counters summed over label sets, and
//! histograms, whose quantiles between two scrapes are estimated from the bucket deltas.

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
    /// Parses OpenMetrics/Prometheus text; comment lines and lines that do not parse are skipped.
    pub fn parse(text: &str) -> Self {
        Scrape {
            samples: text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .filter_map(parse_line)
                .collect(),
        }
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

fn parse_bound(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        _ => s.parse().ok(),
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let (head, rest) = match line.find('{') {
        Some(i) => {
            let close = line[i..].find('}')? + i;
            (
                (&line[..i], Some(&line[i + 1..close])),
                line[close + 1..].trim(),
            )
        }
        None => {
            let (n, r) = line.split_once(' ')?;
            ((n, None), r.trim())
        }
    };
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    let labels = head.1.map(parse_labels).unwrap_or_default();
    Some(Sample {
        name: head.0.trim().to_owned(),
        labels,
        value,
    })
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        let after = &rest[eq + 1..];
        let Some(after) = after.strip_prefix('"') else {
            break;
        };
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key, value));
        rest = &after[end..];
    }
    out
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
odd{a="x\"y",b="z"} 1.5
# EOF
"#;

    #[test]
    fn parses_counters_labels_and_buckets() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.sum("session_instantcopy_push_updates_total"), 22.0);
        assert_eq!(s.sum("session_loads_total"), 7.0);
        assert_eq!(s.sum("missing"), 0.0);
        let odd = s.samples.iter().find(|x| x.name == "odd").unwrap();
        assert_eq!(odd.label("a"), Some("x\"y"));
        assert_eq!(odd.label("b"), Some("z"));
        assert_eq!(
            s.buckets("lag"),
            vec![(0.0001, 1.0), (0.0002, 3.0), (f64::INFINITY, 4.0)]
        );
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
