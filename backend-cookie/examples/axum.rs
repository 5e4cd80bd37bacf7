//! An axum app whose sessions live, sealed, in the client's cookie: nothing to run beside it,
//! any number of app nodes sharing `SESSION_SECRET`.
//!
//! ```sh
//! cargo run -p backend-cookie --example axum-cookie
//! curl -c jar -b jar -X POST localhost:3000/cart/book; curl -c jar -b jar localhost:3000/cart
//! ```

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use backend_cookie::{CookieBackend, CookieConfig};
use session_core::{
    ExpiryPolicy, KeyRing, Secret, Session, SessionBackend, SessionConfig, SessionError,
    SessionLayer,
};

async fn add(session: Session, Path(sku): Path<String>) -> Result<&'static str, SessionError> {
    let mut cart: Vec<String> = session.get("cart").await?.unwrap_or_default();
    cart.push(sku);
    session.insert("cart", &cart)?;
    Ok("added\n")
}

async fn cart(session: Session) -> Result<String, SessionError> {
    let cart: Vec<String> = session.get("cart").await?.unwrap_or_default();
    Ok(format!("{cart:?}\n"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys = match std::env::var("SESSION_SECRET") {
        Ok(s) => KeyRing::new([Secret::from_encoded(&s)?])?,
        Err(_) => KeyRing::generate(),
    };
    // The layer's cookie name is bound into every seal: keep the two in step.
    let config = CookieConfig::default();
    let backend: Arc<dyn SessionBackend> =
        Arc::new(CookieBackend::new(&config, ExpiryPolicy::default(), &keys)?);
    let layer = SessionConfig::default()
        .with_cookie_name(config.cookie_name.clone())
        .with_secure(false); // plain http on loopback; keep Secure in production
    let app = Router::new()
        .route("/cart", get(cart))
        .route("/cart/{sku}", post(add))
        .layer(SessionLayer::with_config(backend, layer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("sealed-cookie sessions on http://127.0.0.1:3000");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
