//! Serving an axum [`Router`] with resource bounds on every connection: a header-read timeout,
//! a request timeout, an inactivity timeout and a cap on open connections.
//!
//! `axum::serve` sets none of these (hyper's header timeout needs a timer that `axum::serve`
//! does not install), so a client that opens connections and sends a request line and headers
//! one byte at a time (slowloris) holds a socket, a task and its buffers forever. [`serve`]
//! is the same accept loop built from hyper's own HTTP/1 connection builder with hyper-util's
//! Tokio timer, `tower_http`'s timeout layer and a semaphore around `accept`:
//!
//! * [`ServeLimits::header_read_timeout`]: hyper closes a connection that has not delivered a
//!   complete request head this long after it started waiting for one. hyper starts that wait
//!   when a connection opens *and* when a kept-alive connection finishes a response, so an idle
//!   keep-alive connection is closed after this long too.
//! * [`ServeLimits::request_timeout`]: a request whose handler (including reading its body)
//!   has not produced a response by then is answered `408 Request Timeout`.
//! * [`ServeLimits::idle_timeout`]: a connection on which nothing was read or written for this
//!   long is closed, whatever it is doing (a client that stalls its body, or stops reading a
//!   response so the write never completes).
//! * [`ServeLimits::max_connections`]: at most this many connections are open at once; the
//!   listener stops accepting at the cap (new connections wait in the kernel's backlog) and
//!   resumes as soon as one closes.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use session_core::serve::{ServeLimits, serve};
//! # async fn run() -> std::io::Result<()> {
//! let app = Router::new().route("/", get(|| async { "hi" }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! # drop(stop);
//! // Serves until `stop` is sent (or dropped), then finishes the requests in flight.
//! serve(listener, app, ServeLimits::default(), async { let _ = stopped.await; }).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use http::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower_http::timeout::TimeoutLayer;

/// How long [`serve`], once shut down and no longer accepting, keeps its open connections
/// serving before it tells them to stop: a request already on its way over a fresh connection
/// is answered instead of being cut off (a balancer cannot retry a cut-off POST).
pub const SHUTDOWN_LINGER: Duration = Duration::from_secs(1);

/// Resource bounds for one listener. See the [module docs](self) for what each one bounds.
///
/// The defaults suit a public web app: `5s` to send a request head, `30s` per request, `60s`
/// without any I/O, `1024` connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeLimits {
    /// Longest wait for a complete request head (request line and headers), from the moment the
    /// connection opened or the previous response on it finished.
    pub header_read_timeout: Duration,
    /// Longest time a request may take, body read and handler included (`408` after it).
    pub request_timeout: Duration,
    /// Longest time a connection may go without reading or writing a byte.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

impl ServeLimits {
    /// Checks that every timeout and the connection cap are non-zero, and that the cap fits a
    /// semaphore.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        let zero =
            |field| crate::ConfigError::new("serve limit", field, "must be greater than zero");
        if self.header_read_timeout.is_zero() {
            return Err(zero("header_read_timeout"));
        }
        if self.request_timeout.is_zero() {
            return Err(zero("request_timeout"));
        }
        if self.idle_timeout.is_zero() {
            return Err(zero("idle_timeout"));
        }
        if self.max_connections == 0 {
            return Err(zero("max_connections"));
        }
        if self.max_connections > 1 << 20 {
            return Err(crate::ConfigError::new(
                "serve limit",
                "max_connections",
                "must be at most 1048576",
            ));
        }
        Ok(())
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then stops
/// accepting (serving the connections already waiting in the backlog), keeps serving open
/// connections for [`SHUTDOWN_LINGER`], then lets every one finish its request in flight
/// (idle ones close at once) and returns when all are closed.
///
/// Fails only if `limits` is invalid ([`ServeLimits::validate`]); accept errors (out of file
/// descriptors, a connection reset before it was accepted) are logged and retried after a
/// short pause, as `axum::serve` does.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    limits
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let router = router.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut at_cap_logged = false;
    loop {
        // A permit first: at the cap we stop accepting, so the excess waits in the backlog
        // instead of costing a task and buffers each.
        let permit = if let Ok(p) = permits.clone().try_acquire_owned() {
            at_cap_logged = false;
            p
        } else {
            if !at_cap_logged {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection limit reached; new connections wait until one closes"
                );
                at_cap_logged = true;
            }
            tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            serve_connection(stream, router, limits, stop).await;
            drop(permit);
        });
    }
    // Connections the kernel already completed but this loop has not accepted yet would be
    // reset when the listener closes, after a balancer may have sent them a request it then
    // cannot retry (a POST): accept and serve them too.
    // The accept syscall itself, not the reactor's view of readiness: under load the reactor
    // may not have seen the last arrivals yet. The listener closes when `backlog` drops.
    if let Ok(backlog) = listener.into_std() {
        while let Ok((stream, _)) = backlog.accept() {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            let Ok(stream) = stream
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(stream))
            else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (router, stop) = (router.clone(), stop_rx.clone());
            tokio::spawn(async move {
                serve_connection(stream, router, limits, stop).await;
                drop(permit);
            });
        }
    }
    // A connection accepted just before the shutdown may not have delivered its request yet;
    // told to stop now, hyper would close it unanswered. Let such requests arrive first.
    tokio::time::sleep(SHUTDOWN_LINGER).await;
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it closes: all of them back means all closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
    Ok(())
}

/// Serves one connection until it closes, times out or is told to stop.
async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ServeLimits,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .serve_connection(io, TowerToHyperService::new(router));
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection closed with an error");
                }
                return;
            }
            () = activity.idle_for(limits.idle_timeout) => {
                tracing::debug!("closing a connection idle for {:?}", limits.idle_timeout);
                return;
            }
            changed = stop.changed(), if !stopping => {
                // The sender dropping also means the server is gone: stop either way.
                let _ = changed;
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// When a connection last read or wrote a byte, in ms since it opened.
struct Activity {
    opened: tokio::time::Instant,
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: tokio::time::Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Resolves once no I/O happened for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.opened + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + limit;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// The socket, recording every successful read and write in [`Activity`].
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        res
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zeroes_are_named() {
        assert!(ServeLimits::default().validate().is_ok());
        let e = ServeLimits {
            max_connections: 0,
            ..ServeLimits::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "max_connections");
        let e = ServeLimits {
            header_read_timeout: Duration::ZERO,
            ..ServeLimits::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "header_read_timeout");
    }
}
