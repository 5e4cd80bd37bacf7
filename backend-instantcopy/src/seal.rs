//! Sealing peer messages: who may talk to a member, and what a captured message is worth.
//!
//! Owns the cluster-channel cryptography. Every peer request and response body is sealed with
//! AES-256-GCM under a key derived from the cluster secret (`KeyRing::derive("instantcopy/peer/v1")`):
//! the first key seals, every key opens, so the cluster secret rotates like the token secret.
//! The associated data binds a request to its method, path, sender node id, recipient node id
//! and send time; a response is bound to the nonce of the request it answers.
//!
//! A request also carries a **head tag** ([`HDR_AUTH`]): HMAC-SHA256/128 under a key of its
//! own (`instantcopy/head/v1`) over method, path, sender, recipient, time, the sealed body's
//! length and its nonce. A receiver checks it before it reads a byte of the body, so a host
//! without the secret cannot make a member buffer or decrypt anything: its request costs one
//! short HMAC and a `401`. The nonce also keys the receiver's replay cache
//! ([`ReplayCache`](crate::replay::ReplayCache)).
//!
//! Gossip datagrams are sealed the same way under `KeyRing::derive("instantcopy/gossip/v1")`
//! ([`PeerSeal::seal_datagram`]). Seal overhead is 28 bytes per body (nonce and tag).
//!
//! Past 600 lines with its tests (the last third: forged, replayed and truncated messages).

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Nonce, Payload};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use session_core::KeyRing;

use crate::config::NodeId;

/// Header carrying the request's head tag: `base64url(nonce ‖ HMAC-SHA256/128)`.
pub const HDR_AUTH: &str = "x-ic-auth";

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

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
    /// No key opens the seal (or verifies the head tag): wrong secret, tampering, or a body
    /// cut short.
    #[error("the seal does not open")]
    Seal,
    /// A request this node already accepted, sent again inside the replay window.
    #[error("request replayed")]
    Replay,
}

/// Seals and opens peer bodies (and gossip datagrams) with the cluster key ring.
pub struct PeerSeal {
    ciphers: Vec<Aes256Gcm>,
    gossip: Vec<Aes256Gcm>,
    head: KeyRing,
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
            head: keys.derive("instantcopy/head/v1"),
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
    /// `x-ic-auth`: the head tag.
    pub auth: Option<&'a str>,
}

/// A sealed request, ready to send.
#[derive(Debug, Clone)]
pub struct SealedRequest {
    /// The request's nonce (its response is bound to it).
    pub nonce: [u8; NONCE_LEN],
    /// The sealed body.
    pub body: Vec<u8>,
    /// The value of the [`HDR_AUTH`] header.
    pub auth: String,
}

/// A request head whose tag verified: who sent it, and what its body must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedHead {
    /// The sending node.
    pub from: NodeId,
    /// The node the request is for.
    pub to: NodeId,
    /// The send time (ms since the epoch).
    pub time: u64,
    /// The body's exact length in bytes.
    pub body_len: u64,
    /// The nonce the body must start with; also the key of the replay cache.
    pub nonce: [u8; NONCE_LEN],
}

/// Bytes of a decoded [`HDR_AUTH`] value: the body's nonce and a 128-bit tag.
const HEAD_AUTH_LEN: usize = NONCE_LEN + 16;

#[allow(clippy::too_many_arguments)]
fn head_parts<'a>(
    method: &'a str,
    path: &'a str,
    from: &'a [u8; 2],
    to: &'a [u8; 2],
    time: &'a [u8; 8],
    len: &'a [u8; 8],
    nonce: &'a [u8; NONCE_LEN],
) -> [&'a [u8]; 8] {
    [
        b"instantcopy/head/v1",
        method.as_bytes(),
        path.as_bytes(),
        from,
        to,
        time,
        len,
        nonce,
    ]
}

impl PeerSeal {
    /// Seals a request body from `from` to `to` (`NodeId(0)`: whoever answers, for
    /// [`Hello`](crate::wire::Hello) only), and tags its head: method, path, sender, recipient,
    /// time, the sealed body's length and its nonce, under a key of their own, so a receiver
    /// refuses a forged or replayed request before it reads the body.
    pub fn seal_request(
        &self,
        method: &str,
        path: &str,
        from: NodeId,
        to: NodeId,
        time: u64,
        body: &[u8],
    ) -> SealedRequest {
        let mut nonce = [0u8; NONCE_LEN];
        session_core::fill_random(&mut nonce);
        let aad = request_aad(method, path, from, to, time);
        let sealed = self.seal(&aad, body, nonce);
        let len = (sealed.len() as u64).to_be_bytes();
        let (f, t, tm) = (from.0.to_be_bytes(), to.0.to_be_bytes(), time.to_be_bytes());
        let tag = self
            .head
            .sign(&head_parts(method, path, &f, &t, &tm, &len, &nonce));
        let mut auth = [0u8; HEAD_AUTH_LEN];
        auth[..NONCE_LEN].copy_from_slice(&nonce);
        auth[NONCE_LEN..].copy_from_slice(&tag[..16]);
        SealedRequest {
            nonce,
            body: sealed,
            auth: URL_SAFE_NO_PAD.encode(auth),
        }
    }

    /// Checks a request head received by node `me` before any of its body is read: the
    /// sender must not be 0 or `me` (except for a `hello`, where a sender claiming `me` is a
    /// duplicate id to report), the recipient must be `me` (or 0 for a `hello`), the time
    /// within `window_ms` of `now`, and the tag must verify for this method, path and the
    /// declared body length. Costs one HMAC over about 80 bytes per key, whatever the body.
    #[allow(clippy::too_many_arguments)]
    pub fn check_head(
        &self,
        method: &str,
        path: &str,
        headers: RequestHeaders<'_>,
        body_len: u64,
        now: u64,
        window_ms: u64,
        me: NodeId,
        hello: bool,
    ) -> Result<VerifiedHead, AuthError> {
        let parse16 = |v: Option<&str>| v.and_then(|s| s.parse::<u16>().ok());
        let from = parse16(headers.from).ok_or(AuthError::Headers)?;
        let to = parse16(headers.to).ok_or(AuthError::Headers)?;
        let time: u64 = headers
            .time
            .and_then(|s| s.parse().ok())
            .ok_or(AuthError::Headers)?;
        let auth = headers
            .auth
            .filter(|a| a.len() <= 64)
            .and_then(|a| URL_SAFE_NO_PAD.decode(a).ok())
            .filter(|a| a.len() == HEAD_AUTH_LEN)
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
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&auth[..NONCE_LEN]);
        let len = body_len.to_be_bytes();
        let (f, t, tm) = (from.0.to_be_bytes(), to.0.to_be_bytes(), time.to_be_bytes());
        self.head
            .verify(
                &head_parts(method, path, &f, &t, &tm, &len, &nonce),
                &auth[NONCE_LEN..],
            )
            .ok_or(AuthError::Seal)?;
        Ok(VerifiedHead {
            from,
            to,
            time,
            body_len,
            nonce,
        })
    }

    /// Opens the body of a request whose head verified: it must be exactly as long as the head
    /// said, start with the head's nonce, and open under the cluster key.
    pub fn open_body(
        &self,
        method: &str,
        path: &str,
        head: &VerifiedHead,
        body: &[u8],
    ) -> Result<(RequestContext, Vec<u8>), AuthError> {
        if body.len() as u64 != head.body_len || body.get(..NONCE_LEN) != Some(&head.nonce[..]) {
            return Err(AuthError::Seal);
        }
        let aad = request_aad(method, path, head.from, head.to, head.time);
        let (nonce, plain) = self.open(&aad, body)?;
        Ok((
            RequestContext {
                from: head.from,
                nonce,
            },
            plain,
        ))
    }

    /// [`check_head`](PeerSeal::check_head) then [`open_body`](PeerSeal::open_body), for a
    /// request whose body is already in memory.
    #[allow(clippy::too_many_arguments)]
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
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
        let head = self.check_head(
            method,
            path,
            headers,
            body.len() as u64,
            now,
            window_ms,
            me,
            hello,
        )?;
        self.open_body(method, path, &head, body)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{PATH_FETCH, PATH_HELLO, PATH_PING, PATH_PUSH};
    use session_core::Secret;

    fn seal() -> PeerSeal {
        PeerSeal::new(
            &KeyRing::new([Secret::new(b"cluster secret for seal unit tests!!".to_vec()).unwrap()])
                .unwrap(),
        )
    }

    fn hdrs<'a>(from: &'a str, to: &'a str, time: &'a str, auth: &'a str) -> RequestHeaders<'a> {
        RequestHeaders {
            from: Some(from),
            to: Some(to),
            time: Some(time),
            auth: Some(auth),
        }
    }

    #[test]
    fn request_round_trip_and_every_binding() {
        let s = seal();
        let me = NodeId(3);
        let r = s.seal_request("POST", PATH_PUSH, NodeId(2), me, 1000, b"hello");
        let (body, a) = (&r.body, r.auth.as_str());
        let open = |m: &str, p: &str, h: RequestHeaders<'_>, b: &[u8], now: u64| {
            s.open_request(m, p, h, b, now, 500, me, false)
        };
        let (ctx, plain) = open("POST", PATH_PUSH, hdrs("2", "3", "1000", a), body, 1200).unwrap();
        assert_eq!(plain, b"hello");
        assert_eq!(ctx.from, NodeId(2));
        assert_eq!(ctx.nonce, r.nonce);
        // Method, path, sender and time are bound by the head tag.
        for (m, p, h) in [
            ("POST", PATH_FETCH, hdrs("2", "3", "1000", a)),
            ("PUT", PATH_PUSH, hdrs("2", "3", "1000", a)),
            ("POST", PATH_PUSH, hdrs("4", "3", "1000", a)),
            ("POST", PATH_PUSH, hdrs("2", "3", "1001", a)),
        ] {
            assert_eq!(
                open(m, p, h, body, 1200).unwrap_err(),
                AuthError::Seal,
                "{m} {p} {h:?}"
            );
        }
        assert_eq!(
            open("POST", PATH_PUSH, hdrs("2", "3", "1000", a), body, 2000).unwrap_err(),
            AuthError::Stale
        );
        // A request for node 3 replayed to node 4 (which shares the secret) is refused.
        assert_eq!(
            s.open_request(
                "POST",
                PATH_PUSH,
                hdrs("2", "3", "1000", a),
                body,
                1200,
                500,
                NodeId(4),
                false
            )
            .unwrap_err(),
            AuthError::WrongRecipient(3)
        );
        // Claiming the recipient's own id, or id 0, as the sender is refused.
        for from in ["3", "0"] {
            assert_eq!(
                open("POST", PATH_PUSH, hdrs(from, "3", "1000", a), body, 1200).unwrap_err(),
                AuthError::UnknownSender(from.parse().unwrap())
            );
        }
        for missing in [
            RequestHeaders {
                from: None,
                ..hdrs("2", "3", "1000", a)
            },
            RequestHeaders {
                auth: None,
                ..hdrs("2", "3", "1000", a)
            },
            hdrs("2", "3", "1000", "not base64!"),
            hdrs("2", "3", "1000", &a[..a.len() - 4]),
        ] {
            assert_eq!(
                open("POST", PATH_PUSH, missing, body, 1200).unwrap_err(),
                AuthError::Headers,
                "{missing:?}"
            );
        }
        // A flipped ciphertext bit, a body cut short or padded (the tag binds the length).
        let mut tampered = body.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let mut longer = body.clone();
        longer.push(0);
        for b in [&tampered[..], &body[..10], &longer[..]] {
            assert_eq!(
                open("POST", PATH_PUSH, hdrs("2", "3", "1000", a), b, 1200).unwrap_err(),
                AuthError::Seal
            );
        }
        // Another request's body under this head: the nonces differ.
        let other_body = s
            .seal_request("POST", PATH_PUSH, NodeId(2), me, 1000, b"hellO")
            .body;
        assert_eq!(
            open(
                "POST",
                PATH_PUSH,
                hdrs("2", "3", "1000", a),
                &other_body,
                1200
            )
            .unwrap_err(),
            AuthError::Seal
        );
        // Another cluster's secret fails at the head, before the body.
        let other = PeerSeal::new(&KeyRing::generate());
        assert_eq!(
            other
                .check_head(
                    "POST",
                    PATH_PUSH,
                    hdrs("2", "3", "1000", a),
                    body.len() as u64,
                    1200,
                    500,
                    me,
                    false
                )
                .unwrap_err(),
            AuthError::Seal
        );
    }

    #[test]
    fn the_head_is_checked_without_the_body() {
        let s = seal();
        let r = s.seal_request("POST", PATH_PUSH, NodeId(2), NodeId(1), 50, &[9u8; 4096]);
        let h = hdrs("2", "1", "50", &r.auth);
        let head = s
            .check_head(
                "POST",
                PATH_PUSH,
                h,
                r.body.len() as u64,
                60,
                100,
                NodeId(1),
                false,
            )
            .unwrap();
        assert_eq!(head.nonce, r.nonce);
        assert_eq!(head.body_len, r.body.len() as u64);
        // A head declaring another length does not verify.
        assert_eq!(
            s.check_head("POST", PATH_PUSH, h, 8 << 20, 60, 100, NodeId(1), false)
                .unwrap_err(),
            AuthError::Seal
        );
        assert_eq!(
            s.open_body("POST", PATH_PUSH, &head, &r.body).unwrap().1,
            vec![9u8; 4096]
        );
    }

    #[test]
    fn hello_may_be_addressed_to_anyone_and_may_claim_the_recipients_id() {
        let s = seal();
        let r = s.seal_request("POST", PATH_HELLO, NodeId(3), NodeId(0), 10, b"hi");
        let (ctx, _) = s
            .open_request(
                "POST",
                PATH_HELLO,
                hdrs("3", "0", "10", &r.auth),
                &r.body,
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
        let r = s.seal_request("POST", PATH_PUSH, NodeId(2), NodeId(0), 10, b"x");
        assert_eq!(
            s.open_request(
                "POST",
                PATH_PUSH,
                hdrs("2", "0", "10", &r.auth),
                &r.body,
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
        let req = s
            .seal_request("POST", PATH_PING, NodeId(5), NodeId(1), 1_000, b"swim")
            .body;
        let mut as_datagram = vec![1u8];
        as_datagram.extend_from_slice(&5u16.to_be_bytes());
        as_datagram.extend_from_slice(&1_000u64.to_be_bytes());
        as_datagram.extend_from_slice(&req);
        assert!(s.open_datagram(&as_datagram, 1_000, 500).is_err());
    }

    #[test]
    fn responses_are_bound_to_their_request() {
        let s = seal();
        let r1 = s.seal_request("POST", PATH_FETCH, NodeId(2), NodeId(1), 1, b"a");
        let r2 = s.seal_request("POST", PATH_FETCH, NodeId(2), NodeId(1), 1, b"b");
        let (ctx, _) = s
            .open_request(
                "POST",
                PATH_FETCH,
                hdrs("2", "1", "1", &r1.auth),
                &r1.body,
                1,
                10,
                NodeId(1),
                false,
            )
            .unwrap();
        let resp = s.seal_response(&ctx, b"answer");
        assert_eq!(s.open_response(&r1.nonce, &resp).unwrap(), b"answer");
        assert_eq!(
            s.open_response(&r2.nonce, &resp).unwrap_err(),
            AuthError::Seal
        );
    }
}
