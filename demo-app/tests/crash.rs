//! A real process crash (SIGKILL) under `replication = 1, ack = one`: every acknowledged write
//! survives, the survivors serve and re-home the sessions, and replication is restored to two
//! live copies.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::time::{Duration, Instant};

use backend_instantcopy::{Ack, Replication};
use common::{User, binary};
use demo_app::cluster::{ClusterSpec, LocalCluster};
use demo_app::config::BackendKind;
use serde_json::{Value, json};

async fn held(http: &reqwest::Client, url: &str) -> u64 {
    let s: Value = http
        .get(format!("{url}/status.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    s["sessions_held"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_an_owner_loses_no_acknowledged_write() {
    let mut spec = ClusterSpec::new(3, BackendKind::Instantcopy);
    spec.replication = Replication::Backups(1);
    spec.ack = Ack::One;
    let mut cluster = LocalCluster::start(binary(), &spec).await.unwrap();
    let urls = cluster.urls();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    // Twenty users log in and fill carts on node 1 (so node 1 owns every session).
    let mut users = Vec::new();
    for i in 0..20 {
        let mut u = User::new();
        let (s, _) = u
            .send(
                "POST",
                format!("{}/login", urls[0]),
                Some(json!({"user": format!("u{i}")})),
            )
            .await;
        assert_eq!(s, 200);
        for sku in ["a", "b"] {
            let (s, _) = u
                .send(
                    "POST",
                    format!("{}/cart/items", urls[0]),
                    Some(json!({"sku": sku, "qty": i + 1})),
                )
                .await;
            assert_eq!(s, 200, "acknowledged write");
        }
        users.push(u);
    }

    let killed = Instant::now();
    cluster.kill(0).await;
    let mut first_ok = None;
    for (i, u) in users.iter_mut().enumerate() {
        let node = &urls[1 + i % 2];
        let (s, body) = u.send("GET", format!("{node}/cart"), None).await;
        first_ok.get_or_insert_with(|| killed.elapsed());
        assert_eq!(s, 200, "user {i} lost their session: {body}");
        assert_eq!(body["items"], json!({"a": i + 1, "b": i + 1}), "user {i}");
        let (s, _) = u
            .send(
                "POST",
                format!("{node}/cart/items"),
                Some(json!({"sku": "c", "qty": 1})),
            )
            .await;
        assert_eq!(s, 200, "writes work on the survivors");
        let other = &urls[1 + (i + 1) % 2];
        let (s, body) = u.send("GET", format!("{other}/profile"), None).await;
        assert_eq!((s, body["cart_items"].clone()), (200, json!(3)));
    }
    println!(
        "SIGKILL of the owner -> first successful request on a survivor after {:?}",
        first_ok.unwrap()
    );
    // Repair: both survivors hold every session again (owner + one backup each).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (a, b) = (held(&http, &urls[1]).await, held(&http, &urls[2]).await);
        if a >= 20 && b >= 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replication not restored: node 2 holds {a}, node 3 holds {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.stop(Duration::from_secs(5)).await;
}
