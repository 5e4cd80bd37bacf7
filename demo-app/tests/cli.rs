//! The binary's command line: invalid configuration is one clear message and a non-zero exit;
//! a missing secret outside dev mode refuses to start.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::process::{Command, Output};

fn demo(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_demo-app"));
    cmd.args(args)
        .env_remove("SESSION_SECRET")
        .env_remove("SESSION_SECRET_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn invalid_config_names_the_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "node_id = 1\n[session]\nidle_timeout = \"forever\"\n",
    )
    .unwrap();
    let o = demo(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("session.idle_timeout"), "{e}");
    assert_eq!(e.lines().count(), 1, "one clear message: {e}");

    let o = demo(&["serve"], &[("DEMO_BACKEND__KIND", "mongo")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("backend.kind"), "{}", stderr(&o));

    let o = demo(&["serve", "--config", "/nonexistent/demo.toml"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
}

#[test]
fn a_missing_secret_outside_dev_mode_is_a_startup_error() {
    let o = demo(&["serve"], &[("DEMO_DEV", "false")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("SESSION_SECRET"), "{}", stderr(&o));
    let o = demo(
        &["serve"],
        &[("DEMO_DEV", "false"), ("SESSION_SECRET", "too-short")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("at least 32"), "{}", stderr(&o));
    assert!(stderr(&o).contains("hex"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_cluster_whose_nodes_exit_at_start_fails_with_their_exit_status() {
    use demo_app::cluster::{ClusterError, ClusterSpec, LocalCluster};
    use demo_app::config::BackendKind;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[session]\nidle_timeout = \"forever\"\n").unwrap();
    let mut spec = ClusterSpec::new(2, BackendKind::Instantcopy);
    spec.config_file = Some(file);
    let started = std::time::Instant::now();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_demo-app"));
    match LocalCluster::start(binary, &spec).await {
        // Every attempt (on fresh ports) exits the same way; the last one is reported, at once
        // rather than after the readiness timeout.
        Err(ClusterError::Exited { node: 1, status }) => {
            assert_eq!(status.code(), Some(2), "{status}");
            assert!(started.elapsed() < std::time::Duration::from_secs(30));
        }
        Err(other) => panic!("expected the node's exit, got {other}"),
        Ok(_) => panic!("a cluster with an invalid config started"),
    }
}

#[test]
fn compare_refuses_a_readme_without_the_generated_block_before_measuring() {
    let dir = tempfile::tempdir().unwrap();
    let readme = dir.path().join("README.md");
    std::fs::write(&readme, "# A README with no generated block\n").unwrap();
    let out = dir.path().join("results");
    let o = demo(
        &[
            "compare",
            "--quick",
            "--schemes",
            "cookie",
            "--scaling-nodes",
            "0",
            "--out",
            out.to_str().unwrap(),
            "--readme",
            readme.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("compare:begin") && e.contains("README.md"),
        "{e}"
    );
    assert!(!out.exists(), "it measured before checking the README");
    assert_eq!(
        std::fs::read_to_string(&readme).unwrap(),
        "# A README with no generated block\n"
    );
}
