//! The paper's scheme on real multi-node clusters (issue: instant copy): fetch from owner,
//! push on write, destroy and id cycling everywhere, forged tokens, the authenticated cluster
//! port, expiry, restart.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backend_instantcopy::internals::{Placement, SessionState};
use backend_instantcopy::testing::{Discovery, InProcessCluster};
use backend_instantcopy::wire::{self, PeerSeal, PushBatch, Update};
use backend_instantcopy::{Ack, NodeId, Replication, Route, Stamp};
use session_core::{
    Commit, ExpiryPolicy, KeyRing, Session, SessionBackend, SessionData, SessionId, TokenSigner,
    now_millis,
};

fn policy(idle_ms: u64) -> ExpiryPolicy {
    ExpiryPolicy::new(Duration::from_millis(idle_ms), Duration::from_secs(3600)).unwrap()
}

async fn write(
    node: &Arc<dyn SessionBackend>,
    token: Option<&str>,
    key: &str,
    value: i64,
) -> String {
    let s = Session::new(node.clone(), token.map(str::to_owned));
    s.insert(key, &value).unwrap();
    match s.commit().await.unwrap() {
        Commit::Issue { token, .. } => token,
        other => panic!("write gave {other:?}"),
    }
}

async fn read(node: &Arc<dyn SessionBackend>, token: &str, key: &str) -> Option<i64> {
    Session::new(node.clone(), Some(token.to_owned()))
        .get(key)
        .await
        .unwrap()
}

fn n_calls(c: &InProcessCluster, i: usize) -> u64 {
    c.instance(i).unwrap().counters().network_calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paper_flow_on_three_nodes() {
    let c = InProcessCluster::start(3, Replication::All, Ack::Async, ExpiryPolicy::default())
        .await
        .unwrap();
    let (n1, n2, n3) = (c.node(0), c.node(1), c.node(2));

    // Step 1: created on node 1, pushed to the others; a read on node 2 is local.
    let t = write(&n1, None, "a", 1).await;
    c.settle().await;
    let before = n_calls(&c, 1);
    assert_eq!(read(&n2, &t, "a").await, Some(1));
    assert_eq!(n_calls(&c, 1), before, "node 2 had the pushed copy: N = 0");

    // Step 3: a write on node 3 is visible on nodes 1 and 2 without a fetch.
    let t = write(&n3, Some(&t), "b", 2).await;
    c.settle().await;
    let (b1, b2) = (n_calls(&c, 0), n_calls(&c, 1));
    assert_eq!(read(&n1, &t, "b").await, Some(2));
    assert_eq!(read(&n2, &t, "b").await, Some(2));
    assert_eq!(
        (n_calls(&c, 0), n_calls(&c, 1)),
        (b1, b2),
        "no fetch after a push"
    );

    // Destroy on node 2: gone everywhere.
    let s = Session::new(n2.clone(), Some(t.clone()));
    s.destroy();
    assert_eq!(s.commit().await.unwrap(), Commit::Clear);
    c.settle().await;
    for n in [&n1, &n2, &n3] {
        assert!(n.load(&t).await.unwrap().is_none());
    }

    // Cycle on node 1: the old token is dead on every node, the new one works everywhere.
    let old = write(&n1, None, "user", 7).await;
    c.settle().await;
    let s = Session::new(n1.clone(), Some(old.clone()));
    s.cycle_id();
    s.get::<i64>("user").await.unwrap();
    let Commit::Issue { token: new, .. } = s.commit().await.unwrap() else {
        panic!("cycle issues a token")
    };
    c.settle().await;
    for n in [&n1, &n2, &n3] {
        assert!(
            n.load(&old).await.unwrap().is_none(),
            "old id alive after cycle"
        );
        assert_eq!(read(n, &new, "user").await, Some(7));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_copy_fetches_once_then_reads_locally() {
    // Node 3 misses the push (anti-entropy is paused so it cannot repair first).
    let c = InProcessCluster::start_custom(
        3,
        3,
        Discovery::StaticMembers,
        ExpiryPolicy::default(),
        |cfg| cfg.anti_entropy_interval = Duration::from_secs(600),
    )
    .await
    .unwrap();
    assert!(c.wait_ready(Duration::from_secs(5)).await);
    for n in c.running() {
        n.faults().pause_anti_entropy(true);
    }
    c.instance(0).unwrap().faults().lose_pushes_to(NodeId(3));
    let t = write(&c.node(0), None, "k", 5).await;
    c.settle().await;
    assert_eq!(c.instance(2).unwrap().sessions_held(), 0);
    let n3 = c.node(2);
    let before = n_calls(&c, 2);
    assert_eq!(read(&n3, &t, "k").await, Some(5));
    assert_eq!(
        n_calls(&c, 2) - before,
        1,
        "first read: one fetch from the owner"
    );
    assert_eq!(read(&n3, &t, "k").await, Some(5));
    assert_eq!(n_calls(&c, 2) - before, 1, "second read: local");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_starts_late_syncs_its_share_in_the_background() {
    // Node 3 is down while the sessions are created; when it starts it pulls them (every
    // session, with replication = "all") and reports ready, without any client traffic.
    let c =
        InProcessCluster::start_with(3, 2, Replication::All, Ack::Async, ExpiryPolicy::default())
            .await
            .unwrap();
    let mut tokens = Vec::new();
    for i in 0..50 {
        tokens.push(write(&c.node(i % 2), None, "k", i as i64).await);
    }
    c.settle().await;
    c.restart(2).await.unwrap();
    assert!(c.wait_ready(Duration::from_secs(10)).await);
    let n3 = c.instance(2).unwrap();
    assert_eq!(
        n3.sessions_held(),
        50,
        "synced every session before reporting ready"
    );
    let repaired = n3.shared().sync_counters.pulled.get()
        + (0..2)
            .map(|i| c.instance(i).unwrap().shared().sync_counters.pushed.get())
            .sum::<u64>();
    assert!(repaired >= 50, "anti-entropy moved them: {repaired}");
    let before = n_calls(&c, 2);
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(read(&c.node(2), t, "k").await, Some(i as i64));
    }
    assert_eq!(
        n_calls(&c, 2) - before,
        0,
        "every read local after the sync"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_copy_is_never_served_to_a_client_that_saw_newer() {
    let c = InProcessCluster::start(3, Replication::All, Ack::Async, ExpiryPolicy::default())
        .await
        .unwrap();
    let (n1, n2) = (c.node(0), c.node(1));
    let t = write(&n1, None, "v", 1).await;
    c.settle().await;
    // Many writes on node 1, each read back at once on node 2 with the token just returned:
    // whether or not the push arrived, node 2 must show the write (fetching if needed).
    let mut t = t;
    for i in 2..40 {
        t = write(&n1, Some(&t), "v", i).await;
        assert_eq!(
            read(&n2, &t, "v").await,
            Some(i),
            "read-your-writes across nodes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_cause_no_outbound_connection() {
    let c = InProcessCluster::start(
        3,
        Replication::Backups(1),
        Ack::Async,
        ExpiryPolicy::default(),
    )
    .await
    .unwrap();
    // A listener standing in for "an address the attacker wanted"; it counts connections.
    let bait = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = bait.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let bait_task = tokio::spawn(async move {
        while bait.accept().await.is_ok() {
            h.fetch_add(1, Ordering::SeqCst);
        }
    });
    let signer = TokenSigner::new(c.keys());
    let n1 = c.node(0);
    let good = write(&n1, None, "k", 1).await;

    // Correctly signed (an insider's key), but naming nodes that are not members — including
    // one whose id is the bait's port number. Node ids resolve only through the member table:
    // an unknown id has no address, so it is never contacted; the session is looked for on the
    // members placement would choose, and is not there.
    for owner in [port, 99, u16::MAX] {
        let route = Route {
            owner: NodeId(owner),
            version: 0,
            backups: vec![],
        };
        let t = signer.sign(&SessionId::random(), &route.encode()).unwrap();
        for i in 0..3 {
            assert!(
                !matches!(c.node(i).load(&t).await, Ok(Some(_))),
                "non-member owner {owner}"
            );
        }
    }
    // Node id 0 is never valid.
    let route = Route {
        owner: NodeId(0),
        version: 0,
        backups: vec![],
    };
    let t = signer.sign(&SessionId::random(), &route.encode()).unwrap();
    assert!(n1.load(&t).await.is_err());
    // A member owner with a non-member backup, and routing bytes that are an IPv4 address.
    let route = Route {
        owner: NodeId(1),
        version: 0,
        backups: vec![NodeId(port)],
    };
    let t = signer.sign(&SessionId::random(), &route.encode()).unwrap();
    assert!(!matches!(n1.load(&t).await, Ok(Some(_))));
    let t = signer
        .sign(
            &SessionId::random(),
            &[127, 0, 0, 1, (port >> 8) as u8, port as u8],
        )
        .unwrap();
    assert!(n1.load(&t).await.is_err());
    let before = c.total(|x| x.network_calls);

    // A real token with one character flipped, at every position.
    for i in 0..good.len() {
        let mut b = good.clone().into_bytes();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(b).unwrap();
        for n in 0..3 {
            assert!(!matches!(c.node(n).load(&forged).await, Ok(Some(_))));
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the bait address was contacted"
    );
    assert_eq!(
        c.total(|x| x.network_calls),
        before,
        "forged tokens caused peer calls"
    );
    bait_task.abort();
}

/// Sends a raw request to a node's cluster port.
async fn raw(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> u16 {
    let client = reqwest::Client::new();
    let mut req = client.post(format!("http://{addr}{path}")).body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().await.unwrap().status().as_u16()
}

/// Sends only a request head declaring a `len`-byte body, never the body, and returns the
/// status the node answers with: proof that it decided without reading the body.
async fn head_only(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    len: usize,
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {len}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the node answered without waiting for the body")
        .unwrap();
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

fn full_state(id: SessionId) -> Update {
    let s = SessionState::create(
        id,
        SessionData::new(),
        &ExpiryPolicy::default(),
        now_millis(),
        Stamp { time: 1, node: 2 },
        Placement {
            stamp: Stamp { time: 1, node: 2 },
            owner: NodeId(2),
            backups: vec![],
        },
    );
    Update::State(s.to_wire_full())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_port_refuses_unauthenticated_stale_and_malformed_requests() {
    let c = InProcessCluster::start(2, Replication::All, Ack::Async, ExpiryPolicy::default())
        .await
        .unwrap();
    let target = c.instance(0).unwrap();
    let addr = target.cluster_addr();
    let id = SessionId::random();
    let body = wire::encode(&PushBatch {
        updates: vec![full_state(id)],
    })
    .unwrap();
    let seal = PeerSeal::new(c.keys());
    let now = now_millis();
    let to = NodeId(1);
    let hdrs = |from: u16, t: u64, auth: &str| {
        vec![
            (wire::HDR_FROM, from.to_string()),
            (wire::HDR_TO, "1".to_string()),
            (wire::HDR_TIME, t.to_string()),
            (wire::HDR_AUTH, auth.to_string()),
        ]
    };
    let send = |path: &'static str, h: Vec<(&'static str, String)>, body: Vec<u8>| async move {
        raw(addr, path, &h, body).await
    };

    // No authentication at all.
    assert_eq!(raw(addr, wire::PATH_PUSH, &[], body.clone()).await, 401);
    // Sealed with another cluster's secret.
    let other = PeerSeal::new(&KeyRing::generate());
    let r = other.seal_request("POST", wire::PATH_PUSH, NodeId(2), to, now, &body);
    assert_eq!(
        send(wire::PATH_PUSH, hdrs(2, now, &r.auth), r.body).await,
        401
    );
    // Right secret, but sealed for another path (replayed to a different endpoint).
    let r = seal.seal_request("POST", wire::PATH_FETCH, NodeId(2), to, now, &body);
    assert_eq!(
        send(wire::PATH_PUSH, hdrs(2, now, &r.auth), r.body).await,
        401
    );
    // Right secret, outside the replay window (a captured request replayed a minute later).
    let old = now - 60_000;
    let r = seal.seal_request("POST", wire::PATH_PUSH, NodeId(2), to, old, &body);
    assert_eq!(
        send(wire::PATH_PUSH, hdrs(2, old, &r.auth), r.body).await,
        401
    );
    // Claiming to be the receiver itself, or node 0.
    for from in [1, 0] {
        let r = seal.seal_request("POST", wire::PATH_PUSH, NodeId(from), to, now, &body);
        assert_eq!(
            send(wire::PATH_PUSH, hdrs(from, now, &r.auth), r.body).await,
            401
        );
    }
    // Sealed for node 2 (a request captured on its way there), replayed to node 1.
    let r = seal.seal_request("POST", wire::PATH_PUSH, NodeId(3), NodeId(2), now, &body);
    let mut for_two = hdrs(3, now, &r.auth);
    for_two[1].1 = "2".into();
    assert_eq!(send(wire::PATH_PUSH, for_two, r.body.clone()).await, 401);
    // ... even with the recipient header rewritten: the tag and the seal bind it.
    assert_eq!(
        send(wire::PATH_PUSH, hdrs(3, now, &r.auth), r.body).await,
        401
    );
    // A valid head with a body that does not match it (another request's body).
    let r = seal.seal_request("POST", wire::PATH_PUSH, NodeId(2), to, now, &body);
    let r2 = seal.seal_request("POST", wire::PATH_PUSH, NodeId(2), to, now, &body);
    assert_eq!(
        send(wire::PATH_PUSH, hdrs(2, now, &r.auth), r2.body).await,
        401
    );
    assert_eq!(
        target.sessions_held(),
        0,
        "refused requests changed nothing"
    );
    let m = &target.shared().metrics;
    assert_eq!(m.auth_failures.get(), 9);

    // Authenticated garbage: 400, nothing changes.
    let r = seal.seal_request(
        "POST",
        wire::PATH_PUSH,
        NodeId(2),
        to,
        now,
        b"\xff\xff\xff\xff\xff",
    );
    assert_eq!(
        send(wire::PATH_PUSH, hdrs(2, now, &r.auth), r.body).await,
        400
    );
    // Oversized: unauthenticated is 401 and authenticated is 413, both before the body is read.
    let big = vec![0u8; target.shared().config.max_body_bytes + 1];
    assert_eq!(
        head_only(addr, wire::PATH_PUSH, &hdrs(2, now, "x"), big.len()).await,
        401
    );
    let r = seal.seal_request("POST", wire::PATH_PUSH, NodeId(2), to, now, &big[28..]);
    assert_eq!(r.body.len(), big.len());
    assert_eq!(
        head_only(addr, wire::PATH_PUSH, &hdrs(2, now, &r.auth), big.len()).await,
        413
    );
    // A stranger's head declaring a large body is refused the same way: nothing is buffered.
    let r = other.seal_request("POST", wire::PATH_PUSH, NodeId(2), to, now, &big[28..]);
    assert_eq!(
        head_only(addr, wire::PATH_PUSH, &hdrs(2, now, &r.auth), big.len()).await,
        401
    );
    assert_eq!(target.sessions_held(), 0);

    // The same push, properly sealed, is applied; sent again (a replay inside the window),
    // it is refused.
    let r = seal.seal_request("POST", wire::PATH_PUSH, NodeId(2), to, now, &body);
    assert_eq!(
        send(wire::PATH_PUSH, hdrs(2, now, &r.auth), r.body.clone()).await,
        200
    );
    assert_eq!(target.sessions_held(), 1);
    let before = m.auth_failures.get();
    assert_eq!(
        send(wire::PATH_PUSH, hdrs(2, now, &r.auth), r.body).await,
        401
    );
    assert_eq!(m.auth_failures.get(), before + 1, "the replay is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_swept_everywhere_and_reads_elsewhere_keep_them_alive() {
    let c = InProcessCluster::start(3, Replication::All, Ack::Async, policy(1_200))
        .await
        .unwrap();
    let (n1, n2) = (c.node(0), c.node(1));
    let idle = write(&n1, None, "k", 1).await;
    let active = write(&n1, None, "k", 2).await;
    c.settle().await;
    for i in 0..3 {
        assert_eq!(c.instance(i).unwrap().sessions_held(), 2);
    }
    // Read `active` on node 2 only, for three times the idle timeout.
    let mut t = active;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let s = Session::new(n2.clone(), Some(t.clone()));
        assert_eq!(
            s.get::<i64>("k").await.unwrap(),
            Some(2),
            "active session expired"
        );
        if let Commit::Issue { token, .. } = s.commit().await.unwrap() {
            t = token;
        }
    }
    c.settle().await;
    // Node 1 never saw a request for `active`, but the touches reached it.
    assert_eq!(read(&n1, &t, "k").await, Some(2));
    // `idle` is gone on every node, and the sweeper released it from memory.
    for i in 0..3 {
        assert!(c.node(i).load(&idle).await.unwrap().is_none());
        assert_eq!(
            c.instance(i).unwrap().sessions_held(),
            1,
            "node {i} still holds the idle session"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rejoins_and_serves() {
    let c = InProcessCluster::start(3, Replication::All, Ack::Async, ExpiryPolicy::default())
        .await
        .unwrap();
    let t = write(&c.node(0), None, "k", 1).await;
    c.settle().await;
    c.kill(1);
    assert!(
        c.node(1).load(&t).await.is_err(),
        "a dead node answers nothing"
    );
    // The others notice (SWIM: probed within a few periods, then suspected, then down).
    let n1 = c.instance(0).unwrap();
    let mut noticed = false;
    for _ in 0..300 {
        if !n1.shared().members.is_up(NodeId(2)) {
            noticed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(noticed, "node 1 never saw node 2 go down");

    c.restart(1).await.unwrap();
    assert!(
        c.wait_connected(Duration::from_secs(5)).await,
        "restarted node taken back"
    );
    let n2 = c.node(1);
    assert_eq!(
        read(&n2, &t, "k").await,
        Some(1),
        "serves old sessions by fetching"
    );
    let t2 = write(&n2, None, "new", 2).await;
    c.settle().await;
    assert_eq!(
        read(&c.node(2), &t2, "new").await,
        Some(2),
        "its writes replicate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_on_the_cluster_port_are_cut_off_and_peers_keep_working() {
    let c = InProcessCluster::start_custom(
        2,
        2,
        Discovery::StaticMembers,
        ExpiryPolicy::default(),
        |cfg| {
            cfg.cluster_header_read_timeout = Duration::from_secs(1);
            cfg.cluster_max_connections = 64;
        },
    )
    .await
    .unwrap();
    assert!(c.wait_ready(Duration::from_secs(5)).await);
    let addr = c.instance(0).unwrap().cluster_addr();
    // Slowloris: connections that send half a request head and then nothing.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /ic/v1/push HTTP/1.1\r\nhost: x\r\nx-ic-from: 2\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    // Peers still work beside them: a write on node 2 reaches node 1.
    let t = write(&c.node(1), None, "k", 7).await;
    c.settle().await;
    assert_eq!(c.instance(0).unwrap().sessions_held(), 1);
    // After the header-read timeout every slow connection has been closed by the node.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let mut closed = 0;
    for s in &mut slow {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            // Closed (EOF or reset), possibly after a 408 the node wrote first.
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) => {
                if matches!(
                    tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await,
                    Ok(Ok(0)) | Ok(Err(_))
                ) {
                    closed += 1;
                }
            }
            Err(_) => {}
        }
    }
    assert_eq!(closed, slow.len(), "slow connections still open");
    let s = Session::new(c.node(0), Some(t));
    assert_eq!(s.get::<i64>("k").await.unwrap(), Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_cut_by_bytes_and_an_oversized_session_fails_alone() {
    // Peer bodies of at most 64 KiB: 20 sessions of 20 KiB are 400 KiB together.
    let c = InProcessCluster::start_custom(
        2,
        2,
        Discovery::StaticMembers,
        ExpiryPolicy::default(),
        |cfg| {
            cfg.max_body_bytes = 64 * 1024;
            cfg.anti_entropy_interval = Duration::from_secs(600);
        },
    )
    .await
    .unwrap();
    assert!(c.wait_ready(Duration::from_secs(5)).await);
    for n in c.running() {
        n.faults().pause_anti_entropy(true);
    }
    let (n1, n2) = (c.instance(0).unwrap(), c.instance(1).unwrap());
    n1.faults().lose_pushes_to(NodeId(2));
    let big_limits = session_core::SessionLimits {
        max_bytes: 1 << 20,
        max_keys: 1000,
    };
    let commit = |value: String| {
        let node = c.node(0);
        async move {
            let s = Session::with_limits(node, None, big_limits);
            s.insert("v", &value).unwrap();
            match s.commit().await.unwrap() {
                Commit::Issue { token, .. } => token,
                other => panic!("write gave {other:?}"),
            }
        }
    };
    let mut small = Vec::new();
    for i in 0..20 {
        small.push(commit(format!("{i:0>20480}")).await);
    }
    // One session larger than any peer body, written among them.
    let big = commit("x".repeat(100 * 1024)).await;
    assert_eq!(n2.sessions_held(), 0, "pushes were lost on purpose");
    n1.faults().deliver_pushes_to(NodeId(2));
    // Anti-entropy sends all 21 at once: cut into byte-bounded batches, the big one left out.
    n1.anti_entropy().await;
    assert_eq!(n2.sessions_held(), 20, "the small sessions all arrived");
    assert!(n1.shared().oversized_updates() >= 1);
    for t in &small {
        let s = Session::new(c.node(1), Some(t.clone()));
        assert_eq!(
            s.get::<String>("v").await.unwrap().map(|v| v.len()),
            Some(20480)
        );
    }
    // New writes to small sessions still replicate beside the oversized one.
    let s = Session::with_limits(c.node(0), Some(small[0].clone().into()), big_limits);
    s.insert("w", &1).unwrap();
    s.commit().await.unwrap();
    let s = Session::with_limits(c.node(0), Some(big.into()), big_limits);
    s.insert("w", &1).unwrap();
    s.commit().await.unwrap();
    c.settle().await;
    assert_eq!(n2.sessions_held(), 20);
    assert!(
        n2.shared()
            .store
            .read(
                &TokenSigner::new(c.keys()).verify(&small[0]).unwrap().id,
                |st| { st.record().data.get("w").is_some() }
            )
            .unwrap_or(false),
        "the small session's write arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_session_cap_new_sessions_are_refused_and_live_ones_keep_working() {
    let c = InProcessCluster::start_custom(
        2,
        2,
        Discovery::StaticMembers,
        ExpiryPolicy::default(),
        |cfg| {
            cfg.max_sessions = 5;
            cfg.max_tombstones = 3;
        },
    )
    .await
    .unwrap();
    assert!(c.wait_ready(Duration::from_secs(5)).await);
    let n1 = c.node(0);
    let mut tokens = Vec::new();
    for i in 0..5 {
        tokens.push(write(&n1, None, "k", i).await);
    }
    // The sixth is refused with a clear Unavailable (503 in the layer), and counted.
    let s = Session::new(n1.clone(), None);
    s.insert("k", &99).unwrap();
    let e = s.commit().await.unwrap_err();
    assert!(
        matches!(e, session_core::SessionError::Unavailable { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("max_sessions"), "{e}");
    let node1 = c.instance(0).unwrap();
    assert_eq!(node1.shared().metrics.sessions_refused.get(), 1);
    assert_eq!(node1.sessions_held(), 5, "nothing was evicted");
    // Live sessions still read and write.
    write(&n1, Some(&tokens[0]), "k", 100).await;
    assert_eq!(read(&n1, &tokens[0], "k").await, Some(100));
    // Logouts always work; each frees a place, and leaves a tombstone.
    for t in &tokens[..3] {
        let s = Session::new(n1.clone(), Some(t.clone()));
        s.get::<i64>("k").await.unwrap();
        s.destroy();
        s.commit().await.unwrap();
    }
    assert_eq!(node1.sessions_held(), 2);
    // Three tombstones: at that cap no new session either, although there is room for them.
    let s = Session::new(n1.clone(), None);
    s.insert("k", &1).unwrap();
    let e = s.commit().await.unwrap_err();
    assert!(e.to_string().contains("max_tombstones"), "{e}");
    assert_eq!(node1.shared().metrics.sessions_refused.get(), 2);
    // And the survivors are untouched.
    assert_eq!(read(&n1, &tokens[3], "k").await, Some(3));
    assert_eq!(read(&c.node(1), &tokens[4], "k").await, Some(4));
}

/// Pushes to a peer are pipelined (two batches on the wire at once), yet one session's
/// updates stay in order: with the batch carrying a create held back on the wire, a change
/// to that session written right after does not overtake it (which would cost a "send it
/// whole" round trip), while another session's write goes out beside it; every copy ends
/// equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_pushes_keep_each_sessions_updates_in_order() {
    let c = InProcessCluster::start(2, Replication::All, Ack::Async, policy(60_000))
        .await
        .unwrap();
    assert!(c.wait_ready(Duration::from_secs(5)).await);
    let node = c.node(0);
    let other = c.node(1);
    let first = write(&node, None, "n", 0).await;
    c.settle().await;
    let peer = c.instance(1).unwrap().node_id();
    let writer = c.instance(0).unwrap();
    writer
        .faults()
        .slow_next_push_to(peer, Duration::from_secs(2));
    // The create goes into the held-back batch; its change and another session's change are
    // queued while it is on the wire.
    let created = write(&node, None, "n", 1).await;
    let changed = write(&node, Some(&created), "n", 2).await;
    let elsewhere = write(&node, Some(&first), "n", 3).await;
    // The other session's change is not stuck behind the slow batch: it arrives while the
    // create is still held back.
    let start = std::time::Instant::now();
    while read_local(&c, 1, &elsewhere).await != Some(3) {
        assert!(start.elapsed() < Duration::from_secs(10), "never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        read_local(&c, 1, &created).await,
        None,
        "the second batch waited for the slow one"
    );
    while read_local(&c, 1, &changed).await != Some(2) {
        assert!(start.elapsed() < Duration::from_secs(10), "never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.settle().await;
    assert_eq!(
        writer.shared().full_resends(),
        0,
        "a change overtook the create it follows"
    );
    assert_eq!(read(&other, &changed, "n").await, Some(2));
    assert_eq!(c.instance(1).unwrap().sessions_held(), 2);
}

/// The value node `i` holds itself for the session `token` names (no fetch).
async fn read_local(c: &InProcessCluster, i: usize, token: &str) -> Option<i64> {
    let (id, _) = backend_instantcopy::testing::route_of(c, token)?;
    let node = c.instance(i)?;
    let record = node.shared().store.read(&id, |s| s.record().clone())?;
    record.data.get("n").and_then(|v| v.parse::<i64>().ok())
}
