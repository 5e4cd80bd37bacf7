//! Reading the nodes: `/metrics` summed over the nodes by series name, `/status.json`'s
//! replication queues, and waiting until replication has gone quiet.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;

/// The `session_*` series of every node, summed by series name (labels dropped).
pub(super) type Scrape = BTreeMap<String, f64>;

/// Sums an OpenMetrics/Prometheus text exposition by metric name (labels dropped), parsed by
/// [`openmetrics::Scrape`](crate::openmetrics::Scrape). Bucket series are skipped. Series with
/// a `kind` label (the per-request costs) are also summed under `name{kind="..."}`.
pub fn sum_by_name(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for sample in crate::openmetrics::Scrape::parse(text).samples {
        if sample.name.ends_with("_bucket") {
            continue;
        }
        if let Some(kind) = sample.label("kind") {
            *out.entry(format!("{}{{kind=\"{kind}\"}}", sample.name))
                .or_insert(0.0) += sample.value;
        }
        *out.entry(sample.name).or_insert(0.0) += sample.value;
    }
    out
}

pub(super) async fn get_text(
    client: &reqwest::Client,
    url: &str,
    run: &str,
) -> Result<String, Table1Error> {
    let err = |message: String| Table1Error::Scrape {
        run: run.to_owned(),
        url: url.to_owned(),
        message,
    };
    let res = client
        .get(url)
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    if !res.status().is_success() {
        return Err(err(format!("status {}", res.status())));
    }
    res.text().await.map_err(|e| err(e.to_string()))
}

/// Scrapes every node's `/metrics` and sums the `session_*` series over the nodes.
pub(super) async fn scrape(
    ctx: &Ctx<'_>,
    urls: &[String],
    run: &str,
) -> Result<Scrape, Table1Error> {
    let mut total = Scrape::new();
    for url in urls {
        let text = get_text(&ctx.client, &format!("{url}/metrics"), run).await?;
        for (name, v) in sum_by_name(&text) {
            if name.starts_with("session_") {
                *total.entry(name).or_insert(0.0) += v;
            }
        }
    }
    Ok(total)
}

/// Updates still queued for peers, over every node (0 for backends without peers).
pub(super) async fn queued(ctx: &Ctx<'_>, urls: &[String], run: &str) -> Result<u64, Table1Error> {
    let mut n = 0;
    for url in urls {
        let status_url = format!("{url}/status.json");
        let text = get_text(&ctx.client, &status_url, run).await?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Table1Error::Scrape {
                run: run.to_owned(),
                url: status_url.clone(),
                message: format!("not JSON: {e}"),
            })?;
        n += v["peers"]
            .as_array()
            .map_or(0, |p| p.iter().filter_map(|p| p["queued"].as_u64()).sum());
    }
    Ok(n)
}

/// Scrapes until replication has gone quiet: nothing queued and the counters unchanged over
/// 100 ms (at most 10 s; then the last scrape is used).
pub(super) async fn scrape_settled(
    ctx: &Ctx<'_>,
    urls: &[String],
    run: &str,
) -> Result<Scrape, Table1Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = scrape(ctx, urls, run).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let pending = queued(ctx, urls, run).await?;
        let now = scrape(ctx, urls, run).await?;
        if (pending == 0 && now == last) || Instant::now() >= deadline {
            return Ok(now);
        }
        last = now;
    }
}

pub(super) fn delta(before: &Scrape, after: &Scrape, name: &str) -> f64 {
    after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
}
