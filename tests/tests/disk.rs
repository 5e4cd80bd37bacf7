//! `scripts/lib/disk.sh`, the first step of `./scripts/test`: it must refuse a build that cannot
//! fit (saying how much is free and needed) before minutes of compiling end in a linker crash,
//! and let one that fits go on, counting what the target directory already holds as reusable.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lib/disk.sh")
}

/// Runs `ensure_build_space TARGET` with the estimate set to `need_mb`.
fn ensure(target: &Path, need_mb: u64) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && ensure_build_space '{}'",
            script().display(),
            target.display()
        ))
        .env("BUILD_SPACE_NEEDED_MB", need_mb.to_string())
        .output()
        .unwrap()
}

#[test]
fn a_build_that_cannot_fit_is_refused_with_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    // A petabyte: no test machine has it free.
    let out = ensure(&dir.path().join("not-yet/target"), 1_000_000_000);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs about 1000000000 MB"), "{err}");
    assert!(err.contains("MB are free there"), "{err}");
    assert!(err.contains("CARGO_TARGET_DIR"), "{err}");
}

#[test]
fn a_build_that_fits_goes_on_and_counts_what_is_already_built() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("artifact"), vec![7u8; 8 << 20]).unwrap();
    let out = ensure(&target, 1);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    // `du -sm` rounds up: the 8 MiB file and its directory read as 8 or 9 MB.
    let built: u64 = said
        .split(" MB already built")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'MB already built' in {said:?}"));
    assert!((8..=9).contains(&built), "{said}");
}
