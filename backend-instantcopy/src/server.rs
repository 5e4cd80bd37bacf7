//! The cluster port: a separate axum listener that answers peers (fetch, push, ping, hello,
//! leave, sync, pull) and nobody else.
//!
//! Owns the server side of every peer request: authentication first (a request that does not
//! open under the cluster secret, is addressed to another node or is outside the replay window
//! gets 401 and changes nothing), then the decode (400 when an authenticated body is garbage),
//! then the handler.

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
    self, AuthError, CONTENT_TYPE, FetchRequest, FetchResponse, HDR_FROM, HDR_TIME, HDR_TO, Hello,
    HelloAck, Leave, PATH_FETCH, PATH_HELLO, PATH_LEAVE, PATH_PING, PATH_PULL, PATH_PUSH,
    PATH_SYNC, Pong, Pull, PullResponse, PushAck, PushBatch, RequestContext, RequestHeaders,
    SyncRequest, Update,
};

/// The cluster port's routes. Bodies over `max_body_bytes` get 413 before they are read.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.config.max_body_bytes;
    Router::new()
        .route(PATH_FETCH, post(fetch))
        .route(PATH_PUSH, post(push))
        .route(PATH_PING, post(ping))
        .route(PATH_HELLO, post(hello))
        .route(PATH_LEAVE, post(leave))
        .route(PATH_SYNC, post(sync))
        .route(PATH_PULL, post(pull))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared)
}

/// A request refused as unauthenticated (401), or from a peer whose link is cut in a test.
enum Rejected {
    Auth,
    Cut,
}

impl Rejected {
    async fn into_response(self, shared: &Shared) -> Response {
        match self {
            Rejected::Auth => (StatusCode::UNAUTHORIZED, "unauthenticated").into_response(),
            Rejected::Cut => {
                // A cut link: the caller must see a timeout, not an answer.
                tokio::time::sleep(shared.config.request_timeout * 2).await;
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            }
        }
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
    let (ctx, plain) = shared
        .seal
        .open_request(
            "POST",
            path,
            RequestHeaders {
                from: h(HDR_FROM),
                to: h(HDR_TO),
                time: h(HDR_TIME),
            },
            body,
            now_millis(),
            shared.config.replay_window.as_millis() as u64,
            me,
            path == PATH_HELLO,
        )
        .map_err(|e: AuthError| {
            shared.metrics.auth_failures.inc();
            tracing::warn!(error = %e, path, "refused unauthenticated peer request");
            Rejected::Auth
        })?;
    if shared.faults.drops_from(ctx.from) {
        return Err(Rejected::Cut);
    }
    if let Some(peer) = shared.members.get(ctx.from) {
        shared.members.member_answered(&peer);
    }
    Ok((ctx, plain))
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

/// Opens and decodes a request, or answers the refusal.
async fn accept<T: serde::de::DeserializeOwned>(
    shared: &Shared,
    path: &'static str,
    what: &'static str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(RequestContext, T), Response> {
    let (ctx, plain) = match open(shared, path, headers, body) {
        Ok(x) => x,
        Err(r) => return Err(r.into_response(shared).await),
    };
    match wire::decode(&plain) {
        Ok(req) => Ok((ctx, req)),
        Err(e) => Err(bad_request(shared, what, e)),
    }
}

fn lookup(shared: &Shared, id: &session_core::SessionId) -> FetchResponse {
    let now = now_millis();
    if shared.store.is_destroyed(id) {
        return FetchResponse::Destroyed;
    }
    shared
        .store
        .read(id, |s| {
            (!s.record().is_expired(now)).then(|| s.to_wire_full())
        })
        .flatten()
        .map_or(FetchResponse::NotFound, FetchResponse::Found)
}

async fn fetch(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (ctx, req) =
        match accept::<FetchRequest>(&shared, PATH_FETCH, "fetch request", &headers, &body).await {
            Ok(x) => x,
            Err(r) => return r,
        };
    shared.metrics.fetches_served.inc();
    reply(&shared, &ctx, &lookup(&shared, &req.id))
}

async fn push(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (ctx, batch) =
        match accept::<PushBatch>(&shared, PATH_PUSH, "push batch", &headers, &body).await {
            Ok(x) => x,
            Err(r) => return r,
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
    let (ctx, ()) = match accept::<()>(&shared, PATH_PING, "ping", &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
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

async fn hello(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (ctx, req) = match accept::<Hello>(&shared, PATH_HELLO, "hello", &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let me = shared.members.identity();
    if req.identity.id == me.id && req.identity.generation != me.generation {
        shared.members.duplicate_claims.inc();
        tracing::error!(
            claimant = ?req.identity,
            "a node tried to join with this node's id; it was told to refuse to start"
        );
        return reply(&shared, &ctx, &HelloAck::DuplicateId { holder: me });
    }
    // Every alive member, one with the joiner's id included: the joiner checks it directly
    // (a previous run of itself that is gone, or a live duplicate).
    let members = shared.members.alive_identities();
    reply(
        &shared,
        &ctx,
        &HelloAck::Welcome {
            identity: me,
            members,
        },
    )
}

async fn leave(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (ctx, req) = match accept::<Leave>(&shared, PATH_LEAVE, "leave", &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if req.identity.id == ctx.from {
        tracing::info!(member = ?req.identity, "member is leaving");
        shared.members.member_left(&req.identity);
    }
    reply(&shared, &ctx, &())
}

async fn sync(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (ctx, req) =
        match accept::<SyncRequest>(&shared, PATH_SYNC, "sync request", &headers, &body).await {
            Ok(x) => x,
            Err(r) => return r,
        };
    if shared.faults.refuses_sync_from(ctx.from) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match shared.snapshots.respond(&shared, ctx.from, &req) {
        Ok(message) => reply(
            &shared,
            &ctx,
            &crate::antientropy::response(&shared, message),
        ),
        Err(e) => bad_request(&shared, "sync message", e),
    }
}

async fn pull(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (ctx, req) = match accept::<Pull>(&shared, PATH_PULL, "pull", &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if req.ids.len() > shared.config.max_batch {
        return bad_request(&shared, "pull", "more ids than max_batch");
    }
    let sessions = req.ids.iter().map(|id| lookup(&shared, id)).collect();
    let tombstones = req
        .ids
        .iter()
        .map(|id| shared.store.tombstone_until(id).unwrap_or(0))
        .collect();
    reply(
        &shared,
        &ctx,
        &PullResponse {
            sessions,
            tombstones,
        },
    )
}
