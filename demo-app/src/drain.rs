//! The app side of a graceful shutdown. Once a shutdown begins, `serve` closes the app
//! listener (new connections are refused, which every load balancer retries on another node
//! whatever the method), and this layer answers any further request on an already-open
//! connection `503` with `Retry-After` and `Connection: close` instead of dropping it, while
//! the node drains; a separate admin port keeps answering health, readiness and metrics.
//! Counts the requests in flight so the shutdown can wait for them.
//!
//! A plain tower layer (an atomic load and an increment per request, no allocation), for the
//! reason `track` gives.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use tower_layer::Layer;
use tower_service::Service;

/// Whether the node is shutting down, and how many requests are in flight.
#[derive(Debug, Default)]
pub struct DrainState {
    draining: AtomicBool,
    in_flight: AtomicU64,
}

impl DrainState {
    /// True once a shutdown began.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Marks the shutdown begun: from now on new requests get 503.
    pub fn begin(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Waits (up to `max`) until no request is in flight.
    pub async fn settled(&self, max: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + max;
        while self.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

/// Paths that keep answering while the node drains (probes and observability).
const ALWAYS: &[&str] = &["/healthz", "/readyz", "/metrics", "/status.json"];

/// The layer.
#[derive(Clone, Debug)]
pub(crate) struct DrainLayer {
    state: Arc<DrainState>,
}

impl DrainLayer {
    /// Guards requests with `state`.
    pub(crate) fn new(state: Arc<DrainState>) -> Self {
        DrainLayer { state }
    }
}

impl<S> Layer<S> for DrainLayer {
    type Service = DrainGuard<S>;
    fn layer(&self, inner: S) -> DrainGuard<S> {
        DrainGuard {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service [`DrainLayer`] wraps around the app.
#[derive(Clone, Debug)]
pub(crate) struct DrainGuard<S> {
    inner: S,
    state: Arc<DrainState>,
}

fn shutting_down() -> Response {
    let mut res = Response::new(Body::from(
        r#"{"error":"this node is shutting down; retry on another"}"#,
    ));
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::RETRY_AFTER,
        HeaderValue::from(session_core::RETRY_AFTER_SECS),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// Decrements the in-flight count when the request is done (or dropped).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<DrainState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// The inner response future (`inner`, counted in flight by `guard` until done), or the
    /// immediate 503 `response` of a draining node.
    #[project = DrainProj]
    #[allow(missing_docs)] // the fields, documented above (the macro takes no field docs)
    pub enum DrainFuture<F> {
        /// Served.
        Serving {
            #[pin]
            inner: F,
            guard: InFlight,
        },
        /// Refused while draining.
        Refused {
            response: Option<Response>,
        },
    }
}

impl<F, E> Future for DrainFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            DrainProj::Serving { inner, .. } => inner.poll(cx),
            DrainProj::Refused { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_else(shutting_down)))
            }
        }
    }
}

impl<S> Service<Request> for DrainGuard<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = DrainFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if self.state.is_draining() && !ALWAYS.contains(&req.uri().path()) {
            return DrainFuture::Refused {
                response: Some(shutting_down()),
            };
        }
        self.state.in_flight.fetch_add(1, Ordering::AcqRel);
        DrainFuture::Serving {
            inner: self.inner.call(req),
            guard: InFlight(self.state.clone()),
        }
    }
}
