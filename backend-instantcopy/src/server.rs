//! The cluster port: a separate axum listener that answers peers (fetch, push, ping) and
//! nobody else.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use session_core::now_millis;

use crate::node::Shared;
use crate::store::Applied;
use crate::wire::{
    self, AuthError, CONTENT_TYPE, FetchRequest, FetchResponse, HDR_FROM, HDR_TIME, PATH_FETCH,
    PATH_PING, PATH_PUSH, Pong, PushAck, PushBatch, RequestContext, Update,
};

/// The cluster port's routes. Bodies over `max_body_bytes` get 413 before they are read.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.config.max_body_bytes;
    Router::new()
        .route(PATH_FETCH, post(fetch))
        .route(PATH_PUSH, post(push))
        .route(PATH_PING, post(ping))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared)
}

/// A request refused as unauthenticated (401).
struct Rejected;

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        (StatusCode::UNAUTHORIZED, "unauthenticated").into_response()
    }
}

fn open(
    shared: &Shared,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(RequestContext, Vec<u8>), Rejected> {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let me = shared.config.node_id;
    shared
        .seal
        .open_request(
            "POST",
            path,
            h(HDR_FROM),
            h(HDR_TIME),
            body,
            now_millis(),
            shared.config.replay_window.as_millis() as u64,
            |n| n != me && shared.peers.is_member(n),
        )
        .map_err(|e: AuthError| {
            shared.metrics.auth_failures.inc();
            tracing::warn!(error = %e, path, "refused unauthenticated peer request");
            Rejected
        })
}

fn bad_request(shared: &Shared, what: &str, e: impl std::fmt::Display) -> Response {
    shared.metrics.bad_requests.inc();
    tracing::warn!(error = %e, what, "malformed peer request");
    (StatusCode::BAD_REQUEST, format!("malformed {what}")).into_response()
}

fn reply<T: serde::Serialize>(shared: &Shared, ctx: &RequestContext, msg: &T) -> Response {
    match wire::encode(msg) {
        Ok(plain) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, CONTENT_TYPE)],
            shared.seal.seal_response(ctx, &plain),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding a peer response failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn fetch(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (ctx, plain) = match open(&shared, PATH_FETCH, &headers, &body) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let req: FetchRequest = match wire::decode(&plain) {
        Ok(r) => r,
        Err(e) => return bad_request(&shared, "fetch request", e),
    };
    shared.metrics.fetches_served.inc();
    let now = now_millis();
    let answer = if shared.store.is_destroyed(&req.id) {
        FetchResponse::Destroyed
    } else {
        shared
            .store
            .read(&req.id, |s| {
                (!s.record().is_expired(now)).then(|| s.to_wire_full())
            })
            .flatten()
            .map_or(FetchResponse::NotFound, FetchResponse::Found)
    };
    reply(&shared, &ctx, &answer)
}

async fn push(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (ctx, plain) = match open(&shared, PATH_PUSH, &headers, &body) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let batch: PushBatch = match wire::decode(&plain) {
        Ok(b) => b,
        Err(e) => return bad_request(&shared, "push batch", e),
    };
    let mut need_full = Vec::new();
    let mut gone = Vec::new();
    for u in &batch.updates {
        match u {
            Update::Destroy { id, until } => shared.store.destroy(*id, *until),
            Update::State(w) => {
                shared.observe(w);
                match shared.store.apply(w) {
                    Applied::Merged(o) => shared.metrics.conflicts.add(u64::from(o.conflicts)),
                    Applied::NeedFull => need_full.push(w.id),
                    Applied::Ignored => gone.push(w.id),
                }
            }
        }
    }
    shared
        .metrics
        .updates_received
        .add(batch.updates.len() as u64);
    reply(&shared, &ctx, &PushAck { need_full, gone })
}

async fn ping(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (ctx, plain) = match open(&shared, PATH_PING, &headers, &body) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    if let Err(e) = wire::decode::<()>(&plain) {
        return bad_request(&shared, "ping", e);
    }
    reply(
        &shared,
        &ctx,
        &Pong {
            node: shared.config.node_id,
            started_at: shared.started_at,
            sessions: shared.store.len() as u64,
        },
    )
}
