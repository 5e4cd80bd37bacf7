//! A real network cut between real processes: three demo nodes, each in its own network
//! namespace with its own address on a private bridge (`ip netns`, veth, blackhole routes), so
//! node 3 can be cut off from the others while it stays alive and reachable by clients.
//!
//! The scenario users hit: logged in on node 1, node 3 cut off, more writes on node 1, the cut
//! heals, then nodes 1 and 2 die. A user is never logged out while a copy of their session
//! survives: during the cut node 3 answers 503 (cookie kept), after the heal it catches up
//! without client traffic and serves everything; if the newer holders die before the heal, it
//! serves the newest surviving copy and counts the lost writes.
//!
//! Needs root and iproute2 (`./scripts/test` installs iproute2; CI runs as root). Everything
//! it creates is named with a random tag and removed when the test ends.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{User, binary};
use serde_json::json;

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip {args:?}: {e} (install iproute2)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A private bridge with one network namespace per node, torn down on drop.
struct Net {
    tag: String,
    subnet: u8,
    nodes: usize,
}

impl Net {
    fn create(nodes: usize) -> Result<Net, String> {
        let mut r = [0u8; 3];
        session_core::fill_random(&mut r);
        let tag = format!("{:02x}{:02x}", r[0], r[1]);
        let net = Net {
            tag,
            subnet: 10 + r[2] % 200,
            nodes,
        };
        let br = net.bridge();
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}/24", net.addr(254)), "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        for i in 1..=nodes {
            let ns = net.ns(i);
            let (host, inner) = (format!("v{}{i}h", net.tag), format!("v{}{i}n", net.tag));
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &host, "master", &br, "up"])?;
            let addr = format!("{}/24", net.addr(i as u8));
            ip(&[
                "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", &inner,
            ])?;
            ip(&["netns", "exec", &ns, "ip", "link", "set", &inner, "up"])?;
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("icbr{}", self.tag)
    }

    fn ns(&self, i: usize) -> String {
        format!("ic-{}-{i}", self.tag)
    }

    fn addr(&self, host: u8) -> String {
        format!("10.231.{}.{host}", self.subnet)
    }

    /// Cuts (or heals) every packet between nodes `a` and `b`, both ways.
    fn link(&self, a: usize, b: usize, up: bool) -> Result<(), String> {
        for (from, to) in [(a, b), (b, a)] {
            let dst = format!("{}/32", self.addr(to as u8));
            let verb = if up { "del" } else { "add" };
            ip(&[
                "netns",
                "exec",
                &self.ns(from),
                "ip",
                "route",
                verb,
                "blackhole",
                &dst,
            ])?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 1..=self.nodes {
            let _ = ip(&["netns", "del", &self.ns(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

/// Three demo processes, one per namespace.
struct Nodes {
    children: Vec<Option<std::process::Child>>,
    urls: Vec<String>,
}

impl Nodes {
    fn start(net: &Net) -> Nodes {
        let secret = demo_app::cluster::random_secret();
        let seeds: Vec<String> = (1..=net.nodes)
            .map(|i| format!("{}:7001", net.addr(i as u8)))
            .collect();
        let mut children = Vec::new();
        let mut urls = Vec::new();
        for i in 1..=net.nodes {
            let a = net.addr(i as u8);
            let child = Command::new("ip")
                .args(["netns", "exec", &net.ns(i)])
                .arg(binary())
                .arg("serve")
                .env("DEMO_NODE_ID", i.to_string())
                .env("DEMO_APP_ADDR", format!("{a}:8080"))
                .env("DEMO_DEV", "false")
                .env("DEMO_SESSION__SECURE", "false")
                .env("DEMO_LOG", "warn")
                .env("SESSION_SECRET", &secret)
                .env("DEMO_BACKEND__KIND", "instantcopy")
                .env(
                    "DEMO_BACKEND__INSTANTCOPY__CLUSTER_ADDR",
                    format!("{a}:7001"),
                )
                .env("DEMO_BACKEND__INSTANTCOPY__SEEDS", seeds.join(","))
                .env("DEMO_BACKEND__INSTANTCOPY__HEARTBEAT_INTERVAL", "200ms")
                .env("DEMO_BACKEND__INSTANTCOPY__ANTI_ENTROPY_INTERVAL", "1s")
                .env("DEMO_BACKEND__INSTANTCOPY__CONNECT_TIMEOUT", "200ms")
                .env("DEMO_BACKEND__INSTANTCOPY__REQUEST_TIMEOUT", "600ms")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn a node in its namespace");
            children.push(Some(child));
            urls.push(format!("http://{a}:8080"));
        }
        Nodes { children, urls }
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        for url in &self.urls {
            loop {
                let ok = http
                    .get(format!("{url}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    break;
                }
                assert!(Instant::now() < deadline, "{url} never became ready");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// The value of a counter in a node's `/metrics` (0 when absent).
async fn metric(url: &str, name: &str) -> f64 {
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn login_and_add_a(url: &str, users: usize) -> Vec<User> {
    let mut out = Vec::new();
    for i in 0..users {
        let mut u = User::fresh_connections();
        let (s, _) = u
            .send(
                "POST",
                format!("{url}/login"),
                Some(json!({ "user": format!("u{i}") })),
            )
            .await;
        assert_eq!(s, 200);
        let (s, _) = u
            .send(
                "POST",
                format!("{url}/cart/items"),
                Some(json!({ "sku": "a", "qty": 1 })),
            )
            .await;
        assert_eq!(s, 200);
        out.push(u);
    }
    out
}

fn setup() -> Option<Net> {
    match Net::create(3) {
        Ok(n) => Some(n),
        Err(e) => panic!(
            "this test needs root and iproute2 to build network namespaces \
             (./scripts/test installs iproute2 and CI runs as root): {e}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_node_answers_503_then_catches_up_and_keeps_everyone_logged_in() {
    let Some(net) = setup() else { return };
    let mut nodes = Nodes::start(&net);
    nodes.wait_ready().await;
    let (n1, n3) = (nodes.urls[0].clone(), nodes.urls[2].clone());
    let mut users = login_and_add_a(&n1, 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Node 3 is cut off from the others (both directions); it stays alive and reachable.
    net.link(3, 1, false).unwrap();
    net.link(3, 2, false).unwrap();
    for u in &mut users {
        let (s, _) = u
            .send(
                "POST",
                format!("{n1}/cart/items"),
                Some(json!({ "sku": "b", "qty": 1 })),
            )
            .await;
        assert_eq!(s, 200, "a write on the majority side is acknowledged");
    }
    // During the cut, node 3 holds only the older copy: 503 with Retry-After, cookie kept.
    for u in &mut users {
        let before = u.token.clone();
        let (s, body) = u.send("GET", format!("{n3}/cart"), None).await;
        assert_eq!(s, 503, "a stale read during the cut: {body}");
        assert_eq!(u.token, before, "the cookie is left alone");
    }
    // The cut heals; no client traffic while anti-entropy brings node 3 level.
    net.link(3, 1, true).unwrap();
    net.link(3, 2, true).unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Nodes 1 and 2 die. Everyone is still logged in on node 3, with both items.
    nodes.kill(0);
    nodes.kill(1);
    for (i, u) in users.iter_mut().enumerate() {
        let (s, body) = u.send("GET", format!("{n3}/cart"), None).await;
        assert_eq!(s, 200, "user {i} logged out: {body}");
        assert_eq!(body["items"], json!({ "a": 1, "b": 1 }), "user {i}");
    }
    assert_eq!(
        metric(&n3, "session_instantcopy_lost_writes_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_the_newer_holders_die_during_the_cut_the_surviving_copy_is_served_and_the_loss_counted()
{
    let Some(net) = setup() else { return };
    let mut nodes = Nodes::start(&net);
    nodes.wait_ready().await;
    let (n1, n3) = (nodes.urls[0].clone(), nodes.urls[2].clone());
    let mut users = login_and_add_a(&n1, 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    net.link(3, 1, false).unwrap();
    net.link(3, 2, false).unwrap();
    for u in &mut users {
        let (s, _) = u
            .send(
                "POST",
                format!("{n1}/cart/items"),
                Some(json!({ "sku": "b", "qty": 1 })),
            )
            .await;
        assert_eq!(s, 200);
    }
    // The newer holders die while node 3 cannot tell them from unreachable: still 503.
    nodes.kill(0);
    nodes.kill(1);
    let (s, _) = users[0].send("GET", format!("{n3}/cart"), None).await;
    assert_eq!(s, 503);
    // The links come back: the dead nodes' addresses now refuse connections, which proves them
    // gone. Nobody is logged out; each gets the newest copy that survived (`a`, not `b`).
    net.link(3, 1, true).unwrap();
    net.link(3, 2, true).unwrap();
    for (i, u) in users.iter_mut().enumerate() {
        let mut last = (0, json!(null));
        for _ in 0..40 {
            last = u.send("GET", format!("{n3}/cart"), None).await;
            if last.0 == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(last.0, 200, "user {i} never served: {}", last.1);
        assert_eq!(last.1["items"], json!({ "a": 1 }), "user {i}");
    }
    assert_eq!(
        metric(&n3, "session_instantcopy_lost_writes_total").await,
        10.0
    );
}
