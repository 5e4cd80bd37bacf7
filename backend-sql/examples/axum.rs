//! An axum app with sessions in PostgreSQL (or SQLite): every app node connects to the same
//! database; the first one creates the table.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo run -p backend-sql --example axum-sql
//! # or, with no server: DATABASE_URL='sqlite://sessions.db?mode=rwc'
//! curl -c jar -b jar --json '"alice"' localhost:3000/login; curl -c jar -b jar localhost:3000/
//! ```

use std::sync::Arc;

use axum::routing::{get, post};
use axum::{Json, Router};
use backend_sql::{SqlBackend, SqlConfig};
use session_core::{
    ExpiryPolicy, KeyRing, Secret, Session, SessionBackend, SessionConfig, SessionError,
    SessionLayer,
};

async fn login(session: Session, Json(user): Json<String>) -> Result<&'static str, SessionError> {
    session.insert("user", &user)?;
    session.cycle_id(); // a new id at login: one UPDATE of the row's id, in one transaction
    Ok("welcome\n")
}

async fn whoami(session: Session) -> Result<String, SessionError> {
    let user: Option<String> = session.get("user").await?;
    Ok(format!("{}\n", user.as_deref().unwrap_or("nobody")))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let keys = match std::env::var("SESSION_SECRET") {
        Ok(s) => KeyRing::new([Secret::from_encoded(&s)?])?,
        Err(_) => KeyRing::generate(),
    };
    let config = SqlConfig::new(url).with_table("example_sessions");
    let backend: Arc<dyn SessionBackend> =
        Arc::new(SqlBackend::connect(config, ExpiryPolicy::default(), &keys).await?);
    let app = Router::new()
        .route("/", get(whoami))
        .route("/login", post(login))
        .layer(SessionLayer::with_config(
            backend.clone(),
            SessionConfig::default().with_secure(false), // plain http on loopback
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("SQL sessions on http://127.0.0.1:3000");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    backend.shutdown().await; // stops the expiry cleanup task
    Ok(())
}
