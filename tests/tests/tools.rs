//! `scripts/lib/tools.sh`, the step of `./scripts/test` that installs the system tools the tests
//! run: it must see a missing tool as missing (so a fresh machine gets it installed), see a
//! present one as present (so a second run installs nothing), and fail with the exact command
//! when it cannot install.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bash() -> &'static str {
    ["/bin/bash", "/usr/bin/bash"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("bash")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lib/tools.sh")
}

/// Every command the tool list names.
const ALL: [&str; 11] = [
    "chromium",
    "wrk",
    "redis-server",
    "redis-cli",
    "ip",
    "ss",
    "nginx",
    "runuser",
    "chown",
    "callgrind_control",
    "perf",
];

/// Every command but `hidden`.
fn all_but(hidden: &[&str]) -> Vec<&'static str> {
    ALL.into_iter().filter(|c| !hidden.contains(c)).collect()
}

/// A directory holding do-nothing executables named `names`, to stand in for a PATH on which
/// exactly those tools are installed.
fn fake_path(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for n in names {
        let p = dir.path().join(n);
        std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// Runs `ensure_test_tools ARGS` with only `dir` on the PATH.
fn ensure(dir: &Path, args: &str) -> Output {
    Command::new(bash())
        .arg("-c")
        .arg(format!(
            "source '{}' && ensure_test_tools {args}",
            script().display()
        ))
        .env_clear()
        .env("PATH", dir)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn hidden_chromium_and_wrk_are_detected_and_would_be_installed() {
    let dir = fake_path(&all_but(&["chromium", "wrk"]));
    let out = ensure(dir.path(), "--dry-run");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out).trim(), "would install: chromium wrk");
}

#[test]
fn every_tool_hidden_names_every_package_once() {
    let dir = fake_path(&[]);
    let out = ensure(dir.path(), "--dry-run");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        text(&out).trim(),
        "would install: chromium wrk redis-server redis-tools iproute2 nginx-light util-linux coreutils valgrind linux-perf"
    );
}

#[test]
fn a_second_run_with_everything_present_installs_nothing() {
    let dir = fake_path(&ALL);
    for args in ["--dry-run", ""] {
        let out = ensure(dir.path(), args);
        assert!(out.status.success(), "{}", text(&out));
        let t = text(&out);
        assert!(t.starts_with("tools: all present"), "{t}");
        assert!(!t.contains("install"), "{t}");
    }
}

#[test]
fn without_apt_get_it_fails_naming_the_command_to_run() {
    // No apt-get on this PATH: the step cannot install, so it must stop with the command.
    let dir = fake_path(&all_but(&["chromium"]));
    let out = ensure(dir.path(), "");
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("chromium (package chromium)"), "{t}");
    assert!(t.contains("apt-get install -y chromium"), "{t}");
    assert!(!t.contains("wrk (package"), "wrk is present: {t}");
}

#[test]
fn a_missing_ss_alone_installs_iproute2() {
    let dir = fake_path(&all_but(&["ss"]));
    let out = ensure(dir.path(), "--dry-run");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out).trim(), "would install: iproute2");
}
