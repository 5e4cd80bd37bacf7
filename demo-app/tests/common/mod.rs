//! What the demo's process-level tests share: the binary, a browser-like client that keeps its
//! session token, and a round-robin TCP load balancer that skips backends that refuse
//! connections (as nginx's `proxy_next_upstream error` does).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // not every test uses everything

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The demo-app executable cargo built for these tests.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_demo-app"))
}

/// A browser-like client that keeps one session token (as a cookie jar would).
pub struct User {
    http: reqwest::Client,
    /// The token the client carries.
    pub token: Option<String>,
}

impl User {
    /// A client with keep-alive connections.
    pub fn new() -> Self {
        Self::with_client(reqwest::Client::builder().no_proxy().build().unwrap())
    }

    /// A client that opens a new connection per request (so a round-robin balancer spreads
    /// its requests over the nodes) and gives up on a request after a few seconds.
    pub fn fresh_connections() -> Self {
        Self::with_client(
            reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        )
    }

    fn with_client(http: reqwest::Client) -> Self {
        User { http, token: None }
    }

    /// Sends a request (JSON body if any) carrying the token; keeps any token the response
    /// sets. `Err` when no HTTP response came back at all.
    pub async fn try_send(
        &mut self,
        method: &str,
        url: String,
        body: Option<Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut req = self.http.request(method.parse().unwrap(), &url);
        if let Some(t) = &self.token {
            req = req.header("cookie", format!("sid={t}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        for c in res.headers().get_all("set-cookie") {
            let c = c.to_str().unwrap();
            let value = c.split(';').next().unwrap().split_once('=').unwrap().1;
            self.token = if c.contains("Max-Age=0") || value.is_empty() {
                None
            } else {
                Some(value.to_owned())
            };
        }
        let text = res.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok((status, json))
    }

    /// [`try_send`](User::try_send) that panics when no response came back.
    pub async fn send(&mut self, method: &str, url: String, body: Option<Value>) -> (u16, Value) {
        self.try_send(method, url, body).await.unwrap()
    }
}

/// A round-robin TCP load balancer on a free loopback port: each connection goes to the next
/// backend; one that refuses (or does not accept within 500 ms) is skipped for the next.
pub struct RoundRobin {
    /// Where clients connect.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl RoundRobin {
    /// Balances over `backends`.
    pub async fn start(backends: Vec<SocketAddr>) -> RoundRobin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backends = Arc::new(backends);
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let (backends, next) = (backends.clone(), next.clone());
                tokio::spawn(async move {
                    for _ in 0..backends.len() {
                        let i = next.fetch_add(1, Ordering::Relaxed) % backends.len();
                        let connect = TcpStream::connect(backends[i]);
                        if let Ok(Ok(mut outbound)) =
                            tokio::time::timeout(Duration::from_millis(500), connect).await
                        {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        RoundRobin { addr, task }
    }

    /// The balancer's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A real nginx in front of `backends`, round-robin, configured as `deploy/nginx.conf` is
/// (minus its Docker DNS): a refused connection or a timeout moves the request to the next node,
/// and nodes are never marked down for failures (see the comment there).
/// Runs as one foreground process with its files in a temporary directory, on a free loopback
/// port; killed on drop. `None` when no `nginx` is on the PATH.
pub struct Nginx {
    child: std::process::Child,
    /// Where clients connect.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx over `backends`, or `None` when nginx is not installed.
    pub async fn start(backends: &[SocketAddr]) -> Option<Nginx> {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path().display();
        let servers: String = backends
            .iter()
            .map(|b| format!("        server {b} max_fails=0;\n"))
            .collect();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
             http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    \
             proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    \
             uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n    \
             upstream demo_nodes {{\n{servers}    }}\n    server {{\n        \
             listen 127.0.0.1:{port};\n        location / {{\n            \
             proxy_pass http://demo_nodes;\n            proxy_http_version 1.1;\n            \
             proxy_set_header Connection \"\";\n            proxy_connect_timeout 1s;\n            \
             proxy_next_upstream error timeout;\n        }}\n    }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let mut child = std::process::Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_ok() {
                return Some(Nginx {
                    child,
                    addr,
                    _dir: dir,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        panic!("nginx did not start listening on {addr}: {log}");
    }

    /// The balancer's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if std::env::var("NGINX_ERRORS").is_ok() {
            let log =
                std::fs::read_to_string(self._dir.path().join("error.log")).unwrap_or_default();
            eprintln!(
                "nginx error log:\n{}",
                log.lines()
                    .filter(|l| !l.contains("connect() failed"))
                    .take(40)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `http://host:port` → `host:port`.
pub fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}
