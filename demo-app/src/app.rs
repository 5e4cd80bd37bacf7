//! The demo's HTTP contract: login, profile (read-only), cart, logout, metrics, health and a
//! status page. Every route works on every backend.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use demo_api::{AddItem, Login, valid_item, valid_sku, valid_user};
pub use demo_api::{ApiError, JsonBody};
use serde_json::{Value, json};
use session_core::{Session, SessionLayer};
use tower_layer::Stack;

use crate::backends::Backend;
use crate::config::DemoConfig;
use crate::metrics::HttpMetrics;
use crate::status;
use crate::track::TrackLayer;

/// Prefix of the session keys that hold cart lines (one key per SKU, so two tabs adding
/// different items concurrently both win: each is its own delta).
pub const CART_PREFIX: &str = "cart.";
pub use demo_api::MAX_QTY;

/// Shared state of one node.
#[derive(Debug)]
pub struct AppState {
    /// This node's id.
    pub node_id: u16,
    /// The backend.
    pub backend: Backend,
    /// Request metrics.
    pub metrics: Arc<HttpMetrics>,
    /// When the node started.
    pub started: Instant,
    /// Shutdown state: once it begins, `/readyz` and every app route answer 503.
    pub drain: Arc<crate::drain::DrainState>,
    /// Most cart lines one session may hold.
    pub cart_max_lines: usize,
}

/// Builds the app for a started backend: the app router (the operator routes included when
/// `admin` is enabled without an address of its own).
pub fn router(config: &DemoConfig, backend: Backend) -> (Router, Arc<AppState>) {
    let (app, admin, state) = routers(config, backend);
    let app = match admin {
        Some(admin) if config.admin.addr.is_none() => app.merge(admin),
        _ => app,
    };
    (app, state)
}

/// Builds the app router and, when `admin.enabled`, the operator router (`/`, `/status.json`,
/// `/metrics`), to be served on `admin.addr` or merged into the app's.
pub fn routers(config: &DemoConfig, backend: Backend) -> (Router, Option<Router>, Arc<AppState>) {
    let state = Arc::new(AppState {
        node_id: config.node_id,
        metrics: Arc::new(HttpMetrics::new()),
        started: Instant::now(),
        drain: Arc::new(crate::drain::DrainState::default()),
        cart_max_lines: config.cart_max_lines,
        backend,
    });
    let layer = SessionLayer::with_config(state.backend.session.clone(), config.layer_config())
        .with_request_costs(state.metrics.request_costs.clone());
    let app = Router::new()
        .route("/login", post(login))
        .route("/profile", get(profile))
        .route("/cart", get(cart))
        .route("/cart/items", post(add_item))
        .route("/cart/items/{sku}", delete(remove_item))
        .route("/logout", post(logout))
        .layer(layer)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { ApiError::no_such_route() })
        // One `layer` call for the three: each call boxes every route once more, and axum
        // clones a route's boxes on every request (one allocation per box per level), so three
        // calls cost ~10 allocations per request that one stacked layer does not.
        .layer(Stack::new(
            Stack::new(
                DefaultBodyLimit::max(config.max_body_bytes),
                crate::drain::DrainLayer::new(state.drain.clone()),
            ),
            TrackLayer::new(state.metrics.clone()),
        ))
        .with_state(state.clone());
    let admin = config.admin.enabled.then(|| {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/status.json", get(status_json))
            .route("/", get(status_page))
            .layer(TrackLayer::new(state.metrics.clone()))
            .with_state(state.clone())
    });
    (app, admin, state)
}

async fn user(session: &Session) -> Result<String, ApiError> {
    session
        .get::<String>("user")
        .await?
        .ok_or_else(ApiError::unauthorized)
}

async fn cart_lines(session: &Session) -> Result<BTreeMap<String, u32>, ApiError> {
    let mut lines = BTreeMap::new();
    for key in session.keys().await? {
        if let Some(sku) = key.strip_prefix(CART_PREFIX)
            && let Some(qty) = session.get::<u32>(&key).await?
        {
            lines.insert(sku.to_owned(), qty);
        }
    }
    Ok(lines)
}

async fn cart_json(state: &AppState, session: &Session) -> Result<Json<Value>, ApiError> {
    let user = user(session).await?;
    let items = cart_lines(session).await?;
    Ok(Json(
        json!({ "user": user, "node": state.node_id, "items": items }),
    ))
}

/// `POST /login {"user": "..."}`: starts a clean session holding only the user: whatever
/// session the browser had is destroyed (nothing of it, such as a cart or a value planted by
/// whoever set that cookie, carries over) and the new one gets a new id (fixation defence).
async fn login(
    State(state): State<Arc<AppState>>,
    session: Session,
    JsonBody(req): JsonBody<Login>,
) -> Result<Json<Value>, ApiError> {
    valid_user(&req.user)?;
    session.destroy();
    session.insert("user", &req.user)?;
    Ok(Json(json!({ "user": req.user, "node": state.node_id })))
}

/// `GET /profile`: read-only; never writes the session.
async fn profile(
    State(state): State<Arc<AppState>>,
    session: Session,
) -> Result<Json<Value>, ApiError> {
    let user = user(&session).await?;
    let mut cart_items = 0usize;
    session
        .for_each_key(|k| cart_items += usize::from(k.starts_with(CART_PREFIX)))
        .await?;
    Ok(Json(
        json!({ "user": user, "node": state.node_id, "cart_items": cart_items }),
    ))
}

/// `GET /cart`.
async fn cart(
    State(state): State<Arc<AppState>>,
    session: Session,
) -> Result<Json<Value>, ApiError> {
    cart_json(&state, &session).await
}

/// `POST /cart/items {"sku": "...", "qty": n}`: adds `qty` of `sku`.
async fn add_item(
    State(state): State<Arc<AppState>>,
    session: Session,
    JsonBody(req): JsonBody<AddItem>,
) -> Result<Json<Value>, ApiError> {
    valid_item(&req)?;
    user(&session).await?;
    let key = format!("{CART_PREFIX}{}", req.sku);
    let have = session.get::<u32>(&key).await?;
    if have.is_none() {
        let mut lines = 0usize;
        session
            .for_each_key(|k| lines += usize::from(k.starts_with(CART_PREFIX)))
            .await?;
        if lines >= state.cart_max_lines {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the cart holds at most {} lines", state.cart_max_lines),
            ));
        }
    }
    let have = have.unwrap_or(0);
    session.insert(&key, &have.saturating_add(req.qty).min(MAX_QTY))?;
    cart_json(&state, &session).await
}

/// `DELETE /cart/items/{sku}`.
async fn remove_item(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(sku): Path<String>,
) -> Result<Json<Value>, ApiError> {
    valid_sku(&sku)?;
    user(&session).await?;
    session.remove(&format!("{CART_PREFIX}{sku}"));
    cart_json(&state, &session).await
}

/// `POST /logout`: destroys the session on every node.
async fn logout(session: Session) -> StatusCode {
    session.destroy();
    StatusCode::NO_CONTENT
}

async fn healthz(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(
        json!({ "status": "ok", "node": state.node_id, "backend": state.backend.session.scheme() }),
    )
}

/// `GET /readyz`: 200 once the node holds what it should (instant copy: its initial sync is
/// done), 503 with the reason otherwise (joining, syncing, draining). The body also says whether
/// the node is *cluster safe* (every session it leads has all its live copies). Backends with a
/// shared store are ready as soon as they serve (they refused to start without their store).
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let draining = state.drain.is_draining();
    let body = match &state.backend.node {
        Some(node) => {
            let r = node.readiness();
            json!({
                "ready": r.ready && !draining,
                "cluster_safe": r.cluster_safe && !draining,
                "phase": if draining { "draining".into() } else { json!(r.phase) },
                "reason": if draining { "shutting down".to_string() } else { r.reason },
                "members_alive": r.members_alive,
                "peers_synced": r.peers_synced,
                "pending_updates": r.pending_updates,
                "under_replicated": r.under_replicated,
                "node": state.node_id,
            })
        }
        None => json!({
            "ready": !draining,
            "cluster_safe": !draining,
            "phase": if draining { "draining" } else { "ready" },
            "reason": if draining { "shutting down" } else { "" },
            "node": state.node_id,
        }),
    };
    let status = if body["ready"].as_bool() == Some(true) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match crate::metrics::render(&state) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn status_json(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(status::snapshot(&state))
}

async fn status_page(State(state): State<Arc<AppState>>) -> Html<String> {
    Html(status::page(&state))
}
