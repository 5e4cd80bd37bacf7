//! A user is never logged out while a copy of their session survives: a copy that is merely out
//! of reach makes a read `Unavailable` (503), not "no session"; once the newer holders are
//! confirmed gone, the newest surviving copy is served and what was lost is counted.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::time::Duration;

use backend_instantcopy::testing::{Discovery, InProcessCluster, eventually, read, write};
use backend_instantcopy::{NodeId, OnUnreachable, Replication};
use session_core::{ExpiryPolicy, SessionBackend, SessionError};

/// Cuts (or heals) every link between node index `i` and the others, all staying alive.
fn cut(c: &InProcessCluster, i: usize, on: bool) {
    let me = c.instance(i).unwrap();
    for other in c.running() {
        if other.node_id() == me.node_id() {
            continue;
        }
        if on {
            me.faults().cut(other.node_id());
            other.faults().cut(me.node_id());
        } else {
            me.faults().heal(other.node_id());
            other.faults().heal(me.node_id());
        }
    }
}

async fn login_and_add_a(c: &std::sync::Arc<InProcessCluster>, users: usize) -> Vec<String> {
    let mut tokens = Vec::new();
    for u in 0..users {
        let t = write(&c.node(0), None, "user", u as i64).await.unwrap();
        tokens.push(write(&c.node(0), Some(&t), "a", 1).await.unwrap());
    }
    c.settle().await;
    tokens
}

fn is_unavailable<T: std::fmt::Debug>(r: &Result<T, SessionError>) -> bool {
    matches!(r, Err(SessionError::Unavailable { .. }))
}

async fn three(
    on_unreachable: OnUnreachable,
    replication: Replication,
) -> std::sync::Arc<InProcessCluster> {
    let c = InProcessCluster::start_custom(
        3,
        3,
        Discovery::StaticMembers,
        ExpiryPolicy::default(),
        |cfg| {
            cfg.replication = replication;
            cfg.on_unreachable = on_unreachable;
        },
    )
    .await
    .unwrap();
    assert!(c.wait_ready(Duration::from_secs(5)).await);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_replica_answers_503_then_catches_up_and_survives_the_others() {
    let c = three(OnUnreachable::Unavailable, Replication::All).await;
    let mut tokens = login_and_add_a(&c, 20).await;
    cut(&c, 2, true);
    for t in &mut tokens {
        *t = write(&c.node(0), Some(t), "b", 2).await.unwrap();
    }
    // During the cut node 3 holds an older copy than each user's token: 503, not "no session".
    for t in &tokens {
        let r = c.node(2).load(t).await;
        assert!(is_unavailable(&r), "during the cut: {r:?}");
        let r = read(&c.node(2), t, "a").await;
        assert!(is_unavailable(&r), "a read through the session: {r:?}");
    }
    let n3 = c.instance(2).unwrap();
    assert!(n3.counters().unavailable_reads >= 20);
    // The cut heals; no client traffic; anti-entropy brings node 3 level.
    cut(&c, 2, false);
    assert!(
        eventually(Duration::from_secs(10), || {
            tokens.iter().all(|t| {
                let (id, _) = backend_instantcopy::testing::route_of(&c, t).unwrap();
                n3.shared()
                    .store
                    .read(&id, |s| s.record().data.get("b").is_some())
                    .unwrap_or(false)
            })
        })
        .await,
        "node 3 never caught up after the heal"
    );
    // Nodes 1 and 2 die: every user is still logged in on node 3, with both items.
    c.kill(0);
    c.kill(1);
    for t in &tokens {
        let (b, t2) = read(&c.node(2), t, "b").await.unwrap();
        assert_eq!(b, Some(2));
        let (a, _) = read(&c.node(2), &t2, "a").await.unwrap();
        assert_eq!(a, Some(1));
    }
    assert_eq!(n3.shared().metrics.lost_writes.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_newer_holders_die_the_newest_surviving_copy_is_served_and_the_loss_counted() {
    let c = three(OnUnreachable::Unavailable, Replication::All).await;
    let mut tokens = login_and_add_a(&c, 10).await;
    cut(&c, 2, true);
    for t in &mut tokens {
        *t = write(&c.node(0), Some(t), "b", 2).await.unwrap();
    }
    // The newer holders die while node 3 is cut off: it cannot tell them from unreachable yet.
    c.kill(0);
    c.kill(1);
    let n3 = c.instance(2).unwrap();
    for t in &tokens {
        assert!(is_unavailable(&c.node(2).load(t).await));
    }
    // The links come back: connections to the dead nodes' addresses are refused, which proves
    // them gone. Every user is still logged in, with the newest data that survived.
    for i in 0..2 {
        n3.faults().heal(NodeId(i + 1));
    }
    for t in &tokens {
        let (user, t2) = read(&c.node(2), t, "user").await.unwrap();
        assert!(user.is_some(), "logged out although a copy survived");
        let (a, t3) = read(&c.node(2), &t2, "a").await.unwrap();
        assert_eq!(a, Some(1));
        let (b, _) = read(&c.node(2), &t3, "b").await.unwrap();
        assert_eq!(b, None, "b was only on the dead nodes");
    }
    assert_eq!(
        n3.shared().metrics.lost_writes.get(),
        10,
        "each session's lost writes counted once"
    );
    assert_eq!(n3.shared().metrics.sessions_lost.get(), 0);
    // And the sessions are usable: node 3 took them over.
    let t = write(&c.node(2), Some(&tokens[0]), "c", 3).await.unwrap();
    assert_eq!(read(&c.node(2), &t, "c").await.unwrap().0, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_backup_out_of_reach_reads_and_writes_are_503_never_401_or_500() {
    let c = three(OnUnreachable::Unavailable, Replication::Backups(1)).await;
    let tokens = login_and_add_a(&c, 20).await;
    // Node 3 is cut off: for sessions it does not hold, every holder is out of its reach.
    cut(&c, 2, true);
    let n3 = c.instance(2).unwrap();
    let mut unavailable = 0;
    for t in &tokens {
        let (id, _) = backend_instantcopy::testing::route_of(&c, t).unwrap();
        let held = n3.shared().store.read(&id, |_| ()).is_some();
        let r = read(&c.node(2), t, "a").await;
        if held {
            // Its own copy is current: served.
            assert_eq!(r.unwrap().0, Some(1));
        } else {
            assert!(is_unavailable(&r), "{r:?}");
            unavailable += 1;
        }
        let w = write(&c.node(2), Some(t), "x", 1).await;
        assert!(w.is_ok() || is_unavailable(&w), "a write gave {w:?}");
    }
    assert!(unavailable > 0, "no session was out of reach");
    cut(&c, 2, false);
    assert!(
        eventually(Duration::from_secs(10), || c
            .instance(2)
            .unwrap()
            .peers()
            .iter()
            .all(|p| p.up))
        .await
    );
    for t in &tokens {
        let mut ok = false;
        for _ in 0..50 {
            if let Ok((v, _)) = read(&c.node(2), t, "a").await {
                assert_eq!(v, Some(1));
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok, "still unavailable after the heal");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_unreachable_stale_serves_the_older_copy_marked_and_refuses_writes() {
    let c = three(OnUnreachable::Stale, Replication::All).await;
    let mut tokens = login_and_add_a(&c, 5).await;
    cut(&c, 2, true);
    for t in &mut tokens {
        *t = write(&c.node(0), Some(t), "b", 2).await.unwrap();
    }
    let n3 = c.instance(2).unwrap();
    for t in &tokens {
        let loaded = c.node(2).load(t).await.unwrap().expect("served");
        assert!(loaded.stale, "marked stale");
        assert!(loaded.record.data.get("a").is_some());
        assert!(loaded.record.data.get("b").is_none(), "the older copy");
        let w = write(&c.node(2), Some(t), "c", 3).await;
        assert!(is_unavailable(&w), "a write to a stale copy: {w:?}");
    }
    assert!(n3.shared().metrics.stale_serves.get() >= 5);
    assert!(n3.counters().unavailable_writes >= 5);
}
