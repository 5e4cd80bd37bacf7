//! Rolling restarts of a real 3-node instant-copy cluster of processes behind a real nginx
//! (configured as `deploy/nginx.conf`; the tests' TCP round robin where nginx is missing),
//! under continuous load: every node restarted in turn, twice, the next as soon
//! as the previous one reports ready on `/readyz` — with SIGTERM (a drain) for `all`/`async`
//! and `k = 1`/`one`, and with SIGKILL for `k = 1`/`one`. Afterwards every session, active or
//! idle, is read on every node: no session lost, no acknowledged write lost, never a 500, and
//! after a graceful stop never a 502 (a request cut off mid-flight, which nginx cannot retry
//! for a POST).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backend_instantcopy::{Ack, Replication};
use common::{Nginx, RoundRobin, User, addr_of, binary};
use demo_app::cluster::{ClusterSpec, LocalCluster};
use demo_app::config::BackendKind;
use serde_json::json;

/// Users adding cart items all through the restarts, and users who logged in and then stayed
/// idle: 30 of each, or `ROLLING_USERS` of each (the scenario used 60).
fn users() -> usize {
    std::env::var("ROLLING_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

/// Distinct SKUs each active user cycles through (below the demo's 100-line cart cap).
const SKUS: u32 = 40;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    s500: AtomicU64,
    s503: AtomicU64,
    /// 502 from the balancer: the node died with the request in flight (outcome unknown, as
    /// with no response; only a crash may cause it).
    s502: AtomicU64,
    other: AtomicU64,
    no_response: AtomicU64,
}

impl Tally {
    fn count(&self, r: &Result<(u16, serde_json::Value), reqwest::Error>) {
        let c = match r {
            Ok((200..=299, _)) => &self.ok,
            Ok((500, _)) => &self.s500,
            Ok((503, _)) => &self.s503,
            Ok((502, _)) => &self.s502,
            Ok((status, body)) => {
                if self.other.load(Ordering::Relaxed) < 3 {
                    eprintln!("unexpected answer: {status} {body}");
                }
                &self.other
            }
            Err(_) => &self.no_response,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

fn spec(replication: Replication, ack: Ack) -> ClusterSpec {
    let mut spec = ClusterSpec::new(3, BackendKind::Instantcopy);
    spec.replication = replication;
    spec.ack = ack;
    spec.log = std::env::var("ROLLING_LOG").unwrap_or_else(|_| "warn".into());
    spec.show_logs = std::env::var("ROLLING_LOG").is_ok();
    // One log salt on every node, so a session's log lines can be followed across them.
    spec.extra_env
        .push(("SESSION_LOG_SALT".into(), "rolling-test".into()));
    for (k, v) in [
        ("HEARTBEAT_INTERVAL", "200ms"),
        ("ANTI_ENTROPY_INTERVAL", "1s"),
        ("JOIN_TIMEOUT", "2s"),
        ("CONNECT_TIMEOUT", "200ms"),
        ("REQUEST_TIMEOUT", "800ms"),
    ] {
        spec.extra_env
            .push((format!("DEMO_BACKEND__INSTANTCOPY__{k}"), v.to_string()));
    }
    spec
}

/// Logs a user in through the balancer (retrying a 503 or a dropped connection).
async fn login(lb: &str, name: String) -> User {
    let mut u = User::fresh_connections();
    for _ in 0..50 {
        if let Ok((200, _)) = u
            .try_send("POST", format!("{lb}/login"), Some(json!({ "user": name })))
            .await
        {
            return u;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("could not log {name} in");
}

async fn rolling_restart(replication: Replication, ack: Ack, kill: bool) {
    let label = format!(
        "{replication}/{ack}/{}",
        if kill { "SIGKILL" } else { "SIGTERM" }
    );
    let mut cluster = LocalCluster::start(binary(), &spec(replication, ack))
        .await
        .unwrap();
    // A real nginx when installed (./scripts/test installs it), else the tests' own
    // TCP-level round robin.
    let backends: Vec<_> = cluster.urls().iter().map(|u| addr_of(u)).collect();
    let nginx = Nginx::start(&backends).await;
    let tcp = match &nginx {
        Some(_) => None,
        None => Some(RoundRobin::start(backends).await),
    };
    let lb_url = match (&nginx, &tcp) {
        (Some(n), _) => n.url(),
        (None, Some(t)) => t.url(),
        (None, None) => unreachable!("one balancer is always started"),
    };
    let lb_name = if nginx.is_some() {
        "nginx"
    } else {
        "tcp round robin"
    };
    for i in 0..3 {
        cluster
            .wait_node_ready(i, Duration::from_secs(30))
            .await
            .unwrap();
    }
    let mut idle = Vec::new();
    for i in 0..users() {
        idle.push(login(&lb_url, format!("idle{i}")).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let began = Instant::now();
    let mut active = Vec::new();
    for i in 0..users() {
        let (lb_url, stop, tally) = (lb_url.clone(), stop.clone(), tally.clone());
        active.push(tokio::spawn(async move {
            let mut u = login(&lb_url, format!("active{i}")).await;
            // Acknowledged adds per SKU (the demo caps a cart at 100 lines, so the SKUs cycle;
            // a lost write then shows as a quantity below the acknowledged count).
            let mut acked: BTreeMap<String, u64> = BTreeMap::new();
            let mut served_by = std::collections::BTreeMap::new();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let sku = format!("s{}", n % SKUS);
                let r = u
                    .try_send(
                        "POST",
                        format!("{lb_url}/cart/items"),
                        Some(json!({ "sku": sku, "qty": 1 })),
                    )
                    .await;
                tally.count(&r);
                if let Ok((200, body)) = &r {
                    served_by.insert(sku.clone(), (body["node"].clone(), began.elapsed()));
                    *acked.entry(sku).or_insert(0) += 1;
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (u, acked, served_by)
        }));
    }
    // Every node restarted in turn, twice; the next goes once the previous reports ready.
    let mut downtime = Vec::new();
    for _round in 0..2 {
        for i in 0..3 {
            let t = Instant::now();
            eprintln!("{label}: {:?} stopping node {}", began.elapsed(), i + 1);
            if kill {
                cluster.kill(i).await;
            } else {
                let status = cluster.terminate(i, Duration::from_secs(20)).await;
                let code = status.and_then(|s| s.code());
                assert_eq!(
                    code,
                    Some(0),
                    "{label}: node {} exit status {status:?}",
                    i + 1
                );
            }
            cluster.start_node(i).unwrap();
            let ready = cluster
                .wait_node_ready(i, Duration::from_secs(30))
                .await
                .unwrap();
            assert_eq!(ready["ready"], json!(true));
            downtime.push(t.elapsed());
        }
    }
    // A little more load on the restarted cluster, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut users = Vec::new();
    for a in active {
        users.push(a.await.unwrap());
    }
    let elapsed = began.elapsed();
    // Every session on every node: idle ones logged in, active ones with every acked item.
    let urls = cluster.urls();
    let mut acked_total = 0;
    let mut lost_writes = 0;
    let mut lost_sessions = 0;
    for (i, (u, acked, served_by)) in users.iter_mut().enumerate() {
        acked_total += acked.values().sum::<u64>();
        for url in &urls {
            let (s, body) = u.send("GET", format!("{url}/cart"), None).await;
            if s != 200 {
                lost_sessions += 1;
                eprintln!("{label}: active user {i} on {url}: {s} {body}");
                continue;
            }
            // A 503 may still have been applied (the write reached a holder but not enough
            // of them in time), so a quantity may be above the acknowledged count, never below.
            let items = &body["items"];
            let missing: Vec<(&String, u64, u64)> = acked
                .iter()
                .filter_map(|(sku, n)| {
                    let have = items[sku.as_str()].as_u64().unwrap_or(0);
                    (have < *n).then_some((sku, *n, have))
                })
                .collect();
            if !missing.is_empty() {
                lost_writes += missing.iter().map(|(_, n, have)| n - have).sum::<u64>();
                let session = u
                    .token
                    .as_deref()
                    .and_then(session_core::unverified_session_id)
                    .map(|id| id.log_hash_with("rolling-test"));
                eprintln!(
                    "{label}: active user {i} (session #{session:?} in the node logs) on {url} lost {:?}",
                    missing
                        .iter()
                        .map(|(m, want, have)| (m, want, have, served_by.get(*m)))
                        .collect::<Vec<_>>()
                );
            }
        }
    }
    for (i, u) in idle.iter_mut().enumerate() {
        for url in &urls {
            let (s, body) = u.send("GET", format!("{url}/profile"), None).await;
            if s != 200 {
                lost_sessions += 1;
                eprintln!("{label}: idle user {i} on {url}: {s} {body}");
            }
        }
    }
    let t = &tally;
    println!(
        "rolling restart {label} behind {lb_name}: 6 restarts in {elapsed:?} (each {:?}..{:?}), {} writes acked of \
         {} answered ({} 503, {} 500, {} other, {} 502 or no response); sessions lost {lost_sessions}, \
         acked writes lost {lost_writes}",
        downtime.iter().min().unwrap(),
        downtime.iter().max().unwrap(),
        acked_total,
        t.ok.load(Ordering::Relaxed)
            + t.s500.load(Ordering::Relaxed)
            + t.s503.load(Ordering::Relaxed),
        t.s503.load(Ordering::Relaxed),
        t.s500.load(Ordering::Relaxed),
        t.other.load(Ordering::Relaxed),
        t.no_response.load(Ordering::Relaxed) + t.s502.load(Ordering::Relaxed),
    );
    assert!(acked_total > 0);
    assert_eq!(lost_sessions, 0, "{label}: sessions lost");
    assert_eq!(lost_writes, 0, "{label}: acknowledged writes lost");
    assert_eq!(t.s500.load(Ordering::Relaxed), 0, "{label}: 500s");
    if !kill {
        // A graceful restart answers or refuses every request; only a crash cuts one off.
        assert_eq!(
            t.s502.load(Ordering::Relaxed),
            0,
            "{label}: 502s from the balancer"
        );
    }
    assert_eq!(
        t.other.load(Ordering::Relaxed),
        0,
        "{label}: unexpected statuses"
    );
    cluster.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_all_async_with_sigterm() {
    rolling_restart(Replication::All, Ack::Async, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_one_backup_ack_one_with_sigterm() {
    rolling_restart(Replication::Backups(1), Ack::One, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_one_backup_ack_one_with_sigkill() {
    rolling_restart(Replication::Backups(1), Ack::One, true).await;
}
