//! Dynamic membership on real in-process nodes: joining by seeds (an address, or a host name),
//! scaling up and down under load without losing a session, tokens naming nodes that are gone,
//! strangers without the secret, a duplicate node id, and convergence under churn.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backend_instantcopy::testing::{
    Discovery, InProcessCluster, eventually, read, route_of, test_config, write,
};
use backend_instantcopy::wire::PeerSeal;
use backend_instantcopy::{Ack, InstantCopyNode, NodeId, Replication, StartError};
use session_core::{ExpiryPolicy, KeyRing, now_millis};

/// The ids each running node sees alive (itself included), and the ids that are running.
fn views(c: &InProcessCluster) -> (Vec<BTreeSet<u16>>, BTreeSet<u16>) {
    let running: BTreeSet<u16> = c.running().iter().map(|n| n.node_id().0).collect();
    let views = c
        .running()
        .iter()
        .map(|n| {
            let mut v: BTreeSet<u16> = n.peers().iter().filter(|p| p.up).map(|p| p.id).collect();
            v.insert(n.node_id().0);
            v
        })
        .collect();
    (views, running)
}

fn agreed(c: &InProcessCluster) -> bool {
    let (views, running) = views(c);
    views.iter().all(|v| *v == running)
}

fn updates_sent(c: &InProcessCluster) -> u64 {
    c.running()
        .iter()
        .map(|n| {
            n.shared()
                .members
                .all()
                .iter()
                .map(|p| p.push_updates.get())
                .sum::<u64>()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_by_one_seed_take_replicas_and_leave_without_losing_a_session() {
    let c = InProcessCluster::start_custom(
        3,
        3,
        Discovery::FirstAsSeed,
        ExpiryPolicy::default(),
        |cfg| {
            cfg.replication = Replication::Backups(1);
            cfg.ack = Ack::One;
        },
    )
    .await
    .unwrap();
    assert!(c.wait_ready(Duration::from_secs(5)).await);
    // Users on the first three nodes; load keeps writing while the cluster grows.
    let mut tokens = Vec::new();
    for i in 0..30 {
        tokens.push(write(&c.node(i % 3), None, "k", i as i64).await.unwrap());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (c, stop, tokens) = (c.clone(), stop.clone(), tokens.clone());
        tokio::spawn(async move {
            let mut acked = 0u64;
            let mut n = 0usize;
            let mut tokens = tokens;
            while !stop.load(Ordering::Relaxed) {
                let i = n % tokens.len();
                if let Ok(t) = write(&c.node(i % 3), Some(&tokens[i]), "load", n as i64).await {
                    tokens[i] = t;
                    acked += 1;
                }
                n += 1;
            }
            (acked, tokens)
        })
    };
    // Node 4 knows only node 1, node 5 only node 2.
    let joined = Instant::now();
    let four = c.add_node(0).await.unwrap();
    let five = c.add_node(1).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || agreed(&c)).await,
        "views {:?}",
        views(&c)
    );
    println!(
        "scale up: two nodes joined and every member agreed after {:?}",
        joined.elapsed()
    );
    // New sessions are placed on the new members too, and they serve any session.
    let mut on_new = 0;
    for i in 0..40 {
        let t = write(&c.node(i % 5), None, "k", 100 + i as i64)
            .await
            .unwrap();
        let (_, r) = route_of(&c, &t).unwrap();
        if r.holders().any(|n| n == NodeId(4) || n == NodeId(5)) {
            on_new += 1;
        }
        tokens.push(t);
    }
    assert!(on_new > 0, "no session placed on the new members");
    for t in &tokens[..30] {
        assert!(read(&c.node(four), t, "k").await.unwrap().0.is_some());
        assert!(read(&c.node(five), t, "k").await.unwrap().0.is_some());
    }
    stop.store(true, Ordering::Relaxed);
    let (acked, loaded_tokens) = load.await.unwrap();
    assert!(acked > 0);
    tokens.splice(..30, loaded_tokens);
    // Messages per write stay k = 1 for writes on the owner, whatever the cluster size
    // (measured once rebalancing onto the new members is over).
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.settle().await;
    let before = updates_sent(&c);
    let mut t = write(&c.node(0), None, "m", 0).await.unwrap();
    for i in 1..=100 {
        t = write(&c.node(0), Some(&t), "m", i).await.unwrap();
    }
    c.settle().await;
    let per_write = (updates_sent(&c) - before) as f64 / 101.0;
    println!("5 nodes, k = 1: {per_write:.2} replication messages per write");
    assert!(per_write <= 1.1, "{per_write} messages per write");

    // Scale down: node 4 leaves gracefully, node 5 crashes.
    let report = c.drain(four).await.unwrap();
    assert_eq!(report.left_behind, 0, "{report:?}");
    c.kill(five);
    for (i, t) in tokens.iter().enumerate() {
        let (v, _) = read(&c.node(i % 3), t, "k").await.unwrap();
        assert!(v.is_some(), "session {i} lost after scale-down");
    }
    assert!(
        eventually(Duration::from_secs(10), || agreed(&c)).await,
        "views {:?}",
        views(&c)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_given_as_a_host_name_works() {
    let c = InProcessCluster::start_custom(
        2,
        1,
        Discovery::FirstAsSeed,
        ExpiryPolicy::default(),
        |cfg| {
            // `localhost` resolves to 127.0.0.1 and ::1 here: several addresses, one of which
            // answers.
            if let Some(seed) = cfg.seeds.first_mut() {
                let port = seed.rsplit_once(':').unwrap().1.to_owned();
                *seed = format!("localhost:{port}");
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(c.config(1).seeds.len(), 1);
    assert!(c.config(1).seeds[0].starts_with("localhost:"));
    let t = write(&c.node(0), None, "k", 7).await.unwrap();
    c.restart(1).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || agreed(&c)).await);
    assert_eq!(read(&c.node(1), &t, "k").await.unwrap().0, Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_naming_a_node_no_member_remembers_is_still_served_and_rehomed() {
    let c = InProcessCluster::start_custom(
        3,
        3,
        Discovery::FirstAsSeed,
        ExpiryPolicy::default(),
        |cfg| {
            cfg.replication = Replication::Backups(1);
        },
    )
    .await
    .unwrap();
    assert!(c.wait_ready(Duration::from_secs(5)).await);
    // A node joins, takes a session as its owner, and leaves.
    let four = c.add_node(0).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || agreed(&c)).await);
    let t = write(&c.node(four), None, "k", 42).await.unwrap();
    assert_eq!(route_of(&c, &t).unwrap().1.owner, NodeId(4));
    c.drain(four).await.unwrap();
    // A node that joins now never heard of node 4: the id in the token resolves to nothing,
    // so it is never contacted; the session is found on the members placement points to.
    let six = c.add_node(1).await.unwrap();
    assert!(
        c.instance(six)
            .unwrap()
            .shared()
            .members
            .get(NodeId(4))
            .is_none()
    );
    assert!(
        eventually(Duration::from_secs(5), || c
            .instance(six)
            .unwrap()
            .readiness()
            .ready)
        .await
    );
    let (v, t2) = read(&c.node(six), &t, "k").await.unwrap();
    assert_eq!(v, Some(42));
    let (_, r) = route_of(&c, &t2).unwrap();
    assert_ne!(r.owner, NodeId(4), "re-homed off the node that left");
    assert!(!r.backups.contains(&NodeId(4)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_without_the_secret_cannot_join_or_inject_gossip() {
    let c = InProcessCluster::start(2, Replication::All, Ack::Async, ExpiryPolicy::default())
        .await
        .unwrap();
    let n1 = c.instance(0).unwrap();
    let target = n1.cluster_addr();
    let before = n1.shared().gossip_counters.auth_failures.get();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Garbage, a datagram sealed with another cluster's secret, and a replay of a properly
    // sealed datagram from long ago.
    udp.send_to(b"hello, let me in", target).await.unwrap();
    let other = PeerSeal::new(&KeyRing::generate());
    udp.send_to(&other.seal_datagram(NodeId(9), now_millis(), b"x"), target)
        .await
        .unwrap();
    let ours = PeerSeal::new(c.keys());
    udp.send_to(
        &ours.seal_datagram(NodeId(9), now_millis() - 3_600_000, b"x"),
        target,
    )
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(2), || {
            n1.shared().gossip_counters.auth_failures.get() >= before + 3
        })
        .await
    );
    // A whole node with the wrong secret, seeded with this cluster's address.
    let mut cfg = test_config(9, Vec::new(), Replication::All, Ack::Async);
    cfg.seeds = vec![target.to_string()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stranger = InstantCopyNode::start_with_listener(
        cfg,
        ExpiryPolicy::default(),
        &KeyRing::generate(),
        listener,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        stranger.peers().is_empty(),
        "the stranger learned {:?}",
        stranger.peers()
    );
    for n in c.running() {
        assert!(
            n.shared().members.get(NodeId(9)).is_none(),
            "the stranger became a member"
        );
    }
    assert!(
        n1.shared().metrics.auth_failures.get() > 0,
        "its hello was refused"
    );
    session_core::SessionBackend::shutdown(&stranger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_claiming_a_live_nodes_id_is_refused() {
    let c = InProcessCluster::start(3, Replication::All, Ack::Async, ExpiryPolicy::default())
        .await
        .unwrap();
    let n2 = c.instance(1).unwrap();
    let generation = n2.identity().generation;
    for seed in [0usize, 1] {
        // Seeded with node 1 (which knows node 2 is alive elsewhere), or with node 2 itself.
        let mut cfg = test_config(2, Vec::new(), Replication::All, Ack::Async);
        cfg.seeds = vec![c.config(seed).cluster_addr.to_string()];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r =
            InstantCopyNode::start_with_listener(cfg, ExpiryPolicy::default(), c.keys(), listener)
                .await;
        match r {
            Err(StartError::DuplicateNodeId { id, holder }) => {
                assert_eq!(id, NodeId(2));
                assert_eq!(holder.generation, generation);
            }
            other => panic!("seed {seed}: a duplicate id started: {other:?}"),
        }
    }
    assert_eq!(
        n2.identity().generation,
        generation,
        "the real node 2 is untouched"
    );
    assert!(n2.shared().members.duplicate_claims.get() >= 1);
    assert!(eventually(Duration::from_secs(2), || agreed(&c)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_converges_on_every_node_under_churn() {
    let c = InProcessCluster::start_custom(
        8,
        8,
        Discovery::FirstAsSeed,
        ExpiryPolicy::default(),
        |_| {},
    )
    .await
    .unwrap();
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || agreed(&c)).await,
        "{:?}",
        views(&c)
    );
    println!(
        "8 nodes: every view agreed {:?} after the last start",
        started.elapsed()
    );
    // Churn: two crash, one restarts, one drains, one new joins.
    let churn = Instant::now();
    c.kill(2);
    c.kill(5);
    c.restart(2).await.unwrap();
    c.drain(6).await.unwrap();
    c.add_node(3).await.unwrap();
    assert!(
        eventually(Duration::from_secs(15), || agreed(&c)).await,
        "{:?}",
        views(&c)
    );
    println!(
        "8 nodes under churn: every view agreed {:?} after the churn began",
        churn.elapsed()
    );
}

/// A pod rescheduled by Kubernetes keeps its node id (StatefulSet ordinal) but comes back with
/// a new IP, often before the others noticed it was gone: it must be let in (not refused as a
/// duplicate of its own dead incarnation), the others must reach it at the new address, and
/// no session may be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_at_a_new_address_under_its_old_id_rejoins_and_nothing_is_lost() {
    for replication in [Replication::Backups(1), Replication::All] {
        let c = InProcessCluster::start_custom(
            3,
            3,
            Discovery::FirstAsSeed,
            ExpiryPolicy::default(),
            |cfg| {
                cfg.replication = replication;
                cfg.ack = if replication == Replication::All {
                    Ack::Async
                } else {
                    Ack::One
                };
            },
        )
        .await
        .unwrap();
        assert!(c.wait_ready(Duration::from_secs(10)).await);
        let mut tokens = Vec::new();
        for i in 0..60 {
            tokens.push(write(&c.node(i % 3), None, "k", i as i64).await.unwrap());
        }
        c.settle().await;
        let old_addr = c.config(1).cluster_addr;
        // Crash node 2 and bring it back at once on another port, under the same id.
        c.kill(1);
        c.restart_elsewhere(1).await.unwrap();
        let new_addr = c.config(1).cluster_addr;
        assert_ne!(old_addr, new_addr);
        assert!(
            c.wait_ready(Duration::from_secs(15)).await,
            "{replication:?}: the node at its new address never became ready"
        );
        // The others know node 2 by its new address.
        assert!(
            eventually(Duration::from_secs(10), || {
                [0, 2].iter().all(|&i| {
                    c.instance(i).is_some_and(|n| {
                        n.peers()
                            .iter()
                            .any(|p| p.id == 2 && p.addr == new_addr.to_string() && p.up)
                    })
                })
            })
            .await,
            "{replication:?}: peers still dial node 2 at {old_addr}"
        );
        // Every session is still there, read through every node, and writable.
        for (i, t) in tokens.iter().enumerate() {
            for n in 0..3 {
                assert_eq!(
                    read(&c.node(n), t, "k").await.unwrap().0,
                    Some(i as i64),
                    "{replication:?}: session {i} on node {}",
                    n + 1
                );
            }
        }
        let t = write(&c.node(1), Some(&tokens[0]), "k", 1000)
            .await
            .unwrap();
        c.settle().await;
        assert_eq!(read(&c.node(2), &t, "k").await.unwrap().0, Some(1000));
    }
}
