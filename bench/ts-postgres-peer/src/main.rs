//! `ts-postgres-peer --addr A --database-url URL --pg-schema S`: the demo's three benchmark
//! routes on tower-sessions 0.14 with `tower-sessions-sqlx-store` 0.15's `PostgresStore` (a pool
//! of 10, the demo SQL backend's default), for `bench compare-peers`. The app code is the
//! bench crate's own (`bench/src/peers`), included here so both builds serve identical routes,
//! with the demo's bodies, validation and JSON errors from the `demo-api` crate.
//! Stops on SIGTERM or Ctrl-C; the harness drops the schema afterwards.

use std::net::SocketAddr;

use axum::Json;
use serde_json::{Value, json};
use tower_sessions_sqlx_store::sqlx::postgres::PgPoolOptions;

/// The node id the app reports (a single-node app, like the bench's other peers).
const NODE: u16 = 1;

/// The demo's routes over tower-sessions 0.14.
mod ts14 {
    #![allow(unreachable_pub)]
    use tower_sessions as ts;
    include!("../../src/peers/ts_app.rs");
}

/// `GET /healthz`.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

struct Args {
    addr: SocketAddr,
    database_url: String,
    schema: String,
}

fn parse_args() -> Result<Args, String> {
    let mut addr = None;
    let mut database_url = None;
    let mut schema = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => {
                addr = Some(
                    value
                        .parse::<SocketAddr>()
                        .map_err(|e| format!("--addr {value:?}: {e}"))?,
                )
            }
            "--database-url" => database_url = Some(value),
            "--pg-schema" => schema = Some(value),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        addr: addr.ok_or("--addr is required")?,
        database_url: database_url.ok_or("--database-url is required")?,
        schema: schema.ok_or("--pg-schema is required")?,
    })
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

async fn run(args: Args) -> Result<(), String> {
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect(&args.database_url)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.database_url))?;
    let store = tower_sessions_sqlx_store::PostgresStore::new(pool.clone())
        .with_schema_name(&args.schema)?;
    store
        .migrate()
        .await
        .map_err(|e| format!("creating the session table: {e}"))?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    let served = axum::serve(listener, ts14::router(store))
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| format!("server error: {e}"));
    pool.close().await;
    served
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = match parse_args() {
        Ok(args) => run(args).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ts-postgres-peer: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
