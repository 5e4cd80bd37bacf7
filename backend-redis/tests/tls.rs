//! `rediss://` end to end: a throwaway `redis-server` with TLS only (`--port 0 --tls-port`),
//! a CA and a server certificate made by rcgen, and the backend's round trip through it. A
//! client that does not trust the CA, or that speaks plaintext to the TLS port, gets an
//! `Unavailable` error, never a session.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backend_redis::{RedisBackend, RedisConfig};
use session_core::{ExpiryPolicy, KeyRing, RawJson, SessionBackend, SessionData, SessionError};

/// A CA and a server certificate for `localhost` / `127.0.0.1`, written as PEM files into
/// `dir`: `(ca.pem, server.pem, server.key)`.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "session-sync test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    (paths.0, paths.1, paths.2)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `redis-server` listening with TLS only; `None` when this redis-server was built
/// without TLS (said on stderr, and the test then checks nothing it cannot).
fn tls_redis(dir: &Path, cert: &Path, key: &Path, ca: &Path) -> Option<(Server, u16)> {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .arg("--tls-cert-file")
        .arg(cert)
        .arg("--tls-key-file")
        .arg(key)
        .arg("--tls-ca-cert-file")
        .arg(ca)
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is on the PATH (scripts/test installs it)");
    let mut server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = server.0.try_wait() {
            eprintln!("redis-server exited ({status}): built without TLS? skipping");
            return None;
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((server, port));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("redis-server with TLS did not listen on {port} within 10 s");
}

async fn connect(mut config: RedisConfig) -> Result<RedisBackend, SessionError> {
    config.connection_timeout = Duration::from_secs(2);
    config.reconnect_attempts = 0;
    let config = config.with_key_prefix(session_core::testing::unique_name("tls"));
    RedisBackend::connect(config, ExpiryPolicy::default(), &KeyRing::generate()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_urls_work_with_a_trusted_ca_and_fail_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let Some((_server, port)) = tls_redis(dir.path(), &cert, &key, &ca) else {
        return;
    };
    // Trusting the test CA: a full round trip over TLS.
    let trusting = |url: String| {
        let mut config = RedisConfig::single(url);
        config.tls_ca_file = Some(ca.clone());
        config
    };
    let backend = connect(trusting(format!("rediss://localhost:{port}")))
        .await
        .expect("connect over TLS");
    let mut data = SessionData::new();
    data.insert("user", RawJson::from_value("alice").unwrap());
    let saved = backend.create(data).await.unwrap();
    let loaded = backend.load(&saved.token).await.unwrap().expect("loads");
    assert_eq!(
        loaded
            .record
            .data
            .get_as::<String>("user")
            .unwrap()
            .as_deref(),
        Some("alice")
    );
    backend.destroy(&loaded).await.unwrap();

    // The system trust store does not know the test CA: refused, as Unavailable.
    let untrusted = connect(RedisConfig::single(format!("rediss://localhost:{port}"))).await;
    assert!(
        matches!(untrusted, Err(SessionError::Unavailable { .. })),
        "{:?}",
        untrusted.err()
    );
    // A name the certificate does not hold.
    let wrong_name = connect(trusting(format!("rediss://127.0.0.2:{port}"))).await;
    assert!(wrong_name.is_err());
    // Plaintext to a TLS-only server: no session either.
    let plain = tokio::time::timeout(
        Duration::from_secs(10),
        connect(RedisConfig::single(format!("redis://127.0.0.1:{port}"))),
    )
    .await
    .expect("a plaintext attempt fails within its timeouts");
    assert!(plain.is_err());
}
