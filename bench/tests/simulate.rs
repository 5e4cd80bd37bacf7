//! `bench simulate`'s behaviour (not its timing): the same seed gives the same report, k-mode
//! messages per write stay flat while `all`'s grow with n − 1, a node loss ends with every
//! session at its full replica count, bad flags are refused clearly, and the README's
//! simulated section is the generated `docs/simulate/results.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::path::Path;
use std::process::Command;

use bench::simulate::report::generated_block;
use bench::simulate::{Mode, SimOptions, run};

/// Small numbers: a few seconds in a debug build.
fn small(nodes: Vec<usize>, modes: Vec<Mode>) -> SimOptions {
    let mut o = SimOptions::full();
    o.nodes = nodes;
    o.modes = modes;
    o.requests = 600;
    o.sessions = 300;
    o.users = 10;
    o
}

#[test]
fn the_same_seed_gives_the_same_numbers() {
    let o = small(vec![4, 16], vec![Mode::All, Mode::Backups(1)]);
    let a = run(&o, false).unwrap().to_json().unwrap();
    let b = run(&o, false).unwrap().to_json().unwrap();
    assert_eq!(a, b, "two runs with seed {} differ", o.seed);
    // And the seed matters: another one gives other numbers.
    let mut other = o.clone();
    other.seed += 1;
    let runs = |o: &SimOptions| serde_json::to_string(&run(o, false).unwrap().runs).unwrap();
    assert_ne!(runs(&o), runs(&other));
}

#[test]
fn k_modes_stay_flat_while_all_grows_with_the_cluster() {
    let sizes = vec![4, 8, 32];
    let o = small(
        sizes.clone(),
        vec![Mode::All, Mode::Backups(1), Mode::Backups(2)],
    );
    let report = run(&o, false).unwrap();
    for &n in &sizes {
        let all = report.run(n, Mode::All).unwrap();
        let want = (n - 1) as f64;
        assert!(
            all.updates_per_write > 0.9 * want && all.updates_per_write <= want + 1e-9,
            "{n} nodes, all: {} updates / write, expected about {want}",
            all.updates_per_write
        );
        assert!(all.round_trips_per_write > 0.5 * want);
        for k in [1u8, 2] {
            let r = report.run(n, Mode::Backups(k)).unwrap();
            let bound = f64::from(k) + 1.0;
            // A holder sends k updates, a non-holder k + 1 (it forwards to every holder).
            assert!(
                r.updates_per_write >= 0.9 * f64::from(k).min(want)
                    && r.updates_per_write <= bound + 1e-9,
                "{n} nodes, k={k}: {} updates / write, outside [{k}, {bound}]",
                r.updates_per_write
            );
            assert!(
                r.round_trips_per_write <= bound + 0.2,
                "{n} nodes, k={k}: {} round trips / write",
                r.round_trips_per_write
            );
        }
        for r in report.runs.iter().filter(|r| r.nodes == n) {
            assert!(r.counters.writes > 0 && r.counters.reads > 0, "{r:?}");
            assert_eq!(r.counters.requests, 600);
            assert_eq!(r.inconsistent_after_workload, 0, "{n} {}", r.mode);
            assert!(r.push_bytes_per_write > 0.0);
        }
    }
    // Bytes follow the messages: all at 32 nodes moves far more per write than k=1.
    let all = report.run(32, Mode::All).unwrap().push_bytes_per_write;
    let k1 = report
        .run(32, Mode::Backups(1))
        .unwrap()
        .push_bytes_per_write;
    assert!(all > 8.0 * k1, "all {all} B / write, k=1 {k1} B / write");
    // The markdown has a row per run and the chart draws.
    let md = report.markdown();
    assert!(md.contains("| 32 | k=2 |"), "{md}");
    let svg = bench::simulate::chart::scaling_svg(&report).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("simulated all"));
}

#[test]
fn after_a_node_loss_every_session_has_its_full_replica_count() {
    let mut o = small(
        vec![2, 5, 12],
        vec![Mode::All, Mode::Backups(1), Mode::Backups(2)],
    );
    o.loss = true;
    let report = run(&o, false).unwrap();
    for r in &report.runs {
        let loss = r.loss.as_ref().unwrap();
        let what = format!("{} nodes, {}: {loss:?}", r.nodes, r.mode);
        let first = loss.first_detection_ms.unwrap();
        let all = loss.all_detected_ms.unwrap();
        // Detection takes at least the suspicion timeout, and finishes.
        assert!(first >= report.protocol.suspect_to_down_ms, "{what}");
        assert!(all >= first && all.is_finite(), "{what}");
        let converged = loss.converged_ms.expect("converged");
        assert!(converged.is_finite(), "{what}");
        assert_eq!(loss.short_at_end, 0, "{what}");
        assert_eq!(loss.inconsistent_at_end, 0, "{what}");
        if r.mode == "all" {
            // Every live node already holds every session.
            assert_eq!(loss.sessions_affected, 0, "{what}");
            assert_eq!(loss.repair_updates, 0, "{what}");
        } else {
            assert!(loss.sessions_affected > 0, "{what}");
            assert!(converged > 0.0 && converged >= first, "{what}");
            if r.nodes > 2 {
                // Each re-placed session is sent whole to its other holders: k updates.
                let k: u64 = r.mode.trim_start_matches("k=").parse().unwrap();
                let expected = loss.sessions_affected as u64 * k.min(r.nodes as u64 - 2);
                assert!(loss.repair_updates >= expected, "{what}");
                assert!(
                    loss.repair_round_trips > 0 && loss.repair_bytes > 0,
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn bad_parameters_are_refused_with_the_flag_named() {
    let mut o = SimOptions::full();
    o.nodes = vec![1];
    assert!(o.validate().unwrap_err().to_string().contains("--nodes"));
    let mut o = SimOptions::full();
    o.rate = 0.0;
    assert!(o.validate().unwrap_err().to_string().contains("--rate"));
    let mut o = SimOptions::full();
    o.sessions = 3;
    assert!(o.validate().unwrap_err().to_string().contains("--sessions"));
    assert!("k=0".parse::<Mode>().is_err());
    assert!("k=17".parse::<Mode>().is_err());
    assert_eq!("k=2".parse::<Mode>(), Ok(Mode::Backups(2)));
    assert_eq!("2".parse::<Mode>(), Ok(Mode::Backups(2)));
    assert_eq!("ALL".parse::<Mode>(), Ok(Mode::All));

    let bench = env!("CARGO_BIN_EXE_bench");
    let out_dir = tempfile::tempdir().unwrap();
    for (args, expect) in [
        (vec!["--modes", "k=0"], "k=N"),
        (vec!["--nodes", "1"], "--nodes"),
        (vec!["--latency-us=-5"], "--latency-us"),
        (vec!["--rate", "fast"], "--rate"),
    ] {
        let out = Command::new(bench)
            .arg("simulate")
            .args(&args)
            .arg("--out")
            .arg(out_dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
    assert!(
        std::fs::read_dir(out_dir.path()).unwrap().next().is_none(),
        "nothing is written for refused flags"
    );
}

/// The README's simulated section is the generated `docs/simulate/results.md`, copied by
/// `bench simulate --out docs/simulate --readme README.md`, not hand-edited numbers.
#[test]
fn readme_section_is_the_generated_results() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let results = std::fs::read_to_string(root.join("docs/simulate/results.md")).unwrap();
    let block = generated_block(&readme).expect("the README has the simulate block");
    assert_eq!(
        block,
        results.trim(),
        "README.md's simulated section differs from docs/simulate/results.md: re-run \
         `cargo run --release -p bench -- simulate --out docs/simulate --readme README.md`"
    );
    assert!(readme.contains("](docs/simulate/scaling.svg)"));
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("docs/simulate/results.json")).unwrap(),
    )
    .unwrap();
    let sizes: Vec<u64> = json["options"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    for n in [16, 64, 256] {
        assert!(sizes.contains(&n), "the committed run lacks {n} nodes");
    }
}
