//! Behaviour of the Redis backend beyond the shared suite, against real Redis servers: the
//! shared one (under a unique key prefix, deleted afterwards) and throwaway ones this test
//! starts, kills and restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backend_redis::testing::{RedisFactory, RedisServer, delete_prefix};
use backend_redis::{RedisBackend, RedisConfig};
use redis::aio::MultiplexedConnection;
use session_core::testing::redis_url;
use session_core::{
    Commit, Delta, ExpiryPolicy, KeyRing, Loaded, RawJson, Session, SessionBackend, SessionData,
    SessionError, SessionId, TokenSigner,
};

/// Guards against hangs (never a timing assertion: the limit is far above any normal run).
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

fn v(x: impl serde::Serialize) -> RawJson {
    RawJson::from_value(&x).unwrap()
}

fn data(pairs: &[(&str, serde_json::Value)]) -> SessionData {
    pairs.iter().map(|(k, x)| ((*k).to_owned(), v(x))).collect()
}

fn delta_set(pairs: &[(&str, serde_json::Value)]) -> Delta {
    let mut d = Delta::default();
    for (k, x) in pairs {
        d.set(k, v(x));
    }
    d
}

fn policy(idle_ms: u64, absolute_ms: u64, touch: f64) -> ExpiryPolicy {
    ExpiryPolicy::new(
        Duration::from_millis(idle_ms),
        Duration::from_millis(absolute_ms),
    )
    .unwrap()
    .with_touch_fraction(touch)
    .unwrap()
}

async fn raw(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn load(b: &RedisBackend, token: &str) -> Loaded {
    b.load(token).await.unwrap().expect("session should exist")
}

/// A new one-key session, loaded, then one field of its hash set behind the backend's back.
/// Returns the token, the loaded session, its Redis key and the raw connection used.
async fn with_raw_field(
    b: &RedisBackend,
    field: &str,
    value: impl redis::ToRedisArgs,
) -> (String, Loaded, String, MultiplexedConnection) {
    let token = b
        .create(data(&[("k", serde_json::json!(1))]))
        .await
        .unwrap()
        .token;
    let l = load(b, &token).await;
    let key = b.key_of(&l.record.id);
    let mut con = raw(&redis_url()).await;
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg(field)
        .arg(value)
        .query_async(&mut con)
        .await
        .unwrap();
    (token, l, key, con)
}

/// Deletes the factory's keys when the test ends, even on failure.
struct Cleanup(RedisConfig);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let config = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(delete_prefix(&config))
        })
        .join();
    }
}

fn shared() -> (RedisFactory, Cleanup) {
    let f = RedisFactory::single(redis_url());
    let c = Cleanup(f.config().clone());
    (f, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_different_keys_lose_nothing() {
    let (f, _cleanup) = shared();
    let p = ExpiryPolicy::default();
    let nodes = [
        Arc::new(f.backend(p).await.unwrap()),
        Arc::new(f.backend(p).await.unwrap()),
    ];
    let token = nodes[0]
        .create(data(&[("base", serde_json::json!(0))]))
        .await
        .unwrap()
        .token;
    const WRITERS: usize = 16;
    const ROUNDS: usize = 10;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let node = nodes[w % 2].clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            for r in 0..ROUNDS {
                // Every writer loads, then writes its own key: a whole-record store would
                // overwrite the others' keys with its stale snapshot.
                let l = load(&node, &token).await;
                node.save(
                    &l,
                    &delta_set(&[(&format!("w{w}r{r}"), serde_json::json!(r))]),
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        within("writers", t).await.unwrap();
    }
    let l = load(&nodes[1], &token).await;
    assert_eq!(l.record.data.len(), 1 + WRITERS * ROUNDS);
    for w in 0..WRITERS {
        for r in 0..ROUNDS {
            assert_eq!(
                l.record.data.get_as::<usize>(&format!("w{w}r{r}")).unwrap(),
                Some(r)
            );
        }
    }
    assert_eq!(l.record.version, 1 + (WRITERS * ROUNDS) as u64);
}

/// What Redis is left with when a request saves to a session whose hash was evicted (its
/// `PEXPIREAT` passed) while the request was in flight (that every such save is `Gone` on every
/// backend is the suite's `save_after_expiry_is_gone`): no script recreates a hash, and each
/// attempt is counted in `gone_on_write`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_to_an_evicted_hash_recreates_nothing() {
    let (f, _cleanup) = shared();
    let b = f.backend(ExpiryPolicy::default()).await.unwrap();
    let token = b
        .create(data(&[("cart", serde_json::json!([1]))]))
        .await
        .unwrap()
        .token;
    let loaded = load(&b, &token).await;
    let key = b.key_of(&loaded.record.id);
    // Evicted as its deadline passes.
    let mut con = raw(&redis_url()).await;
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut con)
        .await
        .unwrap();
    let err = b
        .save(&loaded, &delta_set(&[("cart", serde_json::json!([1, 2]))]))
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::Gone), "{err:?}");
    let touch = b.save(&loaded, &Delta::default()).await.unwrap_err();
    assert!(matches!(touch, SessionError::Gone), "a touch: {touch:?}");
    let cycle = b.cycle_id(&loaded, &Delta::default()).await.unwrap_err();
    assert!(matches!(cycle, SessionError::Gone), "a cycle: {cycle:?}");
    let exists: u64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(exists, 0, "the expired session was recreated");
    let gone = b
        .counters()
        .extra
        .iter()
        .find(|m| m.name == "gone_on_write")
        .unwrap()
        .value;
    assert_eq!(gone, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_hash_not_yet_evicted_is_never_returned() {
    let (f, _cleanup) = shared();
    let b = f.backend(ExpiryPolicy::default()).await.unwrap();
    // Move the idle deadline into the past but keep the key alive in Redis (no TTL at all).
    let (token, l, key, mut con) = with_raw_field(&b, "m:i", 1_000).await;
    let _: () = redis::cmd("PERSIST")
        .arg(&key)
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(b.load(&token).await.unwrap().is_none());
    assert!(matches!(
        b.save(&l, &delta_set(&[("k", serde_json::json!(2))])).await,
        Err(SessionError::Gone)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_marked_as_moving_by_a_cluster_cycle_does_not_load() {
    let (f, _cleanup) = shared();
    let b = f.backend(ExpiryPolicy::default()).await.unwrap();
    let (token, l, _, _) = with_raw_field(&b, "m:moved", "new-id").await;
    assert!(b.load(&token).await.unwrap().is_none());
    assert!(matches!(
        b.save(&l, &delta_set(&[("k", serde_json::json!(2))])).await,
        Err(SessionError::Gone)
    ));
    // A data key that merely looks like the mark is data, not the mark.
    let token = b
        .create(data(&[("m:moved", serde_json::json!(true))]))
        .await
        .unwrap()
        .token;
    let l = load(&b, &token).await;
    assert_eq!(l.record.data.get_as::<bool>("m:moved").unwrap(), Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hash_per_session_with_separate_namespaces_and_a_ttl() {
    let (f, _cleanup) = shared();
    let idle = 60_000;
    let b = f.backend(policy(idle, 600_000, 0.0)).await.unwrap();
    let token = b
        .create(data(&[
            ("a", serde_json::json!(1)),
            ("", serde_json::json!("empty key")),
            ("m:v", serde_json::json!("looks like metadata")),
        ]))
        .await
        .unwrap()
        .token;
    let l = load(&b, &token).await;
    let key = b.key_of(&l.record.id);
    assert_eq!(
        key,
        format!("{}{{{}}}", f.config().key_prefix, l.record.id),
        "the id is the key's hash tag"
    );
    let mut con = raw(&redis_url()).await;
    let mut fields: Vec<String> = redis::cmd("HKEYS")
        .arg(&key)
        .query_async(&mut con)
        .await
        .unwrap();
    fields.sort();
    assert_eq!(
        fields,
        [
            "d:", "d:a", "d:m:v", "m:a", "m:c", "m:i", "m:v", "m:w", "m:x"
        ]
    );
    assert_eq!(l.record.version, 1);
    assert_eq!(
        l.record.data.get_as::<String>("m:v").unwrap().as_deref(),
        Some("looks like metadata")
    );
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(pttl > 0 && pttl <= idle as i64, "PTTL {pttl}");

    // A delta touches only its keys and bumps the version.
    let mut d = Delta::default();
    d.remove("a");
    d.set("b", v(2));
    b.save(&l, &d).await.unwrap();
    let a_left: bool = redis::cmd("HEXISTS")
        .arg(&key)
        .arg("d:a")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(!a_left, "a removed key stayed in the hash");
    let l2 = load(&b, &token).await;
    assert_eq!(l2.record.version, 2);
    assert_eq!(
        l2.record.data.keys().collect::<Vec<_>>(),
        vec!["", "b", "m:v"]
    );

    // A touch moves the idle deadline but not the version.
    tokio::time::sleep(Duration::from_millis(20)).await;
    b.save(&l2, &Delta::default()).await.unwrap();
    let l3 = load(&b, &token).await;
    assert_eq!(l3.record.version, 2, "a touch is not a change");
    assert!(l3.record.idle_deadline > l2.record.idle_deadline);
    assert!(l3.record.last_access > l2.record.last_access);
    assert_eq!(l3.record.created_at, l.record.created_at);
    assert_eq!(l3.record.absolute_deadline, l.record.absolute_deadline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_is_one_round_trip_and_bad_tokens_none() {
    let (f, _cleanup) = shared();
    let b = f.backend(ExpiryPolicy::default()).await.unwrap();
    // Warm the script cache so NOSCRIPT fallbacks (another round trip) do not count here.
    let warm = b
        .create(data(&[("w", serde_json::json!(0))]))
        .await
        .unwrap();
    let wl = load(&b, &warm.token).await;
    b.save(&wl, &delta_set(&[("w", serde_json::json!(1))]))
        .await
        .unwrap();
    let wl = load(&b, &warm.token).await;
    b.cycle_id(&wl, &Delta::default()).await.unwrap();

    let n = |b: &RedisBackend| b.counters().network_calls;
    let start = n(&b);
    let token = b
        .create(data(&[("k", serde_json::json!(1))]))
        .await
        .unwrap()
        .token;
    assert_eq!(n(&b) - start, 1, "create");
    let l = load(&b, &token).await;
    assert_eq!(n(&b) - start, 2, "load");
    b.save(&l, &delta_set(&[("k", serde_json::json!(2))]))
        .await
        .unwrap();
    assert_eq!(n(&b) - start, 3, "save");
    let new = b.cycle_id(&l, &Delta::default()).await.unwrap();
    assert_eq!(
        n(&b) - start,
        4,
        "cycle on a single server is one atomic script"
    );
    let l = load(&b, &new.token).await;
    b.destroy(&l).await.unwrap();
    assert_eq!(n(&b) - start, 6, "destroy");
    assert_eq!(b.counters().db_calls, 0, "Redis is a cache server: D = 0");

    // Tokens signed with another key, or carrying routing data (an instant-copy token signed
    // with a shared secret), are rejected before any I/O.
    let before = n(&b);
    let foreign = TokenSigner::new(&KeyRing::generate())
        .sign(&SessionId::random(), &[])
        .unwrap();
    let routed = TokenSigner::new(f.keys())
        .sign(&l.record.id, &[1, 2])
        .unwrap();
    for t in [foreign, routed, "garbage".to_owned()] {
        assert!(matches!(
            b.load(&t).await,
            Err(SessionError::InvalidToken(_))
        ));
    }
    assert_eq!(n(&b), before);
    assert_eq!(b.counters().invalid_tokens, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_hash_is_deleted_once_and_loads_as_none() {
    let (f, _cleanup) = shared();
    let b = f.backend(ExpiryPolicy::default()).await.unwrap();
    let (token, _, key, mut con) = with_raw_field(&b, "d:k", "{not json").await;
    assert!(b.load(&token).await.unwrap().is_none());
    let exists: u64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(exists, 0, "the unreadable session was not deleted");
    assert!(b.load(&token).await.unwrap().is_none());
    let deleted = b
        .counters()
        .extra
        .iter()
        .find(|m| m.name == "corrupt_sessions_deleted")
        .unwrap()
        .value;
    assert_eq!(deleted, 1.0, "deleted (and logged) exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_racing_a_cycle_lands_in_the_new_session_or_is_gone() {
    let (f, _cleanup) = shared();
    let p = ExpiryPolicy::default();
    let a = Arc::new(f.backend(p).await.unwrap());
    let b = Arc::new(f.backend(p).await.unwrap());
    for round in 0..20 {
        let token = a
            .create(data(&[("user", serde_json::json!("u"))]))
            .await
            .unwrap()
            .token;
        let la = load(&a, &token).await;
        let lb = load(&b, &token).await;
        let login = delta_set(&[("login", serde_json::json!(round))]);
        let cart = delta_set(&[("cart", serde_json::json!(round))]);
        let (cycled, saved) = tokio::join!(a.cycle_id(&la, &login), b.save(&lb, &cart));
        let new = cycled.unwrap().token;
        let after = load(&a, &new).await;
        assert_eq!(
            after.record.data.get_as::<i32>("login").unwrap(),
            Some(round)
        );
        match saved {
            Ok(_) => assert_eq!(
                after.record.data.get_as::<i32>("cart").unwrap(),
                Some(round),
                "round {round}: an acknowledged save is missing after the cycle"
            ),
            Err(SessionError::Gone) => {
                assert_eq!(after.record.data.get_as::<i32>("cart").unwrap(), None)
            }
            Err(e) => panic!("round {round}: {e}"),
        }
        assert!(b.load(&token).await.unwrap().is_none(), "old token loads");
    }
}

/// Kills one connection by id (only our own: the server is shared).
async fn kill(id: i64) {
    let mut con = raw(&redis_url()).await;
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(killed, 1, "connection {id} was not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_is_reopened_and_requests_succeed() {
    let (f, _cleanup) = shared();
    let b = f.backend(ExpiryPolicy::default()).await.unwrap();
    let token = b
        .create(data(&[("k", serde_json::json!(1))]))
        .await
        .unwrap()
        .token;
    for round in 0..3 {
        let id = b.connection_id().await.unwrap().expect("single server");
        kill(id).await;
        if round == 1 {
            // Let the client notice the closed socket before the next request this time.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for i in 0..5 {
            let l = within("load after kill", b.load(&token))
                .await
                .unwrap_or_else(|e| panic!("round {round} request {i}: {e}"))
                .expect("session survived");
            within(
                "save after kill",
                b.save(&l, &delta_set(&[("k", serde_json::json!(i))])),
            )
            .await
            .unwrap();
        }
        let new_id = b.connection_id().await.unwrap().unwrap();
        assert_ne!(
            new_id, id,
            "round {round}: the connection was not re-opened"
        );
    }
    let retries = b
        .counters()
        .extra
        .iter()
        .find(|m| m.name == "connection_retries")
        .unwrap()
        .value;
    assert!(retries >= 1.0, "no request met the dropped connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_is_unavailable_quickly_at_connect() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = RedisConfig::single(format!("redis://127.0.0.1:{port}"));
    let r = within(
        "connect to a closed port",
        RedisBackend::connect(config, ExpiryPolicy::default(), &KeyRing::generate()),
    )
    .await;
    match r {
        Err(SessionError::Unavailable { context, .. }) => {
            assert!(context.contains(&port.to_string()), "{context}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let bad = RedisConfig::single("redis://127.0.0.1:1").with_key_prefix("x{y}");
    match RedisBackend::connect(bad, ExpiryPolicy::default(), &KeyRing::generate()).await {
        Err(SessionError::Backend { context, .. }) => {
            assert!(context.contains("key_prefix"), "{context}")
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_unavailable_then_recovers() {
    let mut server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let keys = KeyRing::generate();
    let b: Arc<dyn SessionBackend> = Arc::new(
        RedisBackend::connect(
            RedisConfig::single(server.url()),
            ExpiryPolicy::default(),
            &keys,
        )
        .await
        .unwrap(),
    );
    let token = b
        .create(data(&[("k", serde_json::json!(1))]))
        .await
        .unwrap()
        .token;
    let loaded = b.load(&token).await.unwrap().unwrap();
    let script_loads = |b: &Arc<dyn SessionBackend>| {
        b.counters()
            .extra
            .iter()
            .find(|m| m.name == "script_loads")
            .unwrap()
            .value
    };
    let loads_before = script_loads(&b);
    // Create ran a script the fresh server did not have (loads are plain HGETALLs).
    assert!(loads_before >= 1.0, "a fresh server has no scripts cached");

    server.kill();
    for _ in 0..3 {
        let e = within("load while down", b.load(&token)).await.unwrap_err();
        assert!(matches!(e, SessionError::Unavailable { .. }), "{e:?}");
        let e = within(
            "save while down",
            b.save(&loaded, &delta_set(&[("k", serde_json::json!(2))])),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, SessionError::Unavailable { .. }), "{e:?}");
    }
    // A new session that cannot be saved gets no token (the layer sets no cookie).
    let s = Session::new(b.clone(), None);
    s.insert("cart", &[1, 2]).unwrap();
    match within("commit while down", s.commit()).await {
        Err(SessionError::Unavailable { .. }) => {}
        other => panic!("a new session was committed while Redis was down: {other:?}"),
    }

    tokio::task::block_in_place(|| server.restart()).unwrap();
    // The restarted server is empty (no persistence): the old session is gone, not an error.
    let mut recovered = false;
    for _ in 0..20 {
        match within("load after restart", b.load(&token)).await {
            Ok(None) => {
                recovered = true;
                break;
            }
            Ok(Some(_)) => panic!("a session survived a restart without persistence"),
            Err(e) => {
                assert!(matches!(e, SessionError::Unavailable { .. }), "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(recovered, "the backend never reconnected");
    // From now on every request succeeds, including script loads on the empty server.
    let s = Session::new(b.clone(), None);
    s.insert("cart", &[1, 2]).unwrap();
    let Commit::Issue { token, .. } = s.commit().await.unwrap() else {
        panic!("no token issued")
    };
    let s = Session::new(b.clone(), Some(token));
    assert_eq!(s.get::<Vec<u32>>("cart").await.unwrap(), Some(vec![1, 2]));
    assert!(
        script_loads(&b) > loads_before,
        "scripts were not re-sent after the restart"
    );
}

/// The shared cleanup deletes exactly the keys under its prefix: glob characters in the prefix
/// are literal, a sibling prefix is untouched, and the count says what went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_deletes_only_under_its_prefix() {
    use backend_redis::testing::{count_keys_under, delete_keys_under};
    let base = session_core::testing::unique_name("cleanup");
    let (star, sibling) = (format!("{base}*:"), format!("{base}x:"));
    let client = redis::Client::open(redis_url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    for k in [
        format!("{star}a"),
        format!("{star}b"),
        format!("{sibling}a"),
    ] {
        let () = redis::cmd("SET")
            .arg(&k)
            .arg(1)
            .query_async(&mut con)
            .await
            .unwrap();
    }
    assert_eq!(count_keys_under(&redis_url(), &star).await.unwrap(), 2);
    assert_eq!(delete_keys_under(&redis_url(), &star).await.unwrap(), 2);
    assert_eq!(count_keys_under(&redis_url(), &star).await.unwrap(), 0);
    assert_eq!(
        count_keys_under(&redis_url(), &sibling).await.unwrap(),
        1,
        "a sibling prefix was touched"
    );
    assert_eq!(delete_keys_under(&redis_url(), &sibling).await.unwrap(), 1);
    let e = count_keys_under("redis://user:hunter2@127.0.0.1:1", "x")
        .await
        .unwrap_err();
    assert!(!e.contains("hunter2"), "the password leaked: {e}");
}
