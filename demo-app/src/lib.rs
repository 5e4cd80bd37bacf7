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
pub mod metrics;
pub mod status;
pub mod track;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use config::{ConfigError, DemoConfig, SecretSource};

/// Starts one node and serves until `shutdown` completes, then shuts the backend down
/// gracefully (pending replication is flushed).
pub async fn serve(
    config: DemoConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ConfigError> {
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
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await;
    sampler.abort();
    tracing::info!("shutting down: flushing the session backend");
    backend.session.shutdown().await;
    served.map_err(|e| ConfigError(format!("server error: {e}")))
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
