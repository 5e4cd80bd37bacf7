//! PostgreSQL over TLS with sqlx's rustls: a throwaway PostgreSQL (initdb in a temporary
//! directory, its own loopback port, `ssl = on` with an rcgen certificate, `hostssl` only) so
//! the shared server is never reconfigured. `sslmode=verify-full` with the test CA works; the
//! system trust store (no CA given), a wrong host name and a plaintext connection are refused.
//! Skipped, saying why, where no PostgreSQL server binaries or `postgres` user exist.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use backend_sql::{SqlBackend, SqlConfig};
use session_core::{ExpiryPolicy, KeyRing, RawJson, SessionBackend, SessionData};
use sqlx::Connection;

/// `(ca.pem, server.pem, server.key)` for `localhost` / `127.0.0.1`.
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

fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root (initdb refuses root).
fn run(bin: &Path, tool: &str, args: &[&str]) -> std::process::Output {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running a PostgreSQL tool")
}

struct Server {
    bin: PathBuf,
    data: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = run(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data, "-m", "immediate", "-w", "stop"],
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the throwaway server; `None` (with the reason on stderr) when it cannot.
fn start(dir: &Path) -> Option<(Server, u16, PathBuf)> {
    let Some(bin) = pg_bin() else {
        eprintln!("no PostgreSQL server binaries under /usr/lib/postgresql: skipping");
        return None;
    };
    let (ca, cert, key) = certificates(dir);
    let data = dir.join("data");
    let chown = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status();
    if !chown.is_ok_and(|s| s.success()) {
        eprintln!("cannot hand the directory to the postgres user: skipping");
        return None;
    }
    let _ = Command::new("chmod").arg("0600").arg(&key).status();
    let _ = Command::new("chmod").arg("0755").arg(dir).status();
    let data_s = data.to_string_lossy().into_owned();
    let init = run(
        &bin,
        "initdb",
        &["-D", &data_s, "-A", "trust", "-U", "postgres", "--no-sync"],
    );
    if !init.status.success() {
        eprintln!(
            "initdb failed, skipping: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        return None;
    }
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
    )
    .unwrap();
    let port = free_port();
    let opts = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c fsync=off",
        dir.display(),
        cert.display(),
        key.display()
    );
    let server = Server {
        bin: bin.clone(),
        data: data_s.clone(),
    };
    let log = dir.join("pg.log").to_string_lossy().into_owned();
    let started = run(
        &bin,
        "pg_ctl",
        &[
            "-D", &data_s, "-o", &opts, "-l", &log, "-w", "-t", "30", "start",
        ],
    );
    assert!(
        started.status.success(),
        "pg_ctl start: {} {}",
        String::from_utf8_lossy(&started.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    Some((server, port, ca))
}

fn config(url: String) -> SqlConfig {
    let mut config = SqlConfig::new(url);
    config.acquire_timeout = Duration::from_secs(3);
    config.cleanup = false;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_works_with_the_ca_and_plaintext_or_untrusted_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_server, port, ca)) = start(dir.path()) else {
        return;
    };
    let ca = ca.display().to_string();
    let url = format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
    );
    // The connection really is TLS.
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(ssl);
    let _ = conn.close().await;

    let backend = SqlBackend::connect(config(url), ExpiryPolicy::default(), &KeyRing::generate())
        .await
        .expect("the backend connects with verify-full");
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
    backend.shutdown().await;

    for (case, url) in [
        (
            "no CA given (system roots)",
            format!("postgres://postgres@localhost:{port}/postgres?sslmode=verify-full"),
        ),
        (
            "a host name the certificate does not hold",
            format!(
                "postgres://postgres@127.0.0.2:{port}/postgres?sslmode=verify-full&sslrootcert={ca}"
            ),
        ),
        (
            "plaintext (hostssl only)",
            format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"),
        ),
    ] {
        let r =
            SqlBackend::connect(config(url), ExpiryPolicy::default(), &KeyRing::generate()).await;
        assert!(r.is_err(), "{case}: connected");
    }
}
