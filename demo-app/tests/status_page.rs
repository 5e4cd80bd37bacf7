//! The status page, loaded in a real headless Chromium: it renders this node, the backend and
//! the peer list, and its script refreshes them from `/status.json`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use demo_app::cluster::{ClusterSpec, LocalCluster};
use demo_app::config::BackendKind;

fn chromium() -> &'static str {
    for path in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if Path::new(path).exists() {
            return path;
        }
    }
    panic!(
        "this test needs Chromium: install Debian's `chromium` package (apt-get install chromium); \
         ./scripts/test checks for it up front"
    );
}

/// Renders `url` in headless Chromium (scripts run for up to 3 s of virtual time) and returns
/// the resulting DOM.
fn render(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_renders_node_and_peers_in_chromium() {
    let binary = Path::new(env!("CARGO_BIN_EXE_demo-app"));
    let mut cluster = LocalCluster::start(binary, &ClusterSpec::new(3, BackendKind::Instantcopy))
        .await
        .unwrap();
    let url = cluster.urls()[0].clone();
    reqwest::get(format!("{url}/profile")).await.unwrap();
    let dom = tokio::task::spawn_blocking(move || render(&format!("{url}/")))
        .await
        .unwrap();
    assert!(
        dom.contains(r#"<span id="node">1</span>"#),
        "node id not rendered:\n{dom}"
    );
    assert!(dom.contains(r#"<code id="backend">instantcopy</code>"#));
    for peer in [2, 3] {
        let row = format!(r#"<tr class="peer" data-peer="{peer}"><td>node {peer}</td>"#);
        assert!(dom.contains(&row), "peer {peer} missing:\n{dom}");
    }
    assert_eq!(
        dom.matches(r#"<td class="up">up</td>"#).count(),
        2,
        "both peers up:\n{dom}"
    );
    assert!(
        dom.contains(r#"data-refreshed="yes""#),
        "the page's script did not refresh from /status.json:\n{dom}"
    );
    // A dead peer shows as down after the next refresh. Failure detection takes about
    // failure_threshold x heartbeat_interval (1.5 s) once the node notices; on a loaded machine
    // (the whole suite on two cores) a little longer, so look again for up to 10 s.
    cluster.kill(2).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let shown_down = |dom: &str| {
        dom.contains(r#"<tr class="peer" data-peer="3"><td>node 3</td>"#)
            && dom.contains(r#"<td class="down">down</td>"#)
    };
    let dom = loop {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let url = cluster.urls()[0].clone();
        let dom = tokio::task::spawn_blocking(move || render(&format!("{url}/")))
            .await
            .unwrap();
        if shown_down(&dom) || std::time::Instant::now() >= deadline {
            break dom;
        }
    };
    assert!(
        shown_down(&dom),
        "the killed peer is not shown down:\n{dom}"
    );
    cluster.stop(Duration::from_secs(5)).await;
}
