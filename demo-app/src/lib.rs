//! # demo-app
//!
//! One axum app that runs any session-sync backend from configuration, so the paper's four
//! schemes can be tried and measured on real clusters:
//!
//! * `demo-app serve [--config FILE]`: one node (the embedded default is a development
//!   instant-copy node that needs no external service);
//! * `demo-app cluster --nodes N --backend ...`: N node processes on free loopback ports;
//! * `demo-app compare`: every scheme as a real multi-node cluster under the same non-sticky
//!   workload, printed as the paper's Table 1 with measured numbers.
//!
//! The HTTP contract (every backend, every node): `POST /login {"user"}` (cycles the session
//! id), `GET /profile` (read-only), `GET /cart`, `POST /cart/items {"sku","qty"}`,
//! `DELETE /cart/items/{sku}`, `POST /logout`, `GET /metrics`, `GET /healthz`, `GET /` (status
//! page) and `GET /status.json`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = demo_app::config::DemoConfig::load(None)?; // embedded default + DEMO_* env
//! demo_app::serve(config, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod app;
pub mod backends;
pub mod charts;
pub mod cluster;
pub mod compare;
pub mod config;
pub mod drain;
pub mod metrics;
pub mod status;
pub mod track;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use config::{ConfigError, DemoConfig, SecretSource};

/// How a node's run ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeOutcome {
    /// For instant copy: what the drain on shutdown did.
    pub drain: Option<backend_instantcopy::DrainReport>,
}

impl ServeOutcome {
    /// The process exit code: 0, or 3 when a drain left sessions without a confirmed copy on
    /// another member (they survive only where an older copy survives).
    pub fn exit_code(&self) -> u8 {
        match self.drain {
            Some(d) if d.left_behind > 0 => 3,
            _ => 0,
        }
    }
}

/// Starts one node and serves until `shutdown` completes, then shuts the backend down
/// gracefully: `/readyz` turns 503, the app stops taking requests and finishes those in flight,
/// and an instant-copy node drains (tells its peers it leaves and hands off every session that
/// would otherwise lose a copy, within `drain_timeout`).
pub async fn serve(
    config: DemoConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ServeOutcome, ConfigError> {
    let (keys, source) = config::load_secrets(&config)?;
    match &source {
        SecretSource::Generated => tracing::warn!(
            "DEV MODE: using a random session secret (sessions die with this process and other \
             nodes cannot read them); set SESSION_SECRET for anything real"
        ),
        SecretSource::Env => {
            tracing::info!(keys = keys.len(), "session secrets from SESSION_SECRET")
        }
        SecretSource::File(p) => {
            tracing::info!(keys = keys.len(), file = %p.display(), "session secrets from file")
        }
    }
    if config.dev && !config.layer_config().secure {
        tracing::warn!("DEV MODE: session cookies are sent without `Secure` (plain http)");
    }
    let backend = backends::build(&config, &keys).await?;
    let (router, state) = app::router(&config, backend.clone());
    let listener = tokio::net::TcpListener::bind(config.app_addr)
        .await
        .map_err(|e| {
            ConfigError(format!(
                "cannot listen on app_addr {}: {e}",
                config.app_addr
            ))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| ConfigError(format!("app listener: {e}")))?;
    tracing::info!(
        node = config.node_id,
        backend = config.backend.kind.as_str(),
        %addr,
        "demo node listening"
    );
    let sampler = tokio::spawn(sample_loop(state.clone()));
    // The listener stays open through the drain, answering 503 + Retry-After, so nothing that
    // reaches this node during a shutdown is dropped; it closes once the backend is done.
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = drained_rx.await;
            })
            .into_future(),
    );
    shutdown.await;
    state.drain.begin();
    tracing::info!("shutting down: new requests get 503; finishing those in flight");
    state.drain.settled(Duration::from_secs(10)).await;
    let mut outcome = ServeOutcome::default();
    match &backend.node {
        Some(node) => {
            tracing::info!("draining: handing sessions off to the other members");
            let report = node.drain().await;
            tracing::info!(
                sessions = report.sessions,
                handed_off = report.handed_off,
                left_behind = report.left_behind,
                peers = report.peers,
                elapsed_ms = report.elapsed_ms,
                timed_out = report.timed_out,
                "drained"
            );
            outcome.drain = Some(report);
        }
        None => {
            tracing::info!("shutting down: flushing the session backend");
            backend.session.shutdown().await;
        }
    }
    let _ = drained_tx.send(());
    sampler.abort();
    match server.await {
        Ok(r) => r.map_err(|e| ConfigError(format!("server error: {e}")))?,
        Err(e) => return Err(ConfigError(format!("server task failed: {e}"))),
    }
    Ok(outcome)
}

/// Samples the backend counters every second for the status page's "recent" numbers.
async fn sample_loop(state: Arc<app::AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = state.started.elapsed().as_millis() as u64;
        state.metrics.sample(now, &state.backend.session.counters());
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
