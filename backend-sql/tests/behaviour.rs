//! Behaviour beyond the shared suite, on both drivers: concurrent pools writing one session,
//! batched cleanup and its task, corrupt rows, value fidelity, D per operation, what a save to
//! an expired row counts and leaves, id cycling racing saves, migrations, tokens with routing
//! data. (Saves after expiry and key rotation themselves are the suite's
//! `save_after_expiry_is_gone` and `key_rotation`.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::sync::Arc;
use std::time::Duration;

use backend_sql::{SqlBackend, schema_sql};
use common::{Db, backend, create, exec, metric, policy, rows, scalar};
use serde_json::json;
use session_core::{
    Commit, Delta, ExpiryPolicy, KeyRing, RawJson, RawJsonStr, Session, SessionBackend,
    SessionError, TokenSigner,
};

/// Runs `scenario` on PostgreSQL and on SQLite.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::Db::pg();
                    super::$name(&db).await;
                    db.finish().await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::Db::sqlite();
                    super::$name(&db).await;
                    db.finish().await;
                }
            )*
        }
    };
}

both!(
    two_pools_writing_different_keys_lose_nothing,
    cleanup_deletes_only_expired_rows_in_batches,
    cleanup_task_runs_and_stops_on_shutdown,
    several_nodes_clean_up_at_once,
    corrupt_rows_are_removed_once,
    values_and_keys_round_trip_exactly,
    db_calls_per_operation,
    a_save_to_an_expired_row_is_counted_and_changes_no_row,
    cycling_while_saves_race_loses_no_acknowledged_write,
    nodes_starting_together_migrate_once,
    migrate_false_needs_the_table,
    a_signed_token_with_routing_data_costs_no_statement,
);

fn delta_set(pairs: &[(&str, serde_json::Value)]) -> Delta {
    let mut d = Delta::default();
    for (k, v) in pairs {
        d.set(k, RawJson::from_value(v).unwrap());
    }
    d
}

async fn two_pools_writing_different_keys_lose_nothing(db: &Db) {
    let keys = KeyRing::generate();
    let config = db.config("conc");
    let a = backend(config.clone(), ExpiryPolicy::default(), &keys).await;
    let b = backend(config, ExpiryPolicy::default(), &keys).await;
    let token = create(&a, &[("base", json!(0))]).await;
    const ROUNDS: usize = 25;
    const WRITERS: usize = 6;
    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let node = if w % 2 == 0 { a.clone() } else { b.clone() };
            let token = token.clone();
            tasks.push(tokio::spawn(async move {
                // Load, then write: every writer works from a snapshot that misses the others.
                let loaded = node.load(&token).await.unwrap().expect("session missing");
                let mut d = delta_set(&[(&format!("r{round}_w{w}"), json!(round))]);
                if round > 0 {
                    d.remove(&format!("r{}_w{w}", round - 1));
                }
                node.save(&loaded, &d).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    let l = b.load(&token).await.unwrap().unwrap();
    let mut expected: Vec<String> = (0..WRITERS)
        .map(|w| format!("r{}_w{w}", ROUNDS - 1))
        .collect();
    expected.push("base".into());
    expected.sort();
    assert_eq!(l.record.data.keys().collect::<Vec<_>>(), expected);
    assert_eq!(
        l.record.version,
        1 + (ROUNDS * WRITERS) as u64,
        "every delta bumped the version"
    );
}

async fn cleanup_deletes_only_expired_rows_in_batches(db: &Db) {
    let keys = KeyRing::generate();
    let mut config = db.config("clean");
    config.cleanup = false;
    config.cleanup_batch_size = 3;
    let short = backend(config.clone(), policy(100, 3_600_000), &keys).await;
    let long = backend(config.clone(), ExpiryPolicy::default(), &keys).await;
    let mut live = Vec::new();
    for i in 0..10 {
        create(&short, &[("i", json!(i))]).await;
    }
    for i in 0..4 {
        live.push(create(&long, &[("i", json!(i))]).await);
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(rows(&long).await, 14, "expired rows stay until cleaned");
    let before = long.counters();
    assert_eq!(long.cleanup_expired().await.unwrap(), 10);
    let after = long.counters();
    let batches =
        metric(&after, "cleanup_batches", None) - metric(&before, "cleanup_batches", None);
    assert_eq!(batches, 4.0, "10 rows in batches of 3: 3 + 3 + 3 + 1");
    assert_eq!(metric(&after, "cleanup_deleted_rows", None), 10.0);
    assert_eq!(rows(&long).await, 4);
    for t in &live {
        assert!(
            long.load(t).await.unwrap().is_some(),
            "a live session was cleaned up"
        );
    }
    assert_eq!(long.cleanup_expired().await.unwrap(), 0);

    // A run stops after cleanup_max_batches; the rest waits for the next run.
    config.cleanup_max_batches = 2;
    let capped = backend(config, policy(100, 3_600_000), &keys).await;
    for i in 0..10 {
        create(&capped, &[("i", json!(i))]).await;
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(capped.cleanup_expired().await.unwrap(), 6);
    assert_eq!(capped.cleanup_expired().await.unwrap(), 4);
    assert_eq!(rows(&capped).await, 4);
}

async fn several_nodes_clean_up_at_once(db: &Db) {
    let keys = KeyRing::generate();
    let mut config = db.config("multiclean");
    config.cleanup = false;
    config.cleanup_batch_size = 4;
    let writer = backend(config.clone(), policy(100, 3_600_000), &keys).await;
    let long = backend(config.clone(), ExpiryPolicy::default(), &keys).await;
    for i in 0..40 {
        create(&writer, &[("i", json!(i))]).await;
    }
    let live = create(&long, &[("keep", json!(true))]).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(backend(config.clone(), ExpiryPolicy::default(), &keys).await);
    }
    let runs: Vec<_> = nodes
        .iter()
        .map(|n| {
            let n = n.clone();
            tokio::spawn(async move { n.cleanup_expired().await })
        })
        .collect();
    let mut deleted = 0;
    for r in runs {
        deleted += r.await.unwrap().unwrap();
    }
    // Every expired row deleted exactly once between the nodes, nothing else touched.
    assert_eq!(deleted, 40);
    assert_eq!(rows(&writer).await, 1);
    assert!(long.load(&live).await.unwrap().is_some());
}

async fn cleanup_task_runs_and_stops_on_shutdown(db: &Db) {
    let keys = KeyRing::generate();
    let mut config = db.config("task");
    config.cleanup = false;
    let writer = backend(config.clone(), policy(50, 3_600_000), &keys).await;
    config.cleanup = true;
    config.cleanup_interval = Duration::from_millis(50);
    let cleaner = backend(config, ExpiryPolicy::default(), &keys).await;
    for i in 0..5 {
        create(&writer, &[("i", json!(i))]).await;
    }
    // The task deletes them on its own.
    let mut waited = 0;
    while rows(&writer).await > 0 {
        assert!(
            waited < 400,
            "the cleanup task never deleted the expired rows"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    assert!(metric(&cleaner.counters(), "cleanup_runs", None) >= 1.0);
    cleaner.shutdown().await;
    let runs = metric(&cleaner.counters(), "cleanup_runs", None);
    for i in 0..3 {
        create(&writer, &[("i", json!(i))]).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // ten intervals
    assert_eq!(
        rows(&writer).await,
        3,
        "a stopped cleanup task still deleted rows"
    );
    assert_eq!(metric(&cleaner.counters(), "cleanup_runs", None), runs);
    // After shutdown the backend's own pool is closed: a typed error, no panic.
    common::assert_unavailable(cleaner.cleanup_expired().await);
}

async fn corrupt_rows_are_removed_once(db: &Db) {
    let b = backend(
        db.config("corrupt"),
        ExpiryPolicy::default(),
        &KeyRing::generate(),
    )
    .await;
    let token = create(&b, &[("user", json!("mallory"))]).await;
    let keep = create(&b, &[("user", json!("alice"))]).await;
    let id = b.load(&token).await.unwrap().unwrap().record.id;
    let hex: String = id.as_bytes().iter().map(|x| format!("{x:02x}")).collect();
    let (set, id_literal) = match db {
        Db::Pg(_) => ("data = '[1, 2]'::jsonb", format!("'\\x{hex}'::bytea")),
        Db::Sqlite(_) => ("data = '{\"user\": not json'", format!("x'{hex}'")),
    };
    let changed = exec(
        &b,
        &format!("UPDATE {} SET {set} WHERE id = {id_literal}", b.table()),
    )
    .await;
    assert_eq!(changed, 1);
    assert!(
        b.load(&token).await.unwrap().is_none(),
        "a corrupt row loaded"
    );
    let c = b.counters();
    assert_eq!(metric(&c, "corrupt_rows_removed", None), 1.0);
    assert_eq!(
        metric(&c, "db_calls_by_operation", Some("corrupt_removal")),
        1.0
    );
    assert_eq!(rows(&b).await, 1, "the corrupt row was not deleted");
    // Gone for good: later requests neither log nor delete again.
    assert!(b.load(&token).await.unwrap().is_none());
    let c = b.counters();
    assert_eq!(metric(&c, "corrupt_rows_removed", None), 1.0);
    assert_eq!(
        metric(&c, "db_calls_by_operation", Some("corrupt_removal")),
        1.0
    );
    assert!(
        b.load(&keep).await.unwrap().is_some(),
        "a healthy row was touched"
    );
}

async fn values_and_keys_round_trip_exactly(db: &Db) {
    let b = backend(
        db.config("fidelity"),
        ExpiryPolicy::default(),
        &KeyRing::generate(),
    )
    .await;
    let raw = |t: &str| RawJson::from_json(t).unwrap();
    let cases: Vec<(&str, &str)> = vec![
        ("", "true"),
        ("a.b", "false"),
        ("\"quoted\"", "null"),
        ("$.x[0]", "18446744073709551615"),
        ("back\\slash", "0.30000000000000004"),
        ("ключ 🔑", "\"строка \\\" \\\\ \\n\""),
        (
            "obj",
            "{\"nested\":{\"x\":null,\"y\":[1,\"two\",{\"3\":[]}]}}",
        ),
        ("neg", "-12"),
    ];
    let s = Session::new(b.clone() as Arc<dyn SessionBackend>, None);
    for (k, v) in &cases {
        s.insert_raw(k, raw(v));
    }
    let Commit::Issue { token, .. } = s.commit().await.unwrap() else {
        panic!()
    };
    let l = b.load(&token).await.unwrap().unwrap();
    for (k, v) in &cases {
        assert_eq!(
            l.record.data.get(k).map(RawJsonStr::as_str),
            Some(*v),
            "key {k:?}"
        );
    }
    // A delta replaces whole values (no merging into objects), stores nulls, removes odd keys.
    let mut d = Delta::default();
    d.set("obj", raw("{\"other\":1}"));
    d.set("a.b", raw("null"));
    d.remove("\"quoted\"");
    d.remove("");
    b.save(&l, &d).await.unwrap();
    let l = b.load(&token).await.unwrap().unwrap();
    let data = &l.record.data;
    assert_eq!(data.get("obj").unwrap().as_str(), "{\"other\":1}");
    assert_eq!(data.get("a.b").unwrap().as_str(), "null");
    assert!(!data.contains_key("\"quoted\"") && !data.contains_key(""));
    assert_eq!(data.get("$.x[0]").unwrap().as_str(), "18446744073709551615");
    assert_eq!(
        data.get("back\\slash").unwrap().as_str(),
        "0.30000000000000004"
    );
    assert_eq!(data.len(), cases.len() - 2);
}

async fn db_calls_per_operation(db: &Db) {
    let b = backend(
        db.config("dcalls"),
        policy(60_000, 600_000),
        &KeyRing::generate(),
    )
    .await;
    let d = |b: &SqlBackend| b.counters().db_calls;
    let start = d(&b);
    let token = create(&b, &[("k", json!(1))]).await;
    assert_eq!(d(&b) - start, 1, "create");
    let t0 = d(&b);
    let l = b.load(&token).await.unwrap().unwrap();
    assert_eq!(d(&b) - t0, 1, "load");
    let t0 = d(&b);
    b.save(&l, &delta_set(&[("k", json!(2))])).await.unwrap();
    assert_eq!(d(&b) - t0, 1, "save");
    let t0 = d(&b);
    b.save(&l, &Delta::default()).await.unwrap();
    assert_eq!(d(&b) - t0, 1, "touch");
    let t0 = d(&b);
    let new = b.cycle_id(&l, &Delta::default()).await.unwrap().token;
    assert_eq!(
        d(&b) - t0,
        4,
        "cycle: BEGIN, INSERT … SELECT, DELETE, COMMIT"
    );
    let t0 = d(&b);
    assert!(
        b.load(&token).await.unwrap().is_none(),
        "old id survived the cycle"
    );
    let l = b.load(&new).await.unwrap().unwrap();
    b.destroy(&l).await.unwrap();
    assert_eq!(d(&b) - t0, 3, "two loads and a destroy");
    // A read that is not due for a touch writes nothing; a forged token reads nothing.
    let token = create(&b, &[("k", json!(1))]).await;
    let t0 = d(&b);
    let s = Session::new(b.clone() as Arc<dyn SessionBackend>, Some(token.clone()));
    assert_eq!(s.get::<u64>("k").await.unwrap(), Some(1));
    assert_eq!(s.commit().await.unwrap(), Commit::Unchanged);
    assert_eq!(d(&b) - t0, 1, "a read costs exactly one statement");
    let t0 = d(&b);
    let mut forged = token.into_bytes();
    forged[10] = if forged[10] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert!(b.load(&forged).await.is_err());
    assert_eq!(d(&b) - t0, 0);
    let c = b.counters();
    assert_eq!(metric(&c, "db_calls_by_operation", Some("cycle")), 4.0);
    assert_eq!(metric(&c, "db_calls_by_operation", Some("touch")), 1.0);
}

/// What SQL counts and leaves in the table when a request saves to a row that expired while it
/// was in flight (that every such save is `Gone` on every backend is the suite's
/// `save_after_expiry_is_gone`): each attempt is counted in `gone_on_save`, and no statement
/// recreates or revives the row.
async fn a_save_to_an_expired_row_is_counted_and_changes_no_row(db: &Db) {
    let mut config = db.config("gone");
    config.cleanup = false;
    let b = backend(config, ExpiryPolicy::default(), &KeyRing::generate()).await;
    let token = create(&b, &[("k", json!(1))]).await;
    let l = b.load(&token).await.unwrap().unwrap();
    // The deadline passes while the request is in flight.
    exec(&b, &format!("UPDATE {} SET expires_at = 1", b.table())).await;
    assert!(matches!(
        b.save(&l, &delta_set(&[("k", json!(2))])).await,
        Err(SessionError::Gone)
    ));
    assert!(matches!(
        b.save(&l, &Delta::default()).await,
        Err(SessionError::Gone)
    ));
    assert!(matches!(
        b.cycle_id(&l, &Delta::default()).await,
        Err(SessionError::Gone)
    ));
    assert_eq!(metric(&b.counters(), "gone_on_save", None), 3.0);
    assert_eq!(rows(&b).await, 1, "nothing was recreated");
    assert_eq!(
        scalar(&b, &format!("SELECT max(expires_at) FROM {}", b.table())).await,
        1,
        "the expired row was revived"
    );
}

async fn cycling_while_saves_race_loses_no_acknowledged_write(db: &Db) {
    let keys = KeyRing::generate();
    let config = db.config("cyclerace");
    let a = backend(config.clone(), ExpiryPolicy::default(), &keys).await;
    let b = backend(config, ExpiryPolicy::default(), &keys).await;
    for round in 0..5 {
        let token = create(&a, &[("base", json!(round))]).await;
        let loaded = a.load(&token).await.unwrap().unwrap();
        let mut savers = Vec::new();
        for i in 0..8 {
            let node = if i % 2 == 0 { a.clone() } else { b.clone() };
            let loaded = loaded.clone();
            savers.push(tokio::spawn(async move {
                let key = format!("k{i}");
                let r = node.save(&loaded, &delta_set(&[(&key, json!(i))])).await;
                (key, r)
            }));
        }
        let cycler = {
            let b = b.clone();
            let loaded = loaded.clone();
            tokio::spawn(async move {
                b.cycle_id(&loaded, &delta_set(&[("user", json!("u"))]))
                    .await
            })
        };
        let new = cycler.await.unwrap().unwrap().token;
        let l = a.load(&new).await.unwrap().expect("cycled session missing");
        for s in savers {
            let (key, r) = s.await.unwrap();
            match r {
                Ok(_) => assert!(
                    l.record.data.contains_key(&key),
                    "round {round}: acknowledged write to {key} lost by the cycle"
                ),
                Err(SessionError::Gone) => {}
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert!(
            a.load(&token).await.unwrap().is_none(),
            "old id alive after cycle"
        );
        assert_eq!(
            l.record.data.get_as::<String>("user").unwrap().as_deref(),
            Some("u")
        );
    }
}

async fn nodes_starting_together_migrate_once(db: &Db) {
    let keys = KeyRing::generate();
    let config = db.config("startup");
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let (config, keys) = (config.clone(), keys.clone());
            tokio::spawn(async move {
                SqlBackend::connect(config, ExpiryPolicy::default(), &keys).await
            })
        })
        .collect();
    let mut nodes = Vec::new();
    for s in starts {
        nodes.push(Arc::new(s.await.unwrap().unwrap()));
    }
    let migrations_table = match db {
        Db::Pg(s) => format!("\"{}\".\"startup_migrations\"", s.name()),
        Db::Sqlite(_) => "\"startup_migrations\"".to_string(),
    };
    assert_eq!(
        scalar(
            &nodes[0],
            &format!("SELECT count(*) FROM {migrations_table}")
        )
        .await,
        1
    );
    let token = create(&nodes[0], &[("k", json!(1))]).await;
    assert!(nodes[3].load(&token).await.unwrap().is_some());
    // A restart finds the schema in place and keeps the data.
    let again = backend(config, ExpiryPolicy::default(), &keys).await;
    assert!(again.load(&token).await.unwrap().is_some());
}

async fn migrate_false_needs_the_table(db: &Db) {
    let keys = KeyRing::generate();
    let mut config = db.config("manual");
    config.migrate = false;
    match SqlBackend::connect(config.clone(), ExpiryPolicy::default(), &keys).await {
        Err(SessionError::Backend { context, .. }) => {
            assert!(context.contains("schema_sql"), "{context}")
        }
        other => panic!("expected a schema error, got {other:?}"),
    }
    // An operator applies the DDL by hand; then the backend works without migrating.
    let helper = backend(db.config("helper"), ExpiryPolicy::default(), &keys).await;
    let ddl = schema_sql(&config).unwrap();
    match helper.pool() {
        backend_sql::SqlPool::Postgres(p) => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
                .execute(&p)
                .await
                .unwrap();
        }
        backend_sql::SqlPool::Sqlite(_) => {
            // SQLite: the manual table has its own database file.
            let pool = sqlx::SqlitePool::connect(&format!("{}?mode=rwc", config.url))
                .await
                .unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        _ => unreachable!(),
    }
    let b = backend(config, ExpiryPolicy::default(), &keys).await;
    let token = create(&b, &[("k", json!(1))]).await;
    assert!(b.load(&token).await.unwrap().is_some());
}

/// A token signed with the backend's own key but carrying routing data (another scheme's token)
/// is refused before any statement. (Tokens signed with a retired or unknown key are the
/// suite's `key_rotation`.)
async fn a_signed_token_with_routing_data_costs_no_statement(db: &Db) {
    let keys = KeyRing::generate();
    let b = backend(db.config("routing"), ExpiryPolicy::default(), &keys).await;
    let token = create(&b, &[("user", json!("ann"))]).await;
    let id = b.load(&token).await.unwrap().unwrap().record.id;
    let foreign = TokenSigner::new(&keys).sign(&id, &[1]).unwrap();
    let d0 = b.counters().db_calls;
    assert!(matches!(
        b.load(&foreign).await,
        Err(SessionError::InvalidToken(_))
    ));
    assert_eq!(b.counters().db_calls, d0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_session_settings_come_from_the_config() {
    let db = Db::pg();
    let mut config = db.config("settings");
    config.statement_timeout = Duration::from_millis(1500);
    config.synchronous_commit = false;
    config.application_name = "session-sync settings test".into();
    let b = backend(config, ExpiryPolicy::default(), &KeyRing::generate()).await;
    let backend_sql::SqlPool::Postgres(pool) = b.pool() else {
        panic!("not postgres")
    };
    let show = |name: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!("SHOW {name}")))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(show("statement_timeout").await, "1500ms");
    assert_eq!(show("idle_in_transaction_session_timeout").await, "3s");
    assert_eq!(show("synchronous_commit").await, "off");
    assert_eq!(show("application_name").await, "session-sync settings test");
    // The table and its expiry index exist where the config says.
    let (schema, table) = match &db {
        Db::Pg(s) => (s.name().to_owned(), "settings"),
        Db::Sqlite(_) => unreachable!(),
    };
    let indexed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 \
         AND indexdef LIKE '%(expires_at)%'",
    )
    .bind(&schema)
    .bind(table)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(indexed, 1);
    b.shutdown().await;
    db.finish().await;
}

/// The shared schema cleanup refuses names that are not plain identifiers and never shows the
/// URL's password in its errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_cleanup_refuses_odd_names_and_redacts_the_password() {
    use backend_sql::testing::{create_schema, drop_schema};
    let url = session_core::testing::database_url();
    let e = drop_schema(&url, "public\" CASCADE; --").await.unwrap_err();
    assert!(e.contains("schema"), "{e}");
    let e = drop_schema("postgres://app:hunter2@127.0.0.1:1/x", "s1")
        .await
        .unwrap_err();
    assert!(!e.contains("hunter2"), "the password leaked: {e}");
    let name = session_core::testing::unique_name("cleanup");
    create_schema(&url, &name).await.unwrap();
    drop_schema(&url, &name).await.unwrap();
    drop_schema(&url, &name).await.unwrap(); // dropping what is gone is fine
}
