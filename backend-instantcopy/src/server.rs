//! The cluster port: a separate axum listener that answers peers (fetch, push, ping, hello,
//! leave, sync, pull) and nobody else.
//!
//! Owns the server side of every peer request: the head first (a request without a valid head
//! tag, addressed to another node, outside the replay window or replayed gets 401 before a byte
//! of its body is read, and changes nothing; refusals are counted and logged at most once a
//! second), then the body (exactly the declared length, at most `max_body_bytes`, 413 above),
//! its seal, the decode (400 when an authenticated body is garbage), then the handler. The
//! listener itself is bounded by `cluster_*` timeouts and a connection cap
//! (`session_core::serve`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use session_core::now_millis;

use crate::node::Shared;
use crate::store::Applied;
use crate::wire::{
    self, AuthError, CONTENT_TYPE, FetchRequest, FetchResponse, HDR_AUTH, HDR_FROM, HDR_TIME,
    HDR_TO, Hello, HelloAck, Leave, PATH_FETCH, PATH_HELLO, PATH_LEAVE, PATH_PING, PATH_PULL,
    PATH_PUSH, PATH_SYNC, Pong, Pull, PullResponse, PushAck, PushBatch, RequestContext,
    RequestHeaders, SyncRequest, Update,
};

/// The cluster port's routes. A request's head is authenticated before its body is read;
/// bodies over `max_body_bytes` get 413 before they are read.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(PATH_FETCH, post(fetch))
        .route(PATH_PUSH, post(push))
        .route(PATH_PING, post(ping))
        .route(PATH_HELLO, post(hello))
        .route(PATH_LEAVE, post(leave))
        .route(PATH_SYNC, post(sync))
        .route(PATH_PULL, post(pull))
        .with_state(shared)
}

/// A request from a peer whose link is cut in a test.
enum Rejected {
    Cut,
}

impl Rejected {
    async fn into_response(self, shared: &Shared) -> Response {
        match self {
            Rejected::Cut => {
                // A cut link: the caller must see a timeout, not an answer.
                tokio::time::sleep(shared.config.request_timeout * 2).await;
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            }
        }
    }
}

/// Logs refused peer requests at most once a second (with how many were not logged), so a
/// flood of forged requests cannot flood the log; every one is still counted in
/// `auth_failures_total`.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl RefusalLog {
    /// `Some(events not logged since the last line)` when a line may be logged now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = now_millis();
        let last = self.last_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1_000
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    fn refused(&self, e: &AuthError, path: &str) {
        if let Some(suppressed) = self.allow() {
            tracing::warn!(error = %e, path, suppressed, "refused unauthenticated peer request");
        }
    }
}

/// Authenticates a request's head, then (only then) reads and opens its body: a host without
/// the cluster secret costs one short HMAC and a 401, never a buffered body or a decryption.
async fn open(
    shared: &Shared,
    path: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(RequestContext, Vec<u8>), Response> {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let me = shared.config.node_id;
    let refuse = |e: AuthError| {
        shared.metrics.auth_failures.inc();
        shared.refusals.refused(&e, path);
        (StatusCode::UNAUTHORIZED, "unauthenticated").into_response()
    };
    let Some(len) = h(header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok()) else {
        return Err((StatusCode::LENGTH_REQUIRED, "content-length required").into_response());
    };
    let now = now_millis();
    let head = shared
        .seal
        .check_head(
            "POST",
            path,
            RequestHeaders {
                from: h(HDR_FROM),
                to: h(HDR_TO),
                time: h(HDR_TIME),
                auth: h(HDR_AUTH),
            },
            len,
            now,
            shared.config.replay_window.as_millis() as u64,
            me,
            path == PATH_HELLO,
        )
        .map_err(refuse)?;
    if !shared.replays.first_time(head.nonce, now) {
        return Err(refuse(AuthError::Replay));
    }
    if shared.faults.drops_from(head.from) {
        return Err(Rejected::Cut.into_response(shared).await);
    }
    let Ok(len) = usize::try_from(len) else {
        return Err(StatusCode::PAYLOAD_TOO_LARGE.into_response());
    };
    if len > shared.config.max_body_bytes {
        return Err(StatusCode::PAYLOAD_TOO_LARGE.into_response());
    }
    let bytes = match axum::body::to_bytes(body, len).await {
        Ok(b) => b,
        Err(e) => return Err(bad_request(shared, "body", e)),
    };
    let (ctx, plain) = shared
        .seal
        .open_body("POST", path, &head, &bytes)
        .map_err(refuse)?;
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
    body: Body,
) -> Result<(RequestContext, T), Response> {
    let (ctx, plain) = open(shared, path, headers, body).await?;
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

async fn fetch(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let (ctx, req) =
        match accept::<FetchRequest>(&shared, PATH_FETCH, "fetch request", &headers, body).await {
            Ok(x) => x,
            Err(r) => return r,
        };
    shared.metrics.fetches_served.inc();
    reply(&shared, &ctx, &lookup(&shared, &req.id))
}

async fn push(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let (ctx, batch) =
        match accept::<PushBatch>(&shared, PATH_PUSH, "push batch", &headers, body).await {
            Ok(x) => x,
            Err(r) => return r,
        };
    let mut need_full = Vec::new();
    let mut gone = Vec::new();
    for u in &batch.updates {
        match u {
            Update::Destroy { id, until } => {
                shared.store.destroy(*id, *until);
                shared.forget_near(id);
            }
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

async fn ping(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let (ctx, ()) = match accept::<()>(&shared, PATH_PING, "ping", &headers, body).await {
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

async fn hello(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let (ctx, req) = match accept::<Hello>(&shared, PATH_HELLO, "hello", &headers, body).await {
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

async fn leave(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let (ctx, req) = match accept::<Leave>(&shared, PATH_LEAVE, "leave", &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if req.identity.id == ctx.from {
        tracing::info!(member = ?req.identity, "member is leaving");
        shared.members.member_left(&req.identity);
    }
    reply(&shared, &ctx, &())
}

async fn sync(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let (ctx, req) =
        match accept::<SyncRequest>(&shared, PATH_SYNC, "sync request", &headers, body).await {
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

async fn pull(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let (ctx, req) = match accept::<Pull>(&shared, PATH_PULL, "pull", &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if req.ids.len() > shared.config.max_batch {
        return bad_request(&shared, "pull", "more ids than max_batch");
    }
    // Answer in order until half the body limit is used (always at least one, unless it
    // alone is over the limit); the puller asks again for the ids not answered.
    let budget = shared.config.max_batch_bytes();
    let mut bytes = 0usize;
    let mut sessions = Vec::with_capacity(req.ids.len());
    for id in &req.ids {
        let found = lookup(&shared, id);
        let size = postcard::experimental::serialized_size(&found).unwrap_or(usize::MAX);
        if !sessions.is_empty() && bytes.saturating_add(size) > budget {
            break;
        }
        if size.saturating_add(1024) > shared.config.max_body_bytes {
            // Cannot be sent at all: answer it as absent rather than fail every pull of it.
            shared.replicator.oversized.inc();
            sessions.push(FetchResponse::NotFound);
            continue;
        }
        bytes = bytes.saturating_add(size);
        sessions.push(found);
    }
    let tombstones = req.ids[..sessions.len()]
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
