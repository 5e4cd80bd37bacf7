//! `bench table1` end to end in quick mode: every scheme as a real 2-node cluster of real processes
//! on the real PostgreSQL and Redis, the scaling runs at 2 and 4 nodes, the table, the JSON and
//! the charts; plus the skip path when a service is unreachable.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use bench::table1::{self as compare, Scheme, Table1Options};
use serde_json::Value;
use session_core::testing::{database_url, redis_url};

/// The demo-app binary the clusters run: next to this test's profile directory
/// (`target/<profile>/demo-app`), built there first when a `cargo test -p bench` did not.
fn binary() -> &'static Path {
    static DEMO: OnceLock<PathBuf> = OnceLock::new();
    DEMO.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap();
        let demo = profile_dir.join("demo-app");
        if !demo.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = std::process::Command::new(cargo);
            build.args(["build", "-p", "demo-app", "--bin", "demo-app"]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            let status = build.status().unwrap();
            assert!(status.success(), "building demo-app failed: {status}");
        }
        demo
    })
}

async fn schema_exists(name: &str) -> bool {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    n > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_compare_end_to_end() {
    let mut opts = Table1Options::quick();
    opts.database_url = database_url();
    opts.redis_url = redis_url();
    let report = compare::run(binary(), &opts, false).await.unwrap();
    let markdown = report.markdown();
    println!("{markdown}");

    // A measured row per scheme: this test requires all six (the services are up here).
    assert_eq!(report.schemes.len(), Scheme::ALL.len());
    for (row, scheme) in report.schemes.iter().zip(Scheme::ALL) {
        assert_eq!(row.scheme, scheme);
        assert!(
            row.skipped.is_none(),
            "{scheme} was skipped: {:?}",
            row.skipped
        );
        let m = row.measured.as_ref().unwrap();
        assert_eq!(m.errors.total, 0, "{scheme}: {:?}", m.errors);
        assert_eq!(m.requests, 120, "{scheme}: no re-login, exactly R requests");
        assert_eq!(m.nodes, 2);
        assert_eq!(m.latency.count, 120);
        assert_eq!(m.login_latency.count, 4, "{scheme}: every user logged in");
        assert!(m.latency.p50_ms > 0.0 && m.latency.p99_ms >= m.latency.p50_ms);
        assert!(m.throughput_rps > 0.0);
        assert!(
            m.writes > 0 && m.writes < m.requests,
            "{scheme}: a mixed workload"
        );
        assert!(
            m.client_bytes_mean > 20.0,
            "{scheme}: every request carried a token"
        );
        assert_eq!(
            m.counter_deltas.get("session_invalid_tokens_total"),
            Some(&0.0),
            "{scheme}: a token was rejected"
        );
        let line = markdown
            .lines()
            .find(|l| l.starts_with(&format!("| {} |", scheme.label())))
            .unwrap_or_else(|| panic!("no table row for {scheme}"));
        assert!(line.contains(scheme.lives()), "{line}");
        // Every workload request went through a node's session layer, as a read or a write.
        let (r, w) = (&m.reads, &m.writes_stats);
        assert_eq!(r.layer_requests + w.layer_requests, 120.0, "{scheme}");
        assert!(w.layer_requests > 0.0 && r.layer_requests > 0.0, "{scheme}");
        assert_eq!(r.latency.count + w.latency.count, 120, "{scheme}");
        // Every request sent its token; only writes get a new one back.
        assert!(
            r.client_bytes_up > 40.0 && w.client_bytes_up > 40.0,
            "{scheme}"
        );
        assert!(
            w.client_bytes_down > 40.0,
            "{scheme}: writes re-issue the token"
        );
        let wire = m.backend_wire.as_ref().unwrap_or_else(|| {
            panic!(
                "{scheme}: node bytes not measured: {:?}",
                m.backend_wire_error
            )
        });
        // What the protocol implies, per read and per write.
        match scheme {
            Scheme::Cookie => {
                assert_eq!((m.n_per_request, m.d_per_request), (0.0, 0.0));
                assert_eq!((r.n_per_request, r.d_per_request), (0.0, 0.0));
                assert_eq!((w.n_per_request, w.d_per_request), (0.0, 0.0));
                assert!(m.replication.is_none());
                assert_eq!(wire.tcp_bytes, 0, "the cookie talks to nothing");
                assert_eq!(r.client_bytes_down, 0.0, "a cookie read re-seals nothing");
            }
            Scheme::Sql => {
                assert_eq!(m.n_per_request, 0.0);
                assert_eq!(r.d_per_request, 1.0, "a read is one load");
                assert_eq!(w.d_per_request, 2.0, "a write is a load and a save");
                assert!(wire.tcp_bytes > 0);
            }
            Scheme::Redis => {
                assert_eq!(m.d_per_request, 0.0);
                assert_eq!(r.n_per_request, 1.0, "a read is one round trip");
                assert_eq!(w.n_per_request, 2.0, "a write is a load and a save");
                assert_eq!(m.n_per_write_total, 2.0);
                assert!(wire.tcp_bytes > 0);
            }
            Scheme::InstantCopyAll | Scheme::InstantCopyK1 | Scheme::InstantCopyK1Near => {
                assert_eq!(m.d_per_request, 0.0);
                assert!(m.n_per_request <= 1.0, "N {}", m.n_per_request);
                let rep = m.replication.as_ref().unwrap();
                // Two nodes: each write is queued for the one other node; coalescing can only
                // lower what is sent.
                if scheme == Scheme::InstantCopyAll {
                    assert_eq!(rep.queued_per_write, 1.0, "{rep:?}");
                }
                assert!(
                    rep.messages_per_write > 0.0 && rep.messages_per_write <= rep.queued_per_write,
                    "{scheme}: {rep:?}"
                );
                assert!(
                    m.n_per_write_total >= rep.batches_per_write,
                    "N per write includes the replication round trips"
                );
                assert!(wire.tcp_bytes > 0, "pushes cross the wire");
            }
        }
    }
    // The cookie carries the whole session: far more than an id.
    let bytes = |s: Scheme| {
        report.schemes[Scheme::ALL.iter().position(|x| *x == s).unwrap()]
            .measured
            .as_ref()
            .unwrap()
            .client_bytes_mean
    };
    assert!(bytes(Scheme::Cookie) > bytes(Scheme::Redis) * 1.5);

    // The shared services hold nothing of this run any more.
    let row = |s: Scheme| &report.schemes[Scheme::ALL.iter().position(|x| *x == s).unwrap()];
    let sql = row(Scheme::Sql);
    let schema = sql.isolation.as_deref().unwrap();
    assert!(!schema_exists(schema).await, "schema {schema} left behind");
    assert!(sql.cleanup.as_deref().unwrap().starts_with("dropped"));
    let redis = row(Scheme::Redis);
    let prefix = redis.isolation.as_deref().unwrap();
    assert_eq!(
        backend_redis::testing::count_keys_under(&redis_url(), prefix)
            .await
            .unwrap(),
        0,
        "keys under {prefix} left behind"
    );
    assert!(redis.cleanup.as_deref().unwrap().starts_with("deleted"));

    // Scaling: all and k=1 at 2 and 4 nodes; at 4 nodes "all" copies each write to 3 peers,
    // one backup to at most 2 (owner and backup when a third node takes the write).
    let point = |nodes: usize, repl: &str| {
        report
            .scaling
            .iter()
            .find(|s| s.nodes == nodes && s.replication == repl)
            .unwrap_or_else(|| panic!("no scaling point {nodes} {repl}"))
    };
    assert_eq!(report.scaling.len(), 4);
    for s in &report.scaling {
        assert_eq!(s.measured.errors.total, 0, "{s:?}");
        assert_eq!(s.measured.nodes, s.nodes);
    }
    let mpw = |nodes, repl| {
        point(nodes, repl)
            .measured
            .replication
            .as_ref()
            .unwrap()
            .messages_per_write
    };
    assert!(mpw(4, "all") > 2.0, "all at 4 nodes: {}", mpw(4, "all"));
    assert!(
        mpw(4, "k=1") <= 2.0 + 1e-9,
        "k=1 at 4 nodes: {}",
        mpw(4, "k=1")
    );
    assert!(mpw(4, "all") > mpw(4, "k=1"));
    assert!(mpw(2, "all") <= 1.0 + 1e-9);
    assert!(markdown.contains("| 4 | all |"), "{markdown}");

    // Output files.
    let dir = tempfile::tempdir().unwrap();
    let files = report.write(dir.path()).unwrap();
    assert_eq!(files.len(), 5, "{files:?}");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(json["schemes"].as_array().unwrap().len(), Scheme::ALL.len());
    assert_eq!(json["schemes"][4]["scheme"], "sql");
    assert!(
        json["schemes"][4]["measured"]["d_per_request"]
            .as_f64()
            .unwrap()
            >= 1.0
    );
    assert_eq!(
        json["schemes"][4]["measured"]["writes_stats"]["d_per_request"],
        2.0
    );
    assert_eq!(json["options"]["requests"], 120);
    assert!(json["machine"]["cores"].as_u64().unwrap() >= 1);
    assert_eq!(json["scaling"].as_array().unwrap().len(), 4);
    let md = std::fs::read_to_string(dir.path().join("results.md")).unwrap();
    assert_eq!(md, markdown);
    for (name, texts) in [
        (
            "latency.svg",
            vec!["Request latency", "p50", "p99", "Redis"],
        ),
        ("throughput.svg", vec!["Throughput", "req/s", "cookie"]),
        (
            "scaling.svg",
            vec![
                "replication messages per write",
                "instant copy k=1",
                "nodes",
            ],
        ),
    ] {
        let svg = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(svg.starts_with("<svg"), "{name}");
        assert!(svg.trim_end().ends_with("</svg>"), "{name}");
        for t in texts {
            assert!(svg.contains(t), "{name} lacks {t:?}");
        }
    }
}

/// The known-mix check at three nodes: instant copy "all" queues exactly two updates
/// per write (one per other node), sends at most that many, and Redis pays one round trip per
/// read and two per write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_count_what_the_protocol_implies() {
    let mut opts = Table1Options::quick();
    opts.nodes = 3;
    opts.users = 3;
    opts.requests = 150;
    opts.schemes = vec![Scheme::InstantCopyAll, Scheme::Redis];
    opts.scaling_nodes.clear();
    opts.redis_url = redis_url();
    let report = compare::run(binary(), &opts, false).await.unwrap();
    let all = report.schemes[0].measured.as_ref().unwrap();
    let rep = all.replication.as_ref().unwrap();
    assert_eq!(all.errors.total, 0, "{:?}", all.errors);
    assert_eq!(rep.queued_per_write, 2.0, "{rep:?}");
    assert!(rep.messages_per_write <= 2.0 && rep.messages_per_write > 0.0);
    assert_eq!(
        all.reads.d_per_request + all.writes_stats.d_per_request,
        0.0
    );
    let redis = report.schemes[1].measured.as_ref().unwrap();
    assert_eq!(redis.errors.total, 0, "{:?}", redis.errors);
    assert_eq!(redis.reads.n_per_request, 1.0);
    assert_eq!(redis.writes_stats.n_per_request, 2.0);
    let md = report.markdown();
    assert!(
        md.contains("| Redis | Redis | 1.000 | 2.00 | 0 | 0 |"),
        "{md}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_services_are_skipped_with_the_reason_not_faked() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut opts = Table1Options::quick();
    opts.schemes = vec![Scheme::Sql, Scheme::Redis];
    opts.scaling_nodes.clear();
    opts.database_url = format!("postgres://postgres:hunter2@127.0.0.1:{port}/postgres");
    opts.redis_url = format!("redis://127.0.0.1:{port}");
    opts.service_timeout = Duration::from_secs(1);
    let report = compare::run(binary(), &opts, false).await.unwrap();
    for row in &report.schemes {
        let reason = row.skipped.as_deref().unwrap();
        assert!(row.measured.is_none());
        assert!(reason.contains("unreachable"), "{reason}");
        assert!(reason.contains(&format!("127.0.0.1:{port}")), "{reason}");
    }
    let md = report.markdown();
    assert!(
        md.contains("| SQL (PostgreSQL) | PostgreSQL | skipped: PostgreSQL at"),
        "{md}"
    );
    assert!(md.contains("| Redis | Redis | skipped: Redis at"), "{md}");
    assert!(!md.contains("hunter2"), "a password leaked into the table");
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains("hunter2"), "a password leaked into the JSON");
    // The charts still render, marking the skipped schemes.
    let charts = report.charts().unwrap();
    assert!(charts[0].1.contains("Redis (skipped)"));
}

async fn schemas_like(conn: &mut sqlx::PgConnection, pattern: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE $1")
        .bind(pattern)
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_run_and_removes_its_schema() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use sqlx::Connection;

    let out_dir = tempfile::tempdir().unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["table1", "--demo-bin"])
        .arg(binary())
        .args([
            "--quick",
            "--schemes",
            "sql",
            "--scaling-nodes",
            "0",
            "--requests",
            "100000000",
            "--out",
        ])
        .arg(out_dir.path())
        .env("DATABASE_URL", database_url())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    // The run's schema is `compare_<pid>_<random>`: wait until it exists.
    let pattern = format!("compare\\_{pid}\\_%");
    let mut conn = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while schemas_like(&mut conn, &pattern).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never created its schema"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGINT).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("compare did not stop after Ctrl-C")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(
        schemas_like(&mut conn, &pattern).await,
        0,
        "the schema was left behind"
    );
    let _ = conn.close().await;
}

/// The README's Table 1 and scaling table are the generated `docs/compare/results.md`, copied
/// by `bench table1 --readme README.md`, not hand-edited numbers.
#[test]
fn readme_tables_are_the_generated_results() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let results = std::fs::read_to_string(root.join("docs/compare/results.md")).unwrap();
    let block = compare::generated_block(&readme).expect("the README has the generated block");
    assert_eq!(
        block,
        results.trim(),
        "README.md's generated block differs from docs/compare/results.md: \
         re-run `bench table1 --out docs/compare --readme README.md`"
    );
    // The committed run is a full one, with every scheme measured and the command recorded.
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("docs/compare/results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["options"]["requests"], 100_000);
    assert!(
        json["command"]
            .as_str()
            .unwrap()
            .starts_with("bench table1")
    );
    for s in json["schemes"].as_array().unwrap() {
        assert!(
            s["skipped"].is_null(),
            "{}: skipped in the committed run",
            s["scheme"]
        );
        assert!(
            !s["measured"]["reads"].is_null(),
            "{}: an old results.json",
            s["scheme"]
        );
    }
}
