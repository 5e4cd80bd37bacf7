//! The HTTP client side of the cluster port: one pooled keep-alive `reqwest` client, every
//! request sealed for its recipient, every response opened against the request it answers.
//!
//! Owns the calls a node makes to another (fetch, push, ping, hello, leave, sync, pull) and the
//! classification of failures: a *refused* connection (nothing listens at the address: that run
//! of the peer is dead) is told apart from a timeout (the peer may be alive but out of reach),
//! because only the first proves a copy lost. Redirects are never followed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use session_core::{SessionId, now_millis};

use crate::config::{Config, NodeId};
use crate::faults::Faults;
use crate::membership::{Identity, Peer};
use crate::wire::{
    self, CONTENT_TYPE, FetchRequest, FetchResponse, HDR_AUTH, HDR_FROM, HDR_TIME, HDR_TO, Hello,
    HelloAck, Leave, PATH_FETCH, PATH_HELLO, PATH_LEAVE, PATH_PING, PATH_PULL, PATH_PUSH,
    PATH_SYNC, PeerSeal, Pong, Pull, PullResponse, PushAck, PushBatch, SyncRequest, SyncResponse,
};

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The connection was refused: no process listens at the peer's address.
    #[error("peer refused the connection")]
    Refused,
    /// Could not connect in time, or the connection broke, or the request timed out.
    #[error("peer unreachable: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// The link to the peer is cut (fault injection in tests): behaves as a timeout.
    #[error("peer unreachable: link cut")]
    Cut,
    /// The peer answered with an unexpected status.
    #[error("peer answered HTTP {0}")]
    Status(u16),
    /// The response did not open (wrong secret, tampering, or not bound to our request).
    #[error("peer response failed authentication")]
    Auth,
    /// The request or response did not encode or decode.
    #[error("peer message malformed: {0}")]
    Decode(#[from] postcard::Error),
    /// The response exceeded the body limit.
    #[error("peer response over {0} bytes")]
    TooLarge(usize),
}

/// True when `e` (or one of its causes) is a refused TCP connection.
fn is_refused(e: &reqwest::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        src = s.source();
    }
    false
}

/// A call's outcome with the bytes it moved.
#[derive(Debug)]
pub(crate) struct Reply<T> {
    pub(crate) body: T,
    /// Sealed request bytes sent.
    pub(crate) sent: usize,
    /// Sealed response bytes received.
    pub(crate) received: usize,
}

/// Makes sealed calls to other members.
pub(crate) struct PeerClient {
    http: reqwest::Client,
    seal: Arc<PeerSeal>,
    me: NodeId,
    max_body: usize,
    connect_timeout: Duration,
    faults: Arc<Faults>,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient").field("me", &self.me).finish()
    }
}

/// Idle kept-alive connections per peer (see [`PeerClient::new`]).
const PEER_POOL_IDLE: usize = 64;

impl PeerClient {
    pub(crate) fn new(
        config: &Config,
        seal: Arc<PeerSeal>,
        faults: Arc<Faults>,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // Idle connections kept per peer: as many as a node may have calls in flight to one
            // peer (up to its concurrent requests that fetch, plus its pusher), so a burst is
            // served by connections that stay open instead of ones opened and closed per call.
            .pool_max_idle_per_host(PEER_POOL_IDLE)
            // Well inside the peer's `cluster_header_read_timeout` (which also closes idle
            // kept-alive connections), so this side drops an idle connection before the server
            // does and never sends a request into one that is being closed.
            .pool_idle_timeout(config.cluster_header_read_timeout / 2)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(PeerClient {
            http,
            seal,
            me: config.node_id,
            max_body: config.max_body_bytes,
            connect_timeout: config.connect_timeout,
            faults,
        })
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        to: NodeId,
        path: &str,
        req: &Req,
    ) -> Result<Reply<Resp>, CallError> {
        if to.0 != 0 && self.faults.drops_to(to) {
            // As a connection attempt into a dead link: nothing answers until the connect
            // timeout.
            tokio::time::sleep(self.connect_timeout).await;
            return Err(CallError::Cut);
        }
        let plain = wire::encode(req)?;
        let time = now_millis();
        let sealed = self
            .seal
            .seal_request("POST", path, self.me, to, time, &plain);
        let (nonce, sent) = (sealed.nonce, sealed.body.len());
        let mut resp = self
            .http
            .post(format!("http://{addr}{path}"))
            .header(HDR_FROM, self.me.0.to_string())
            .header(HDR_TO, to.0.to_string())
            .header(HDR_TIME, time.to_string())
            .header(HDR_AUTH, sealed.auth)
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(sealed.body)
            .send()
            .await
            .map_err(|e| {
                if is_refused(&e) {
                    CallError::Refused
                } else {
                    CallError::Unreachable(e)
                }
            })?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(CallError::Status(resp.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(CallError::Unreachable)? {
            if body.len() + chunk.len() > self.max_body {
                return Err(CallError::TooLarge(self.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        let received = body.len();
        let plain = self
            .seal
            .open_response(&nonce, &body)
            .map_err(|_| CallError::Auth)?;
        Ok(Reply {
            body: wire::decode(&plain)?,
            sent,
            received,
        })
    }

    /// Asks a peer for a session.
    pub(crate) async fn fetch(
        &self,
        peer: &Peer,
        id: SessionId,
    ) -> Result<FetchResponse, CallError> {
        self.call(peer.addr(), peer.id, PATH_FETCH, &FetchRequest { id })
            .await
            .map(|r| r.body)
    }

    /// Sends a push batch.
    pub(crate) async fn push(
        &self,
        peer: &Peer,
        batch: &PushBatch,
    ) -> Result<Reply<PushAck>, CallError> {
        self.call(peer.addr(), peer.id, PATH_PUSH, batch).await
    }

    /// Probes the node at `addr`, expected to be `to`.
    pub(crate) async fn ping(&self, addr: SocketAddr, to: NodeId) -> Result<Pong, CallError> {
        self.call(addr, to, PATH_PING, &()).await.map(|r| r.body)
    }

    /// Introduces this node to whoever answers at `addr` (a seed).
    pub(crate) async fn hello(
        &self,
        addr: SocketAddr,
        identity: &Identity,
    ) -> Result<HelloAck, CallError> {
        let hello = Hello {
            identity: identity.clone(),
        };
        self.call(addr, NodeId(0), PATH_HELLO, &hello)
            .await
            .map(|r| r.body)
    }

    /// Tells a peer this node is leaving.
    pub(crate) async fn leave(&self, peer: &Peer, identity: &Identity) -> Result<(), CallError> {
        let leave = Leave {
            identity: identity.clone(),
        };
        self.call::<_, ()>(peer.addr(), peer.id, PATH_LEAVE, &leave)
            .await
            .map(|_| ())
    }

    /// One round of the digest exchange.
    pub(crate) async fn sync(
        &self,
        peer: &Peer,
        req: &SyncRequest,
    ) -> Result<Reply<SyncResponse>, CallError> {
        self.call(peer.addr(), peer.id, PATH_SYNC, req).await
    }

    /// Fetches several whole sessions.
    pub(crate) async fn pull(
        &self,
        peer: &Peer,
        ids: Vec<SessionId>,
    ) -> Result<Reply<PullResponse>, CallError> {
        self.call(peer.addr(), peer.id, PATH_PULL, &Pull { ids })
            .await
    }
}
