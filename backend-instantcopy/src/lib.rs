//! # backend-instantcopy
//!
//! The "instant copy between cluster nodes" session scheme (Cao, Hu, Jiang, 2016) as a
//! production [`SessionBackend`](session_core::SessionBackend): sessions live in the memory of
//! the app nodes themselves, a node that misses a session fetches it once from the node that
//! holds it, and every change is pushed to the session's replicas. No database, no cache
//! server; a local hit costs no network call at all.
//!
//! ```
//! use std::sync::Arc;
//! use backend_instantcopy::{Config, InstantCopyNode};
//! use session_core::{ExpiryPolicy, KeyRing, Secret, SessionBackend, SessionLayer};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Each node gets the same cluster secret, its own node_id, and any members as `seeds`.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let mut config = Config::default();
//! config.cluster_addr = listener.local_addr()?; // no seeds: a one-node cluster of its own
//! let keys = KeyRing::new([Secret::new(b"the cluster secret, from env or a file".to_vec())?])?;
//! let node = InstantCopyNode::start_with_listener(config, ExpiryPolicy::default(), &keys, listener).await?;
//! let backend: Arc<dyn SessionBackend> = Arc::new(node.clone());
//! let app: axum::Router = axum::Router::new().layer(SessionLayer::new(backend));
//! # let _ = app;
//! node.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## The protocol (what a reviewer should check)
//!
//! **Token.** The client carries a session-core id token (`base64url(0x01 ‖ 128-bit id ‖ routing
//! ‖ HMAC-SHA256/128)`) whose routing bytes are a [`Route`]: the **owner** node id, the session
//! **version** the client last saw, and the **backup** node ids (10 + 2k bytes). Node ids are
//! resolved only through the authenticated membership: a token naming a non-member, or with a
//! bad MAC, is rejected before any I/O ("no session", zero outbound calls). A client cannot make a
//! node connect anywhere it chooses — the paper's token carried a raw IP, an SSRF hole.
//!
//! **Read** (paper step 2). Local copy present, not expired, and at least as new as the token's
//! version → served from memory (N = 0). Otherwise one authenticated fetch from the owner
//! (N = 1), then from the backups if the owner is down or has no fresh copy; the copy is kept.
//! Because the token carries the version, a node never serves a client a copy older than what
//! that client already saw, even while asynchronous replication is still in flight
//! (read-your-writes across nodes, which Tomcat's DeltaManager does not give). When no holder
//! of a newer copy answers, the read is [`SessionError::Unavailable`](session_core::SessionError)
//! (503, the client's token untouched), never "no session"; only once membership confirms every
//! newer holder gone is the newest surviving copy served and re-replicated
//! ([`OnUnreachable`] chooses to serve the local older copy, marked stale, instead).
//!
//! **Write** (paper step 3). A request's [`Delta`](session_core::Delta) is applied locally with
//! a hybrid-logical-clock [`Stamp`] per key, and the changed keys are pushed to the replicas:
//! every other live node with `replication = "all"` (the paper), or the owner plus `k` backups
//! chosen by rendezvous hashing with `replication = k` (messages per write = k, independent of
//! cluster size; the token names the backups, so nothing is broadcast on create). Pushes go
//! through one queue per peer that batches and coalesces updates (a burst of writes to one
//! session is one message), with backpressure. `ack = "async" | "one" | "all"` decides whether
//! the response waits for none, one or all replicas (see [`Ack`]).
//!
//! **Convergence.** Copies merge per key by last-writer-wins on `(HLC time, node id)`;
//! deadlines only move forward; a destroyed id is a tombstone until its absolute deadline so
//! no late update can resurrect it. The merge is commutative, associative and idempotent
//! (property-tested): copies receiving updates in any order, duplicated or delayed, end
//! identical. Concurrent writes to different keys both survive; to the same key, the later
//! stamp wins on every node and the loser is counted in `conflicts_total`.
//!
//! **Destroy and id cycling** are broadcast to every live member (any node may hold a fetched
//! copy) and remembered as tombstones. Whatever the ack level, the response waits (up to
//! `ack_timeout`) until every live node has dropped the old id, so a logout or a login's id
//! cycle is effective everywhere when the client sees it; a peer that was unreachable is sent
//! the live tombstones when it answers again.
//!
//! **Membership.** Nodes find each other through [`Config::seeds`] (`host:port`; a DNS name
//! may resolve to several addresses and is re-resolved every `seed_refresh_interval`) and then
//! by SWIM gossip ([foca]) over UDP on the cluster port number, every datagram sealed under the
//! cluster secret: a host without it cannot join, announce itself, or make a member connect
//! anywhere. A member that crashes is suspected after a failed probe and declared down after
//! `failure_threshold` probe periods; one that shuts down announces that it leaves. A second
//! live process claiming a node id is refused at start. Requests for a session whose owner is
//! down fetch from a backup (N = 1), and the response re-homes the token; with
//! `replication = k` the leader of each session restores `k` live copies in the background, and
//! placements move onto new members at most `rebalance_rate` sessions a second, each only once
//! its new holder acknowledged it.
//!
//! **Restarts and anti-entropy.** A starting node serves at once (lazy fetches, no blocking
//! bulk transfer) and pulls in the background what it should hold from every live holder;
//! [`InstantCopyNode::readiness`] is ready once that initial sync is done. A graceful
//! shutdown ([`SessionBackend::shutdown`](session_core::SessionBackend::shutdown)) drains
//! ([`InstantCopyNode::drain`]): it announces that it leaves and hands every session it
//! would take with it to the new holders, acknowledged, within `drain_timeout`. Every
//! `anti_entropy_interval` each pair of members reconciles what it holds by range-based set
//! reconciliation over (session id, state digest), at a cost that follows the number of
//! differences, so a replica that missed updates converges without client traffic.
//!
//! [foca]: https://docs.rs/foca
//!
//! **Expiry** (paper step 4). Each node keeps a deadline-ordered index and its sweeper sleeps
//! until exactly the next deadline (plus jitter), then drops expired sessions; reads check the
//! deadline too, so an expired session is never served. Touches (throttled by the expiry
//! policy) are replicated like writes, so a session kept alive on one node is alive on its
//! replicas.
//!
//! **Cluster port.** Peer traffic uses its own listener ([`Config::cluster_addr`]), never the
//! app's port. Every request and response body is sealed with AES-256-GCM under a key derived
//! from the cluster secret (see [`wire`]); requests bind method, path, sender and send time,
//! and are refused with 401 when the seal does not open, the sender is not a member, or the
//! time is outside `replay_window`. A replay inside the window is harmless: every message is an
//! idempotent merge. Bodies over `max_body_bytes` get 413; bodies that open but do not decode
//! get 400. Bodies are postcard-encoded.
//!
//! ## What each setting survives
//!
//! | replication / ack | messages per write | survives |
//! |---|---|---|
//! | `all` / `async` | n − 1 | any crash except in the ~ms before the push leaves |
//! | `k` / `async` | k | up to k crashes, same window |
//! | `k` / `one` | k, waits for 1 ack | any single crash, with no window |
//! | `k` / `all` | k, waits for all | k crashes, with no window |
//!
//! A rolling restart (one node at a time, the next once the previous is ready) loses nothing;
//! a full-cluster restart loses every session (they are in memory): use the SQL or Redis
//! backend where that matters.
// The internals the `testing` feature re-exports ([`internals`], `store`, `wire`) are `pub`
// items in private modules; without the feature they are reachable from this crate only. The
// lint stays on for `--all-features` builds (CI's clippy), where it still flags anything
// unreachable either way.
#![cfg_attr(not(feature = "testing"), allow(unreachable_pub))]

mod antientropy;
mod backend;
mod client;
mod clock;
mod config;
mod failure;
mod faults;
mod gossip;
mod lifecycle;
mod membership;
mod metrics;
mod near;
mod node;
mod placement;
mod read;
mod repair;
mod replay;
mod replication;
mod routing;
mod seal;
mod server;
mod state;
// The in-memory store and the peer wire format are internals; the `testing` feature exposes
// them for the crate's benches, examples, fuzz targets and white-box tests only.
#[cfg(feature = "testing")]
pub mod store;
#[cfg(not(feature = "testing"))]
#[allow(dead_code, unused_imports)]
mod store;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "testing")]
pub mod wire;
#[cfg(not(feature = "testing"))]
#[allow(dead_code, unused_imports)]
mod wire;
mod write;

pub use antientropy::{SyncCounters, SyncReport};
pub use config::{
    Ack, Config, ConfigError, MAX_BACKUPS, Member, NodeId, OnUnreachable, Replication,
};
pub use faults::Faults;
pub use gossip::GossipCounters;
pub use lifecycle::{DrainReport, Phase, Readiness};
pub use membership::{Identity, MemberState, Membership, Peer, PeerStatus};
pub use node::{InstantCopyNode, StartError};
pub use routing::Route;
pub use state::Stamp;

/// Internals for white-box tests, benches and fuzz targets (the `testing` feature): the node's
/// shared state, the per-session state and its wire form, the HLC clock, the placement
/// functions and the replication queue types. Not a stable API.
#[cfg(feature = "testing")]
pub mod internals {
    pub use crate::clock::Clock;
    pub use crate::gossip::max_transmissions;
    pub use crate::node::Shared;
    pub use crate::replication::{Delivery, Queued, join};
    pub use crate::routing::{owned_id, owner_of, pick_backups, score};
    pub use crate::state::{
        KEY_TOMBSTONE_TTL_MS, MAX_KEY_TOMBSTONES, MergeOutcome, Placement, SessionState, WireEntry,
        WireState,
    };
}
