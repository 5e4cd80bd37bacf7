//! The near cache with `replication = k` (opt-in, `near_cache_capacity`): a node that holds no
//! copy of a session fetches it once and then reads it locally while the copy is as new as the
//! client's token; never after a logout, never older than the client's own writes, never past
//! its TTL. Off, the conformance suite's concurrent-writer checks hold everywhere; on, another
//! client's write can go unseen on such a node for up to the TTL (the second test).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::time::Duration;

use backend_instantcopy::testing::{Discovery, InProcessCluster, holders, read, route_of, write};
use session_core::{ExpiryPolicy, Session, SessionBackend};

async fn three(ttl: Duration) -> std::sync::Arc<InProcessCluster> {
    three_with(ttl, ExpiryPolicy::default()).await
}

async fn three_with(ttl: Duration, policy: ExpiryPolicy) -> std::sync::Arc<InProcessCluster> {
    let c = InProcessCluster::start_custom(3, 3, Discovery::StaticMembers, policy, |cfg| {
        cfg.replication = backend_instantcopy::Replication::Backups(1);
        cfg.ack = backend_instantcopy::Ack::One;
        cfg.near_cache_capacity = 1000;
        cfg.near_cache_ttl = ttl;
    })
    .await
    .unwrap();
    assert!(c.wait_ready(Duration::from_secs(5)).await);
    c
}

/// A session written on node 1, and the index of the node that holds no copy of it.
async fn session_and_outsider(c: &std::sync::Arc<InProcessCluster>) -> (String, usize) {
    let token = write(&c.node(0), None, "k", 1).await.unwrap();
    c.settle().await;
    let (id, _) = route_of(c, &token).unwrap();
    let held = holders(c, &id);
    assert_eq!(held.len(), 2, "owner and one backup");
    let outsider = (0..3).find(|i| !held.contains(i)).unwrap();
    (token, outsider)
}

fn calls(c: &InProcessCluster, i: usize) -> u64 {
    c.instance(i).unwrap().counters().network_calls
}

fn near_hits(c: &InProcessCluster, i: usize) -> u64 {
    c.instance(i)
        .unwrap()
        .shared()
        .metrics
        .near_cache_hits
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_fetches_once_then_reads_locally_and_never_older_than_the_token() {
    let c = three(Duration::from_secs(30)).await;
    let (token, out) = session_and_outsider(&c).await;
    let node = c.node(out);
    let before = calls(&c, out);
    assert_eq!(read(&node, &token, "k").await.unwrap().0, Some(1));
    let fetch = calls(&c, out) - before;
    assert!(fetch >= 1, "the first read fetches");
    let before = calls(&c, out);
    for _ in 0..5 {
        assert_eq!(read(&node, &token, "k").await.unwrap().0, Some(1));
    }
    assert_eq!(
        calls(&c, out) - before,
        0,
        "later reads are near-cache hits"
    );
    let hits = near_hits(&c, out);
    assert_eq!(hits, 5);
    assert_eq!(c.instance(out).unwrap().sessions_held(), 0, "not a holder");

    // The client writes on a holder: its new token is newer than the cached copy, so the
    // outsider fetches again and the client reads its own write.
    let token2 = write(&c.node(0), Some(&token), "k", 2).await.unwrap();
    assert_eq!(read(&node, &token2, "k").await.unwrap().0, Some(2));
    assert!(calls(&c, out) > before, "fetched again");

    // A write through the outsider itself (forwarded to the holders) leaves its copy as the
    // write made it: the client's next read there is local and sees the write.
    let token3 = write(&node, Some(&token2), "k", 3).await.unwrap();
    let before = calls(&c, out);
    assert_eq!(read(&node, &token3, "k").await.unwrap().0, Some(3));
    assert_eq!(
        calls(&c, out) - before,
        0,
        "the forwarded write refreshed the copy"
    );
    // On the holders too.
    for i in holders(&c, &route_of(&c, &token3).unwrap().0) {
        assert_eq!(read(&c.node(i), &token3, "k").await.unwrap().0, Some(3));
    }

    // Logout on a holder: the old token is dead on the outsider too, cache or not.
    let s = Session::new(c.node(1), Some(token3.clone()));
    s.get::<i64>("k").await.unwrap();
    s.destroy();
    s.commit().await.unwrap();
    for t in [&token, &token2, &token3] {
        assert!(
            node.load(t).await.unwrap().is_none(),
            "a logged-out session was served from the near cache"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_copy_is_served_no_longer_than_its_ttl() {
    let c = three(Duration::from_millis(300)).await;
    let (token, out) = session_and_outsider(&c).await;
    let node = c.node(out);
    read(&node, &token, "k").await.unwrap();
    let before = calls(&c, out);
    read(&node, &token, "k").await.unwrap();
    assert_eq!(calls(&c, out) - before, 0, "a near-cache hit");
    // Another client's write, with the first client's token unchanged: seen here once the
    // TTL has passed.
    write(&c.node(0), Some(&token), "other", 9).await.unwrap();
    c.settle().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let s = Session::new(node.clone(), Some(token.clone()));
    assert_eq!(s.get::<i64>("other").await.unwrap(), Some(9));
    assert!(
        calls(&c, out) > before,
        "the expired copy was fetched again"
    );
}

/// A copy that fell behind the client's token is refreshed from one holder, the other asked
/// only when that one is slow or lacks the write; with the first holder dead the read still
/// gets the newest copy from the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_asks_one_holder_first_and_the_other_when_it_is_dead() {
    let c = three(Duration::from_secs(30)).await;
    let (mut token, out) = session_and_outsider(&c).await;
    let node = c.node(out);
    read(&node, &token, "k").await.unwrap();
    // Five writes on the owner (node 0, acknowledged by the backup: `ack = one`), each read
    // afterwards on the outsider, whose copy is then one version behind the token.
    let before = calls(&c, out);
    for v in 10..15 {
        token = write(&c.node(0), Some(&token), "k", v).await.unwrap();
        assert_eq!(read(&node, &token, "k").await.unwrap().0, Some(v));
    }
    let refreshes = calls(&c, out) - before;
    assert!(
        (5..10).contains(&refreshes),
        "five refreshes asking both holders each would be 10 calls, got {refreshes}"
    );

    // The owner dies; the outsider has not noticed yet. The refresh asks the dead owner first
    // and, when that fails, the backup, which has the last write.
    token = write(&c.node(0), Some(&token), "k", 20).await.unwrap();
    c.kill(0);
    assert_eq!(read(&node, &token, "k").await.unwrap().0, Some(20));
}

/// The idle deadline holds across nodes with the near cache: reads served from the cache keep
/// the session alive on the holders (the touches they cause are forwarded there), and once
/// nobody reads the session for longer than the idle timeout, the cached copy is not served
/// either, although its TTL has not passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_cache_reads_keep_the_session_alive_and_an_idle_one_is_not_served() {
    let idle = Duration::from_secs(2);
    let policy = ExpiryPolicy::new(idle, Duration::from_secs(3600)).unwrap();
    let c = three_with(Duration::from_secs(60), policy).await;
    let (mut token, out) = session_and_outsider(&c).await;
    let (id, _) = route_of(&c, &token).unwrap();
    let node = c.node(out);
    // For twice the idle timeout the client reads only on the outsider.
    let until = std::time::Instant::now() + idle * 2;
    while std::time::Instant::now() < until {
        let (v, t) = read(&node, &token, "k").await.unwrap();
        assert_eq!(v, Some(1), "the session expired while it was being read");
        token = t;
        tokio::time::sleep(idle / 5).await;
    }
    let hits = near_hits(&c, out);
    assert!(hits > 0, "the outsider's reads were near-cache hits");
    // The holders kept it alive: the touches made on the outsider reached them.
    for i in holders(&c, &id) {
        assert!(
            c.node(i).load(&token).await.unwrap().is_some(),
            "node {i} let a session expire that was read elsewhere"
        );
    }
    // Nobody reads it for longer than the idle timeout (a bare `load` does not touch): expired
    // everywhere, the outsider's cached copy included.
    tokio::time::sleep(idle + idle / 2).await;
    assert!(
        node.load(&token).await.unwrap().is_none(),
        "an idle-expired session was served from the near cache"
    );
    for i in 0..3 {
        assert!(c.node(i).load(&token).await.unwrap().is_none(), "node {i}");
    }
}
