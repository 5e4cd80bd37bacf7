// The demo's three routes as a tower-sessions app. Included by `peers/mod.rs` into `ts15`
// (tower-sessions 0.15, MemoryStore) and `ts14` (tower-sessions 0.14, which its Redis and
// Postgres stores are built on) with `ts` naming the release, so both run the same code.

use std::collections::BTreeMap;

use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::NODE;
use demo_api::{AddItem, ApiError, JsonBody, Login, MAX_QTY, valid_item, valid_user};

/// The cart lives under one key as a map, the way a tower-sessions app keeps it (the stores
/// write whole records, so one key per line would buy nothing).
const CART: &str = "cart";

fn store_err(e: ts::session::Error) -> ApiError {
    ApiError::internal(e)
}

/// The app over `store`: cookie `sid` (not `Secure`, plain-http loopback), `SameSite=Lax`,
/// 30-minute idle expiry (the demo's defaults), unmodified sessions not re-saved (the
/// library's default, which is also its fastest setting).
pub fn router<S: ts::SessionStore + Clone>(store: S) -> Router {
    let layer = ts::SessionManagerLayer::new(store)
        .with_name("sid")
        .with_secure(false)
        .with_same_site(ts::cookie::SameSite::Lax)
        .with_expiry(ts::Expiry::OnInactivity(
            ts::cookie::time::Duration::minutes(30),
        ));
    Router::new()
        .route("/login", post(login))
        .route("/profile", get(profile))
        .route("/cart/items", post(add_item))
        .layer(layer)
        .route("/healthz", get(super::healthz))
}

/// `POST /login`: stores the user and cycles the id (as the demo does).
async fn login(
    session: ts::Session,
    JsonBody(req): JsonBody<Login>,
) -> Result<Json<Value>, ApiError> {
    valid_user(&req.user)?;
    session.insert("user", &req.user).await.map_err(store_err)?;
    session.cycle_id().await.map_err(store_err)?;
    Ok(Json(json!({ "user": req.user, "node": NODE })))
}

async fn user(session: &ts::Session) -> Result<String, ApiError> {
    session
        .get::<String>("user")
        .await
        .map_err(store_err)?
        .ok_or_else(ApiError::unauthorized)
}

async fn cart(session: &ts::Session) -> Result<BTreeMap<String, u32>, ApiError> {
    Ok(session
        .get::<BTreeMap<String, u32>>(CART)
        .await
        .map_err(store_err)?
        .unwrap_or_default())
}

/// `GET /profile`: read-only.
async fn profile(session: ts::Session) -> Result<Json<Value>, ApiError> {
    let user = user(&session).await?;
    let cart_items = cart(&session).await?.len();
    Ok(Json(
        json!({ "user": user, "node": NODE, "cart_items": cart_items }),
    ))
}

/// `POST /cart/items`: reads the cart, adds the line, writes the cart back.
async fn add_item(
    session: ts::Session,
    JsonBody(req): JsonBody<AddItem>,
) -> Result<Json<Value>, ApiError> {
    valid_item(&req)?;
    let user = user(&session).await?;
    let mut items = cart(&session).await?;
    let line = items.entry(req.sku).or_insert(0);
    *line = line.saturating_add(req.qty).min(MAX_QTY);
    session.insert(CART, &items).await.map_err(store_err)?;
    Ok(Json(json!({ "user": user, "node": NODE, "items": items })))
}
