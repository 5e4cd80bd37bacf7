//! # demo-app
//!
//! One axum app that runs any session-sync backend from configuration, so the paper's four
//! schemes can be tried and measured on real clusters:
//!
//! * `demo-app serve [--config FILE]`: one node (the embedded default is a development
//!   instant-copy node that needs no external service);
//! * `demo-app cluster --nodes N --backend ...`: N node processes on free loopback ports
//!   (the measured comparison, `bench table1`, runs every scheme as such a cluster).
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
pub mod cluster;
pub mod config;
mod drain;
mod metrics;
mod status;
mod track;

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
    let keys = config::load_keys(&config)?;
    match &keys.source {
        SecretSource::Generated => tracing::warn!(
            "DEV MODE: using a random session secret (sessions die with this process and other \
             nodes cannot read them); set SESSION_SECRET for anything real"
        ),
        SecretSource::Env | SecretSource::Derived => {
            tracing::info!(
                keys = keys.session.len(),
                "session secrets from SESSION_SECRET"
            )
        }
        SecretSource::File(p) => {
            tracing::info!(keys = keys.session.len(), file = %p.display(), "session secrets from file")
        }
    }
    if config.backend.kind == config::BackendKind::Instantcopy {
        match &keys.cluster_source {
            SecretSource::Derived => {
                tracing::info!(
                    "cluster secret derived from the session secret (CLUSTER_SECRET unset)"
                )
            }
            _ => tracing::info!(
                keys = keys.cluster.len(),
                "cluster secrets set on their own"
            ),
        }
    }
    if config.dev && !config.layer_config().secure {
        tracing::warn!("DEV MODE: session cookies are sent without `Secure` (plain http)");
    }
    if !config.dev
        && let Some(store) = config.plaintext_store()
    {
        // validate() refused this unless the operator opted out.
        tracing::warn!(
            "INSECURE: {store}; anyone on the network path can read and change sessions \
             (allow_plaintext_store = true)"
        );
    }
    let backend = backends::build(&config, &keys).await?;
    let (router, admin, state) = app::routers(&config, backend.clone());
    let bind = |addr: std::net::SocketAddr, key: &'static str| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| ConfigError(format!("cannot listen on {key} {addr}: {e}")))
    };
    let listener = bind(config.app_addr, "app_addr").await?;
    let addr = listener
        .local_addr()
        .map_err(|e| ConfigError(format!("app listener: {e}")))?;
    let (router, admin) = match (admin, config.admin.addr) {
        (Some(admin), None) => (router.merge(admin), None),
        (Some(admin), Some(a)) => (router, Some((bind(a, "admin.addr").await?, admin))),
        (None, _) => (router, None),
    };
    tracing::info!(
        node = config.node_id,
        backend = config.backend.kind.as_str(),
        %addr,
        admin = ?admin.as_ref().and_then(|(l, _)| l.local_addr().ok()),
        "demo node listening"
    );
    let sampler = tokio::spawn(sample_loop(state.clone()));
    // On a shutdown the app listener closes at once: a load balancer's next connection is
    // refused, which every balancer retries on another node whatever the method (nothing was
    // sent), where a 503 to a POST would reach the user. Requests already on an open connection
    // finish, later ones on it get 503 + Retry-After + Connection: close (DrainLayer). The
    // admin listener, if separate, keeps answering /metrics and /readyz until the backend
    // is drained.
    let (app_stop_tx, app_stop_rx) = tokio::sync::watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let limits = config.http.limits();
    let admin_task = admin.map(|(listener, admin)| {
        tokio::spawn(session_core::serve::serve(
            listener,
            admin,
            limits,
            stopped(stop_rx.clone()),
        ))
    });
    let server = tokio::spawn(session_core::serve::serve(
        listener,
        router,
        limits,
        stopped(app_stop_rx),
    ));
    shutdown.await;
    state.drain.begin();
    let _ = app_stop_tx.send(true);
    tracing::info!(
        "shutting down: app port closed to new connections; finishing requests in flight"
    );
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
    let _ = stop_tx.send(true);
    sampler.abort();
    if let Some(t) = admin_task {
        let _ = t.await;
    }
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
