//! The `metrics` facade: a 3-node instant-copy cluster (`replication = 1`) publishes through a
//! real Prometheus exporter; the exposition, parsed with a maintained parser, has the documented
//! names and labels, and N moves as requests are made (a node without a copy fetches).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::collections::HashMap;

use backend_instantcopy::testing::{InProcessCluster, holders, read, route_of, write};
use backend_instantcopy::{Ack, Replication};
use metrics_exporter_prometheus::PrometheusBuilder;
use session_core::{ExpiryPolicy, telemetry};

/// `name{labels}` → value, from one exposition.
fn scrape(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    parsed
        .samples
        .into_iter()
        .map(|s| {
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            };
            (format!("{}{{{}}}", s.metric, labels.join(",")), v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_published_through_the_metrics_facade_scrapes_with_its_names() {
    let c = InProcessCluster::start(
        3,
        Replication::Backups(1),
        Ack::One,
        ExpiryPolicy::default(),
    )
    .await
    .unwrap();
    let token = write(&c.node(0), None, "k", 1).await.unwrap();
    c.settle().await;
    let (id, _) = route_of(&c, &token).unwrap();
    let outsider = (0..3).find(|i| !holders(&c, &id).contains(i)).unwrap();
    let node = c.node(outsider);

    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let publish = || metrics::with_local_recorder(&recorder, || telemetry::publish(node.as_ref()));

    publish();
    let before = scrape(&handle.render());
    for name in [
        "session_network_calls_total{}",
        "session_db_calls_total{}",
        "session_loads_total{}",
        "session_unavailable_reads_total{}",
        "session_instantcopy_sessions_held{}",
    ] {
        assert!(before.contains_key(name), "{name} missing from {before:?}");
    }
    // Per-peer metrics keep their labels.
    assert!(
        before
            .keys()
            .any(|k| k.starts_with("session_instantcopy_peer_up{") && k.contains("peer=")),
        "{before:?}"
    );

    // Reads on the node that holds no copy: each one fetches (N moves), loads count.
    for _ in 0..3 {
        assert_eq!(read(&node, &token, "k").await.unwrap().0, Some(1));
    }
    publish();
    let after = scrape(&handle.render());
    let moved = |name: &str| after[name] - before[name];
    assert_eq!(moved("session_loads_total{}"), 3.0);
    assert!(moved("session_network_calls_total{}") >= 3.0, "{after:?}");
    assert_eq!(moved("session_db_calls_total{}"), 0.0);
    // Id tokens are 40–60 bytes: every one of the three fell into the `le = 64` bucket.
    assert_eq!(
        moved("session_client_bytes_bucket{le=64}"),
        3.0,
        "{after:?}"
    );
    assert_eq!(moved("session_client_bytes_bucket{le=32}"), 0.0);
    assert_eq!(moved("session_client_bytes_bucket{le=+Inf}"), 3.0);
    // Publishing twice changes nothing (totals, not increments).
    publish();
    assert_eq!(
        scrape(&handle.render())["session_loads_total{}"],
        after["session_loads_total{}"]
    );
}
