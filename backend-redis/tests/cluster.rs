//! The Redis backend on a real Redis Cluster (3 masters on loopback ports, started and stopped
//! here): sessions spread over the masters, the three-step id cycle, concurrent writers, and a
//! master killed and restarted mid-run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backend_redis::RedisBackend;
use backend_redis::testing::{RedisCluster, RedisFactory, delete_prefix};
use session_core::{Delta, ExpiryPolicy, RawJson, SessionBackend, SessionData, SessionError};

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

fn data(k: &str, x: impl serde::Serialize) -> SessionData {
    std::iter::once((k.to_owned(), RawJson::from_value(&x).unwrap())).collect()
}

fn set(k: &str, x: impl serde::Serialize) -> Delta {
    let mut d = Delta::default();
    d.set(k, RawJson::from_value(&x).unwrap());
    d
}

fn metric(b: &RedisBackend, name: &str) -> u64 {
    b.counters()
        .extra
        .iter()
        .find(|m| m.name == name)
        .unwrap()
        .value as u64
}

/// Round trips an operation cost, not counting one-time script uploads (NOSCRIPT fallbacks).
async fn trips<T>(b: &RedisBackend, f: impl Future<Output = T>) -> (T, u64) {
    let (n0, s0) = (b.counters().network_calls, metric(b, "script_loads"));
    let out = f.await;
    let (n1, s1) = (b.counters().network_calls, metric(b, "script_loads"));
    (out, (n1 - n0) - (s1 - s0))
}

/// Index of the master holding `key` (asked directly, without cluster redirection).
async fn node_of(cluster: &RedisCluster, key: &str) -> usize {
    for (i, url) in cluster.urls().iter().enumerate() {
        let mut con = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        // A node answers MOVED for keys of slots it does not serve.
        if let Ok(1) = redis::cmd("EXISTS")
            .arg(key)
            .query_async::<u64>(&mut con)
            .await
        {
            return i;
        }
    }
    panic!("{key} is on no master")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_on_a_real_redis_cluster() {
    let mut cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("could not start a Redis Cluster: {e}"));
    let f = RedisFactory::cluster(cluster.urls());
    let p = ExpiryPolicy::default();
    let a = Arc::new(f.backend(p).await.unwrap());
    let b = Arc::new(f.backend(p).await.unwrap());
    assert!(a.is_cluster());

    // Sessions spread over the masters; each operation is one round trip.
    let mut tokens = Vec::new();
    let mut homes = [0usize; 3];
    for i in 0..30 {
        let (saved, n) = trips(&a, a.create(data("n", i))).await;
        assert_eq!(n, 1, "create");
        let token = saved.unwrap().token;
        let (l, n) = trips(&b, b.load(&token)).await;
        assert_eq!(n, 1, "load");
        let l = l.unwrap().unwrap();
        homes[node_of(&cluster, &a.key_of(&l.record.id)).await] += 1;
        let (r, n) = trips(&b, b.save(&l, &set("m", i))).await;
        assert_eq!(n, 1, "save");
        r.unwrap();
        tokens.push(token);
    }
    assert!(
        homes.iter().filter(|h| **h > 0).count() >= 2,
        "sessions did not spread over the masters: {homes:?}"
    );

    // Cycling: three round trips; old id dead, new id holds everything, old-token saves Gone.
    let l = a.load(&tokens[0]).await.unwrap().unwrap();
    let (cycled, n) = trips(&a, a.cycle_id(&l, &set("user", "erin"))).await;
    assert_eq!(n, 3, "freeze, write, unlink");
    let new = cycled.unwrap().token;
    assert!(b.load(&tokens[0]).await.unwrap().is_none());
    let nl = b.load(&new).await.unwrap().unwrap();
    assert_eq!(
        nl.record.data.to_json_object(),
        r#"{"m":0,"n":0,"user":"erin"}"#
    );
    assert_eq!(nl.record.version, l.record.version + 1);
    assert_eq!(nl.record.created_at, l.record.created_at);
    assert_eq!(nl.record.absolute_deadline, l.record.absolute_deadline);
    assert!(matches!(
        b.save(&l, &set("late", 1)).await,
        Err(SessionError::Gone)
    ));
    assert!(matches!(
        b.cycle_id(&l, &Delta::default()).await,
        Err(SessionError::Gone)
    ));

    // A save racing a cycle either lands in the new session or is reported Gone.
    for round in 0..15 {
        let t = a.create(data("user", "u")).await.unwrap().token;
        let la = a.load(&t).await.unwrap().unwrap();
        let lb = b.load(&t).await.unwrap().unwrap();
        let (login, cart) = (set("login", round), set("cart", round));
        let (cycled, saved) = tokio::join!(a.cycle_id(&la, &login), b.save(&lb, &cart));
        let after = a.load(&cycled.unwrap().token).await.unwrap().unwrap();
        let cart = after.record.data.get_as::<i32>("cart").unwrap();
        match saved {
            Ok(_) => assert_eq!(cart, Some(round), "round {round}: acknowledged save lost"),
            Err(SessionError::Gone) => assert_eq!(cart, None),
            Err(e) => panic!("round {round}: {e}"),
        }
        assert!(a.load(&t).await.unwrap().is_none());
    }

    // Concurrent writers on different keys of one session, from two app nodes.
    let token = a.create(data("base", 0)).await.unwrap().token;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let node = if w % 2 == 0 { a.clone() } else { b.clone() };
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            for r in 0..10 {
                let l = node.load(&token).await.unwrap().unwrap();
                node.save(&l, &set(&format!("w{w}r{r}"), r)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        within("cluster writers", t).await.unwrap();
    }
    let l = a.load(&token).await.unwrap().unwrap();
    assert_eq!(l.record.data.len(), 1 + 80);
    assert_eq!(l.record.version, 81);

    // A master dies: its sessions are Unavailable (never a hang, never a wrong answer), the
    // others keep working; once it is back (empty: no persistence) requests succeed again.
    let victim_token = tokens[1].clone();
    let vl = a.load(&victim_token).await.unwrap().unwrap();
    let victim = node_of(&cluster, &a.key_of(&vl.record.id)).await;
    let mut survivor = None;
    for t in &tokens[2..] {
        let l = a.load(t).await.unwrap().unwrap();
        if node_of(&cluster, &a.key_of(&l.record.id)).await != victim {
            survivor = Some(t.clone());
            break;
        }
    }
    let survivor = survivor.expect("a session on another master");
    cluster.kill_node(victim);
    let down = std::time::Instant::now();
    for _ in 0..3 {
        match within("load from a dead master", a.load(&victim_token)).await {
            Err(SessionError::Unavailable { .. }) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    assert!(
        within("load from a live master", a.load(&survivor))
            .await
            .unwrap()
            .is_some()
    );
    eprintln!("3 loads from a dead master took {:?}", down.elapsed());
    tokio::task::block_in_place(|| cluster.restart_node(victim)).unwrap();
    let mut recovered = false;
    for _ in 0..100 {
        match within("load after restart", a.load(&victim_token)).await {
            Ok(None) => {
                recovered = true;
                break;
            }
            Ok(Some(_)) => panic!("a session survived a restart without persistence"),
            Err(SessionError::Unavailable { .. }) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(recovered, "the cluster connection never recovered");
    for i in 0..10 {
        let t = within("create after restart", a.create(data("i", i)))
            .await
            .unwrap()
            .token;
        assert!(b.load(&t).await.unwrap().is_some());
    }

    // Cleanup on every master finds our keys, and nothing is left afterwards.
    assert!(delete_prefix(f.config()).await.unwrap() > 0);
    assert_eq!(delete_prefix(f.config()).await.unwrap(), 0);
    drop(cluster);
}
