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
    assert!(stderr(&o).contains("at least 32 bytes"), "{}", stderr(&o));
}
