//! # backend-cookie
//!
//! The paper's *cookie* scheme (the session lives in the client: N = 0 network calls and
//! D = 0 database calls per request), done the way Rails' `CookieStore` does it rather than the
//! paper's readable cookie: the whole session is **encrypted and authenticated** with
//! AES-256-GCM, keys rotate through a key ring, the deadlines travel *inside* the seal, and a
//! session that does not fit in a browser cookie is a typed error instead of a cookie the
//! browser silently drops.
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use backend_cookie::{CookieBackend, CookieConfig};
//! use session_core::{ExpiryPolicy, KeyRing, Secret, Session, SessionBackend, SessionError, SessionLayer};
//!
//! async fn visits(session: Session) -> Result<String, SessionError> {
//!     let n = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
//!     session.insert("visits", &n)?; // the response carries a freshly sealed cookie
//!     Ok(format!("visit number {n}"))
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // In production: the secrets from the environment or a secrets file, newest first.
//! let keys = KeyRing::new([Secret::new(b"at least 32 bytes of real randomness....".to_vec())?])?;
//! let backend: Arc<dyn SessionBackend> =
//!     Arc::new(CookieBackend::new(&CookieConfig::default(), ExpiryPolicy::default(), &keys)?);
//! let app: Router = Router::new().route("/", get(visits)).layer(SessionLayer::new(backend));
//! # let _ = app;
//! # Ok(()) }
//! ```
//!
//! ## How it works
//!
//! * The token the client carries **is** the sealed session. [`create`], [`save`] and
//!   [`cycle_id`] return a new token every time the session changes (the layer sends it as
//!   `Set-Cookie`); a request that changes nothing re-seals nothing, and a read re-seals only when
//!   the expiry policy says the idle deadline is due for a refresh (a *touch*).
//! * [`load`] opens the cookie (pure computation, no I/O), then enforces the idle and absolute
//!   deadlines sealed in it, the *current* policy's timeouts applied to the sealed timestamps,
//!   and the revocation epoch. The cookie's `Max-Age` is never trusted.
//! * Tampered, truncated, re-ordered, wrong-key, wrong-name, garbage and over-long cookies are
//!   rejected as [`InvalidToken`](session_core::SessionError::InvalidToken) and expired or revoked
//!   ones load as `None`: either way the request simply has no session (the layer clears the
//!   cookie). Never a panic, never a 500.
//!
//! ## Format
//!
//! `base64url(version ‖ key id ‖ flags ‖ nonce ‖ AES-256-GCM(payload) ‖ tag)`, unpadded, with
//! the 3-byte header and the cookie name as associated data (see [`format`](mod@format) for the byte
//! layout). The payload is the compact postcard encoding of the revocation epoch, the 128-bit
//! session id, the four timestamps, the version and the values (key → JSON text). A seal adds 31
//! bytes before base64: a session of *p* payload bytes is a cookie of `ceil((31 + p) · 4/3)`
//! characters (an empty session is about 100).
//!
//! * **Nonces**: 96 bits from the OS CSPRNG per seal. The usual bound for random GCM nonces is
//!   2³² seals per key (collision probability < 2⁻³²); at 1,000 seals per second that is over
//!   130 years, and rotation resets it.
//! * **Keys**: derived with HKDF-SHA256 from the application's [`KeyRing`](session_core::KeyRing)
//!   for the purpose `cookie/aes-256-gcm/v1`, so the same cluster secret can key the id tokens
//!   and the peer protocol without any cross-protocol reuse. The first key seals, every key
//!   opens. The one-byte **key id** in the header (from a separate HKDF purpose, revealing nothing
//!   about the key) selects the key to try, so a forged cookie costs at most one GCM check, not
//!   one per key; on the 1-in-256 id collision both keys are tried.
//! * **Compression** (`compress = true`, off by default): a payload of 256 bytes or more is
//!   raw-deflated when, and only when, that makes it smaller; a header flag (authenticated) says
//!   so. Any node opens compressed and uncompressed cookies alike, whatever its own setting. Opening inflates at
//!   most 64 KiB, and only after authentication, so a cookie cannot be a decompression bomb.
//!
//! ## The 4096-byte limit, exactly
//!
//! What is measured is the **cookie value**: the token's length in bytes. Sealing a session whose
//! token would exceed `max_cookie_bytes` (default and maximum 4096, the limit browsers guarantee)
//! fails with `SessionError::TooLarge { size, limit, what: "a browser cookie" }`, whose message
//! names the size; the layer turns it into an error response and sets no cookie, and a handler
//! that calls `Session::save()` can catch it. The name, `=` and the attributes (`Path`, `Max-Age`,
//! `HttpOnly`, ...) are *not* counted. Chrome and Firefox limit name + value to 4096 bytes (each
//! attribute separately to 1024), so with the default name `sid` a value of 4094–4096 bytes is at
//! the edge: set `max_cookie_bytes = 4096 - len(cookie_name)` to follow that rule exactly. Since
//! unpadded base64 never has a length of 4*k*+1, the sizes around the limit are 4095, 4096 and
//! then 4098. Over the header transport (mobile clients) the same limit applies.
//!
//! ## Security trade-offs (read before choosing this backend)
//!
//! * **No per-session revocation.** The client holds the only copy, so the server cannot destroy
//!   it: logout (`destroy`) only tells the browser to drop the cookie, and a copy that was stolen
//!   or kept **stays valid until its idle or absolute deadline passes**. Likewise `cycle_id` (on
//!   login) gives a new id and cookie, but the old cookie keeps opening, holding the pre-login
//!   state; fixation is still defeated because the attacker's planted cookie never receives the
//!   logged-in state. Keep the idle timeout short when this matters.
//! * **Global revocation: the epoch.** `revocation_epoch` is sealed into every cookie; a cookie
//!   with a lower epoch than the node's no longer opens. Bumping it logs **everyone** out at once
//!   (after a breach, a leaked secret, a privilege-model change). Nodes accept higher epochs, so
//!   a rolling deploy does not reject new cookies on old nodes; cookies a not-yet-updated node
//!   seals are rejected once they reach an updated node. Rotating the secret *and removing the
//!   old one* has the same all-users effect.
//! * **Replay of older cookies.** A client can send back any earlier cookie of its own session
//!   until it expires, rolling the session back. Never keep server-authoritative state in it:
//!   remaining attempts, "coupon already used", balances, one-time nonces.
//! * **Concurrent requests do not merge.** Two requests in flight each return a cookie; the one
//!   the browser stores last wins and the other's writes are lost. Server-side backends merge
//!   deltas; this one cannot.
//! * **Size is visible.** Encryption hides the content, not the length. With compression on, the
//!   length also depends on *how compressible* the content is, which can leak a secret stored
//!   next to attacker-chosen data (the CRIME/BREACH family of attacks) to an observer of
//!   encrypted traffic. That is why compression is off by default; turn it on when sessions do not
//!   mix attacker-controlled input with secrets, or when you need the room.
//! * **Clocks.** Deadlines are wall-clock milliseconds checked on whichever node serves the
//!   request; keep nodes NTP-synchronised.
//! * **What it gets right** compared with the paper's readable cookie and the Rust peers: the
//!   content is confidential and tamper-proof, secrets rotate without logging anyone out (which
//!   tower-sessions, actix-session and the `cookie` crate's private jar do not offer), expiry is
//!   enforced from inside the seal, and oversize is an error, never a silently dropped cookie.
//!
//! ## Key rotation
//!
//! 1. Add the new secret *second* on every node (it opens, does not seal yet).
//! 2. Move it *first*. It seals; cookies sealed with the old one still open, and the backend
//!    flags them for re-issue ([`Loaded::reissue`](session_core::Loaded::reissue)), so the
//!    layer re-seals them with the new key on the client's next request, changed or not.
//! 3. Remove the old secret once the absolute timeout has passed since step 2: every cookie it
//!    sealed has then either been re-sealed or expired.
//!
//! The `old_key_opens_total` metric shows the rotation draining.
//!
//! ## Measurements
//!
//! [`counters`] reports N = 0 and D = 0 by construction, the bytes of cookie each request
//! carried (`client_bytes_sum` / `client_bytes_count`), and in `extra`: seals, compressed seals,
//! sealed bytes, the largest cookie, `TooLarge` refusals, opens by outcome (ok, expired,
//! revoked), opens with an old key, and undecodable authentic cookies.
//!
//! [`create`]: session_core::SessionBackend::create
//! [`save`]: session_core::SessionBackend::save
//! [`cycle_id`]: session_core::SessionBackend::cycle_id
//! [`load`]: session_core::SessionBackend::load
//! [`counters`]: session_core::SessionBackend::counters

#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod config;
pub mod format;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::CookieBackend;
pub use config::{ConfigError, CookieConfig};
pub use format::{
    BROWSER_COOKIE_LIMIT, FORMAT_VERSION, MAX_PAYLOAD_LEN, MIN_COMPRESS_LEN, OVERHEAD, OpenError,
    Opened, Payload, Sealed, Sealer, decode_payload, sealed_len,
};
