//! The shared servers a scheme needs: checked for real (TCP, then a connect and `SELECT 1` /
//! `PING`) before a run, so an unreachable one is reported as skipped, never faked; and URLs
//! with their passwords redacted for the report.

use std::time::Duration;

/// The URL with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(an unparsable URL)".into(),
    }
}

/// TCP-connects to the URL's host and port (`default_port` when the URL has none). URLs
/// without a host (Unix sockets) pass: the real connect that follows decides.
pub(super) async fn check_tcp(
    url: &str,
    default_port: u16,
    timeout: Duration,
) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        return Ok(());
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port().unwrap_or(default_port);
    match tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot connect to {host}:{port}: {e}")),
        Err(_) => Err(format!(
            "cannot connect to {host}:{port}: no answer within {} ms",
            timeout.as_millis()
        )),
    }
}

/// Checks that PostgreSQL answers `SELECT 1`; the error is the reason to skip.
pub async fn check_postgres(url: &str, timeout: Duration) -> Result<(), String> {
    let fail = |why: String| format!("PostgreSQL at {} is unreachable: {why}", redact(url));
    check_tcp(url, 5432, timeout).await.map_err(fail)?;
    let work = async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .map_err(|e| e.to_string())?;
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let _ = conn.close().await;
        if one == 1 {
            Ok(())
        } else {
            Err(format!("SELECT 1 returned {one}"))
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r.map_err(fail),
        Err(_) => Err(fail(format!(
            "no answer to SELECT 1 within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// Checks that Redis answers `PING`; the error is the reason to skip.
pub async fn check_redis(url: &str, timeout: Duration) -> Result<(), String> {
    let fail = |why: String| format!("Redis at {} is unreachable: {why}", redact(url));
    check_tcp(url, 6379, timeout).await.map_err(fail)?;
    let work = async {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut con)
            .await
            .map_err(|e| e.to_string())?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(format!("PING answered {pong:?}"))
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r.map_err(fail),
        Err(_) => Err(fail(format!(
            "no answer to PING within {} ms",
            timeout.as_millis()
        ))),
    }
}
