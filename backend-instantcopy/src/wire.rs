//! Peer messages and how they are sealed.
//!
//! Every peer request and response body is sealed with AES-256-GCM under a key derived from the
//! cluster secret (`KeyRing::derive("instantcopy/peer/v1")`): the first key seals, every key
//! opens, so the cluster secret rotates like the token secret. The associated data binds a
//! request to its method, path, sender node id, recipient node id and send time; a response is
//! bound to the nonce of the request it answers, so it cannot be replayed against another
//! request, and a captured request cannot be replayed to another member. A request whose seal
//! does not open, that names this node as its sender, that is addressed to another node, or
//! whose time is outside the replay window gets `401` and changes nothing. Holding the cluster
//! secret is what makes a node a member: there is no other list to check against.
//!
//! Membership gossip travels as UDP datagrams on the cluster port's number, sealed the same way
//! under `KeyRing::derive("instantcopy/gossip/v1")` (see [`PeerSeal::seal_datagram`]). Bodies are postcard-encoded (compact, no schema on the wire):
//! in `benches/instantcopy.rs` a push of one full 200 B session is 246 bytes against 650 in
//! JSON (32 sessions: 7.8 KB against 20.6 KB), and encoding plus decoding it takes about a
//! third of the time JSON takes. Seal overhead is 28 bytes (nonce and tag).

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Nonce, Payload};
use serde::{Deserialize, Serialize};
use session_core::{KeyRing, SessionId};

use crate::config::NodeId;
use crate::membership::Identity;
use crate::state::WireState;

/// Header naming the sending node.
pub const HDR_FROM: &str = "x-ic-from";
/// Header naming the node the request is for (`0`: whoever answers at that address, used only
/// by [`Hello`], which is how a joining node learns who its seeds are).
pub const HDR_TO: &str = "x-ic-to";
/// Header carrying the send time (ms since the epoch).
pub const HDR_TIME: &str = "x-ic-time";
/// Content type of sealed bodies.
pub const CONTENT_TYPE: &str = "application/x-instantcopy-sealed";

/// Path of the fetch endpoint.
pub const PATH_FETCH: &str = "/ic/v1/fetch";
/// Path of the push endpoint.
pub const PATH_PUSH: &str = "/ic/v1/push";
/// Path of the health probe.
pub const PATH_PING: &str = "/ic/v1/ping";
/// Path of the join handshake with a seed.
pub const PATH_HELLO: &str = "/ic/v1/hello";
/// Path of the "I am leaving" notice of a draining node.
pub const PATH_LEAVE: &str = "/ic/v1/leave";
/// Path of one round of the anti-entropy digest exchange.
pub const PATH_SYNC: &str = "/ic/v1/sync";
/// Path of a batch fetch of whole sessions (anti-entropy repair, sync on join).
pub const PATH_PULL: &str = "/ic/v1/pull";

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// "Send me session `id`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    /// The session.
    pub id: SessionId,
}

/// The answer to a [`FetchRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FetchResponse {
    /// The full state.
    Found(WireState),
    /// This node holds no live copy.
    NotFound,
    /// The session was destroyed (or its id cycled away); nobody should look further.
    Destroyed,
}

/// One replicated change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Update {
    /// A session's state: whole (create, repair) or the part a write changed.
    State(WireState),
    /// The session is destroyed; remember that until `until` (its absolute deadline) so late
    /// updates cannot resurrect it.
    Destroy {
        /// The session.
        id: SessionId,
        /// When the tombstone may be forgotten (ms).
        until: u64,
    },
}

impl Update {
    /// The session the update is about.
    pub fn id(&self) -> SessionId {
        match self {
            Update::State(s) => s.id,
            Update::Destroy { id, .. } => *id,
        }
    }
}

/// A batch of updates for one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushBatch {
    /// The updates, at most one per session (coalesced by the sender).
    pub updates: Vec<Update>,
}

/// The answer to a [`PushBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushAck {
    /// Partial updates the receiver could not apply because it holds no copy of the session:
    /// the sender replies with full states.
    pub need_full: Vec<SessionId>,
    /// Updates refused because the session is destroyed or expired on the receiver.
    pub gone: Vec<SessionId>,
}

/// A joining node introduces itself to a seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Who is joining.
    pub identity: Identity,
}

/// A seed's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloAck {
    /// The seed's own identity and every member it knows to be alive.
    Welcome {
        /// The answering node.
        identity: Identity,
        /// Members the answering node sees alive (its own identity excluded).
        members: Vec<Identity>,
    },
    /// The answering node *is* the node id the joiner claims: two live nodes cannot share an
    /// id, so the joiner must not start.
    DuplicateId {
        /// The live holder of the id.
        holder: Identity,
    },
}

/// A draining node tells a peer it is leaving (peers take it out of every placement at once,
/// without waiting for failure detection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leave {
    /// The identity that leaves.
    pub identity: Identity,
}

/// Which sessions an anti-entropy exchange compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncScope {
    /// What the two nodes should both hold: every session with `replication = "all"`; with
    /// `replication = k`, the sessions whose placement names both; plus every tombstone.
    Shared,
    /// Everything the responder holds (a draining node hands off what the responder lacks).
    Everything,
}

/// One round of the digest exchange (a negentropy range-reconciliation message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Identifies one reconciliation (several rounds), so the responder compares every round
    /// against the same snapshot.
    pub session: u64,
    /// What is compared.
    pub scope: SyncScope,
    /// The initiator's message (postcard writes a `Vec<u8>` as its length and raw bytes).
    pub message: Vec<u8>,
}

/// The responder's answer to a [`SyncRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    /// The responder's message (the initiator feeds it to its next round).
    pub message: Vec<u8>,
    /// The responder is safe: synced, in sync with every alive member since the last
    /// membership change, and every session it leads has all its live copies.
    pub safe: bool,
}

/// "Send me these sessions whole" (at most `max_batch` ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pull {
    /// The sessions.
    pub ids: Vec<SessionId>,
}

/// The answer to a [`Pull`]: one entry per id asked for, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullResponse {
    /// What the responder has of each session.
    pub sessions: Vec<FetchResponse>,
    /// Tombstones the responder holds for the ids asked for (`until`, ms), in the same order
    /// (0 where there is none).
    pub tombstones: Vec<u64>,
}

/// A health probe's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The answering node.
    pub node: NodeId,
    /// When it started (ms); a change means it restarted and lost its memory.
    pub started_at: u64,
    /// Sessions it holds.
    pub sessions: u64,
}

/// Why a sealed peer message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Missing or unparsable authentication headers.
    #[error("missing or malformed authentication headers")]
    Headers,
    /// The sender is this node's own id, or 0.
    #[error("sender {0} is not a peer")]
    UnknownSender(u16),
    /// The request is addressed to another node (a message captured on its way to one member
    /// and replayed to another).
    #[error("request addressed to node {0}, not to this node")]
    WrongRecipient(u16),
    /// The send time is outside the replay window.
    #[error("request time is outside the replay window")]
    Stale,
    /// No key opens the seal: wrong secret, tampering, or a body cut short.
    #[error("the seal does not open")]
    Seal,
}

/// Seals and opens peer bodies (and gossip datagrams) with the cluster key ring.
pub struct PeerSeal {
    ciphers: Vec<Aes256Gcm>,
    gossip: Vec<Aes256Gcm>,
}

impl std::fmt::Debug for PeerSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerSeal({} keys)", self.ciphers.len())
    }
}

/// Where a request came from and which nonce its response must be bound to.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext {
    /// The sending node.
    pub from: NodeId,
    /// The request's nonce.
    pub nonce: [u8; NONCE_LEN],
}

fn request_aad(method: &str, path: &str, from: NodeId, to: NodeId, time: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(36 + path.len());
    aad.extend_from_slice(b"instantcopy/req/v2\0");
    aad.extend_from_slice(method.as_bytes());
    aad.push(0);
    aad.extend_from_slice(path.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&from.0.to_be_bytes());
    aad.extend_from_slice(&to.0.to_be_bytes());
    aad.extend_from_slice(&time.to_be_bytes());
    aad
}

fn datagram_aad(from: NodeId, time: u64) -> [u8; 32] {
    let mut aad = [0u8; 32];
    let tag = b"instantcopy/gossip/v1\0";
    aad[..tag.len()].copy_from_slice(tag);
    aad[22..24].copy_from_slice(&from.0.to_be_bytes());
    aad[24..32].copy_from_slice(&time.to_be_bytes());
    aad
}

/// Bytes a sealed gossip datagram adds to foca's payload: version, sender, time, nonce, tag.
pub const DATAGRAM_OVERHEAD: usize = 1 + 2 + 8 + NONCE_LEN + TAG_LEN;
const DATAGRAM_VERSION: u8 = 1;

fn response_aad(nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut aad = b"instantcopy/resp/v1\0".to_vec();
    aad.extend_from_slice(nonce);
    aad
}

impl PeerSeal {
    /// Seals with keys derived from the cluster key ring.
    pub fn new(keys: &KeyRing) -> Self {
        let ciphers = |purpose: &str| {
            keys.derive(purpose)
                .keys()
                .iter()
                .filter_map(|k| Aes256Gcm::new_from_slice(k).ok())
                .collect()
        };
        PeerSeal {
            ciphers: ciphers("instantcopy/peer/v1"),
            gossip: ciphers("instantcopy/gossip/v1"),
        }
    }

    fn seal(&self, aad: &[u8], plain: &[u8], nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
        seal_into(&self.ciphers, aad, plain, nonce, &mut out);
        out
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<([u8; NONCE_LEN], Vec<u8>), AuthError> {
        open_with(&self.ciphers, aad, sealed)
    }

    /// Seals one gossip datagram from `from` sent at `time` (ms): `version ‖ from ‖ time ‖
    /// nonce ‖ AES-256-GCM(payload)`, with sender and time bound as associated data.
    pub fn seal_datagram(&self, from: NodeId, time: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(DATAGRAM_OVERHEAD + payload.len());
        out.push(DATAGRAM_VERSION);
        out.extend_from_slice(&from.0.to_be_bytes());
        out.extend_from_slice(&time.to_be_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        session_core::fill_random(&mut nonce);
        seal_into(
            &self.gossip,
            &datagram_aad(from, time),
            payload,
            nonce,
            &mut out,
        );
        out
    }

    /// Opens a gossip datagram: checks the version, the time against `now` and `window_ms`,
    /// and the seal. Returns the sender and the payload.
    pub fn open_datagram(
        &self,
        datagram: &[u8],
        now: u64,
        window_ms: u64,
    ) -> Result<(NodeId, Vec<u8>), AuthError> {
        if datagram.len() < DATAGRAM_OVERHEAD || datagram[0] != DATAGRAM_VERSION {
            return Err(AuthError::Headers);
        }
        let from = NodeId(u16::from_be_bytes([datagram[1], datagram[2]]));
        let mut t = [0u8; 8];
        t.copy_from_slice(&datagram[3..11]);
        let time = u64::from_be_bytes(t);
        if now.abs_diff(time) > window_ms {
            return Err(AuthError::Stale);
        }
        let (_, plain) = open_with(&self.gossip, &datagram_aad(from, time), &datagram[11..])?;
        Ok((from, plain))
    }
}

fn seal_into(
    ciphers: &[Aes256Gcm],
    aad: &[u8],
    plain: &[u8],
    nonce: [u8; NONCE_LEN],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&nonce);
    let Some(cipher) = ciphers.first() else {
        return;
    };
    let n = Nonce::<Aes256Gcm>::from(nonce);
    // Encryption only fails for plaintexts over 64 GiB, far above the body limit.
    if let Ok(ct) = cipher.encrypt(&n, Payload { msg: plain, aad }) {
        out.extend_from_slice(&ct);
    }
}

fn open_with(
    ciphers: &[Aes256Gcm],
    aad: &[u8],
    sealed: &[u8],
) -> Result<([u8; NONCE_LEN], Vec<u8>), AuthError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(AuthError::Seal);
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[..NONCE_LEN]);
    let n = Nonce::<Aes256Gcm>::from(nonce);
    let msg = &sealed[NONCE_LEN..];
    ciphers
        .iter()
        .find_map(|c| c.decrypt(&n, Payload { msg, aad }).ok())
        .map(|plain| (nonce, plain))
        .ok_or(AuthError::Seal)
}

/// The authentication headers of a peer request, as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestHeaders<'a> {
    /// `x-ic-from`.
    pub from: Option<&'a str>,
    /// `x-ic-to`.
    pub to: Option<&'a str>,
    /// `x-ic-time`.
    pub time: Option<&'a str>,
}

impl PeerSeal {
    /// Seals a request body from `from` to `to` (`NodeId(0)`: whoever answers, for
    /// [`Hello`] only); returns the nonce (to open the response with) and the sealed body.
    pub fn seal_request(
        &self,
        method: &str,
        path: &str,
        from: NodeId,
        to: NodeId,
        time: u64,
        body: &[u8],
    ) -> ([u8; NONCE_LEN], Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        session_core::fill_random(&mut nonce);
        let aad = request_aad(method, path, from, to, time);
        (nonce, self.seal(&aad, body, nonce))
    }

    /// Opens a request body received by node `me`: the sender must not be 0 or `me` (except
    /// for a `hello`, where a sender claiming `me` is a duplicate id to report), the recipient
    /// must be `me` (or 0 for a `hello`), and the time within `window_ms` of `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn open_request(
        &self,
        method: &str,
        path: &str,
        headers: RequestHeaders<'_>,
        body: &[u8],
        now: u64,
        window_ms: u64,
        me: NodeId,
        hello: bool,
    ) -> Result<(RequestContext, Vec<u8>), AuthError> {
        let parse16 = |v: Option<&str>| v.and_then(|s| s.parse::<u16>().ok());
        let from = parse16(headers.from).ok_or(AuthError::Headers)?;
        let to = parse16(headers.to).ok_or(AuthError::Headers)?;
        let time: u64 = headers
            .time
            .and_then(|s| s.parse().ok())
            .ok_or(AuthError::Headers)?;
        let (from, to) = (NodeId(from), NodeId(to));
        if from.0 == 0 || (from == me && !hello) {
            return Err(AuthError::UnknownSender(from.0));
        }
        if to != me && !(hello && to.0 == 0) {
            return Err(AuthError::WrongRecipient(to.0));
        }
        if now.abs_diff(time) > window_ms {
            return Err(AuthError::Stale);
        }
        let aad = request_aad(method, path, from, to, time);
        let (nonce, plain) = self.open(&aad, body)?;
        Ok((RequestContext { from, nonce }, plain))
    }

    /// Seals a response to the request identified by `ctx`.
    pub fn seal_response(&self, ctx: &RequestContext, body: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        session_core::fill_random(&mut nonce);
        self.seal(&response_aad(&ctx.nonce), body, nonce)
    }

    /// Opens the response to the request whose nonce was `request_nonce`.
    pub fn open_response(
        &self,
        request_nonce: &[u8; NONCE_LEN],
        sealed: &[u8],
    ) -> Result<Vec<u8>, AuthError> {
        self.open(&response_aad(request_nonce), sealed)
            .map(|(_, p)| p)
    }
}

/// Encodes a message with postcard.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(msg)
}

/// Decodes a postcard message (never panics on garbage).
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::Secret;

    fn seal() -> PeerSeal {
        PeerSeal::new(
            &KeyRing::new([Secret::new(b"cluster secret for wire unit tests!!".to_vec()).unwrap()])
                .unwrap(),
        )
    }

    fn hdrs<'a>(from: &'a str, to: &'a str, time: &'a str) -> RequestHeaders<'a> {
        RequestHeaders {
            from: Some(from),
            to: Some(to),
            time: Some(time),
        }
    }

    #[test]
    fn request_round_trip_and_every_binding() {
        let s = seal();
        let me = NodeId(3);
        let (nonce, body) = s.seal_request("POST", PATH_PUSH, NodeId(2), me, 1000, b"hello");
        let open = |m: &str, p: &str, h: RequestHeaders<'_>, b: &[u8], now: u64| {
            s.open_request(m, p, h, b, now, 500, me, false)
        };
        let (ctx, plain) = open("POST", PATH_PUSH, hdrs("2", "3", "1000"), &body, 1200).unwrap();
        assert_eq!(plain, b"hello");
        assert_eq!(ctx.from, NodeId(2));
        assert_eq!(ctx.nonce, nonce);
        for (m, p, h) in [
            ("POST", PATH_FETCH, hdrs("2", "3", "1000")),
            ("PUT", PATH_PUSH, hdrs("2", "3", "1000")),
            ("POST", PATH_PUSH, hdrs("4", "3", "1000")),
            ("POST", PATH_PUSH, hdrs("2", "3", "1001")),
        ] {
            assert_eq!(
                open(m, p, h, &body, 1200).unwrap_err(),
                AuthError::Seal,
                "{m} {p} {h:?}"
            );
        }
        assert_eq!(
            open("POST", PATH_PUSH, hdrs("2", "3", "1000"), &body, 2000).unwrap_err(),
            AuthError::Stale
        );
        // A request for node 3 replayed to node 4 (which shares the secret) is refused.
        assert_eq!(
            s.open_request(
                "POST",
                PATH_PUSH,
                hdrs("2", "3", "1000"),
                &body,
                1200,
                500,
                NodeId(4),
                false
            )
            .unwrap_err(),
            AuthError::WrongRecipient(3)
        );
        // Claiming the recipient's own id, or id 0, as the sender is refused.
        assert_eq!(
            open("POST", PATH_PUSH, hdrs("3", "3", "1000"), &body, 1200).unwrap_err(),
            AuthError::UnknownSender(3)
        );
        assert_eq!(
            open("POST", PATH_PUSH, hdrs("0", "3", "1000"), &body, 1200).unwrap_err(),
            AuthError::UnknownSender(0)
        );
        let missing = RequestHeaders {
            from: None,
            ..hdrs("2", "3", "1000")
        };
        assert_eq!(
            open("POST", PATH_PUSH, missing, &body, 1200).unwrap_err(),
            AuthError::Headers
        );
        let mut tampered = body.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            open("POST", PATH_PUSH, hdrs("2", "3", "1000"), &tampered, 1200).unwrap_err(),
            AuthError::Seal
        );
        assert_eq!(
            open("POST", PATH_PUSH, hdrs("2", "3", "1000"), &body[..10], 1200).unwrap_err(),
            AuthError::Seal
        );
        // Another cluster's secret.
        let other = PeerSeal::new(&KeyRing::generate());
        assert!(
            other
                .open_request(
                    "POST",
                    PATH_PUSH,
                    hdrs("2", "3", "1000"),
                    &body,
                    1200,
                    500,
                    me,
                    false
                )
                .is_err()
        );
    }

    #[test]
    fn hello_may_be_addressed_to_anyone_and_may_claim_the_recipients_id() {
        let s = seal();
        let (_, body) = s.seal_request("POST", PATH_HELLO, NodeId(3), NodeId(0), 10, b"hi");
        let (ctx, _) = s
            .open_request(
                "POST",
                PATH_HELLO,
                hdrs("3", "0", "10"),
                &body,
                10,
                500,
                NodeId(3),
                true,
            )
            .unwrap();
        assert_eq!(
            ctx.from,
            NodeId(3),
            "the duplicate-id check needs to see it"
        );
        // Anything but a hello must be addressed to this node.
        let (_, body) = s.seal_request("POST", PATH_PUSH, NodeId(2), NodeId(0), 10, b"x");
        assert_eq!(
            s.open_request(
                "POST",
                PATH_PUSH,
                hdrs("2", "0", "10"),
                &body,
                10,
                500,
                NodeId(3),
                false
            )
            .unwrap_err(),
            AuthError::WrongRecipient(0)
        );
    }

    #[test]
    fn datagrams_open_only_with_the_secret_in_the_window() {
        let s = seal();
        let d = s.seal_datagram(NodeId(5), 1_000, b"swim");
        assert_eq!(d.len(), DATAGRAM_OVERHEAD + 4);
        assert_eq!(
            s.open_datagram(&d, 1_200, 500).unwrap(),
            (NodeId(5), b"swim".to_vec())
        );
        assert_eq!(
            s.open_datagram(&d, 9_000, 500).unwrap_err(),
            AuthError::Stale
        );
        let mut forged = d.clone();
        forged[2] ^= 1; // claim another sender
        assert_eq!(
            s.open_datagram(&forged, 1_200, 500).unwrap_err(),
            AuthError::Seal
        );
        let other = PeerSeal::new(&KeyRing::generate());
        assert_eq!(
            other.open_datagram(&d, 1_200, 500).unwrap_err(),
            AuthError::Seal
        );
        assert_eq!(
            s.open_datagram(&d[..5], 1_200, 500).unwrap_err(),
            AuthError::Headers
        );
        // Request keys and gossip keys are distinct.
        let (_, req) = s.seal_request("POST", PATH_PING, NodeId(5), NodeId(1), 1_000, b"swim");
        let mut as_datagram = vec![1u8];
        as_datagram.extend_from_slice(&5u16.to_be_bytes());
        as_datagram.extend_from_slice(&1_000u64.to_be_bytes());
        as_datagram.extend_from_slice(&req);
        assert!(s.open_datagram(&as_datagram, 1_000, 500).is_err());
    }

    #[test]
    fn responses_are_bound_to_their_request() {
        let s = seal();
        let (n1, b1) = s.seal_request("POST", PATH_FETCH, NodeId(2), NodeId(1), 1, b"a");
        let (n2, _) = s.seal_request("POST", PATH_FETCH, NodeId(2), NodeId(1), 1, b"b");
        let (ctx, _) = s
            .open_request(
                "POST",
                PATH_FETCH,
                hdrs("2", "1", "1"),
                &b1,
                1,
                10,
                NodeId(1),
                false,
            )
            .unwrap();
        let resp = s.seal_response(&ctx, b"answer");
        assert_eq!(s.open_response(&n1, &resp).unwrap(), b"answer");
        assert_eq!(s.open_response(&n2, &resp).unwrap_err(), AuthError::Seal);
    }

    #[test]
    fn garbage_never_panics_the_decoder() {
        for bytes in [&b""[..], b"\xff\xff\xff\xff", b"\x01\x02\x03", &[0u8; 100]] {
            let _ = decode::<PushBatch>(bytes);
            let _ = decode::<FetchRequest>(bytes);
            let _ = decode::<FetchResponse>(bytes);
            let _ = decode::<HelloAck>(bytes);
            let _ = decode::<SyncRequest>(bytes);
            let _ = decode::<PullResponse>(bytes);
        }
    }
}
