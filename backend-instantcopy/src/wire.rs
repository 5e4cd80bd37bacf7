//! Peer messages: the cluster port's paths and headers, and what each request and response
//! carries.
//!
//! Owns the message types and their encoding. Bodies are postcard-encoded (compact, no schema on
//! the wire): in `benches/instantcopy.rs` a push of one full 200 B session is 246 bytes against
//! 650 in JSON (32 sessions: 7.8 KB against 20.6 KB), and encoding plus decoding it takes about
//! a third of the time JSON takes. How bodies are sealed and request heads tagged (so a host
//! without the cluster secret is refused before its body is read) is the `seal` module's,
//! re-exported here: [`PeerSeal`]. Holding the cluster secret is what makes a node a member:
//! there is no other list to check against.

use serde::{Deserialize, Serialize};
use session_core::SessionId;

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

pub use crate::seal::{
    AuthError, DATAGRAM_OVERHEAD, HDR_AUTH, PeerSeal, RequestContext, RequestHeaders,
    SealedRequest, VerifiedHead,
};

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

/// Bytes a push batch adds around its updates (length prefix), plus the seal, with margin.
const BATCH_OVERHEAD: usize = 64;

/// Splits updates into push batches of at most `max_items` updates and about `max_bytes`
/// encoded bytes each (a single update larger than `max_bytes` goes alone), so a batch never
/// grows past what the receiver accepts and one large session cannot fail the updates of
/// hundreds of others with it. Updates that could not be sent even alone (their encoding
/// exceeds `max_body`) are returned apart: they are never sent.
pub fn push_batches(
    updates: Vec<Update>,
    max_items: usize,
    max_bytes: usize,
    max_body: usize,
) -> (Vec<PushBatch>, Vec<Update>) {
    let mut batches = Vec::new();
    let mut oversized = Vec::new();
    let mut current: Vec<Update> = Vec::new();
    let mut bytes = BATCH_OVERHEAD;
    for u in updates {
        let size = postcard::experimental::serialized_size(&u).unwrap_or(usize::MAX);
        if size.saturating_add(BATCH_OVERHEAD) > max_body {
            oversized.push(u);
            continue;
        }
        if !current.is_empty()
            && (current.len() >= max_items.max(1) || bytes.saturating_add(size) > max_bytes)
        {
            batches.push(PushBatch {
                updates: std::mem::take(&mut current),
            });
            bytes = BATCH_OVERHEAD;
        }
        bytes = bytes.saturating_add(size);
        current.push(u);
    }
    if !current.is_empty() {
        batches.push(PushBatch { updates: current });
    }
    (batches, oversized)
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

    fn destroy(i: u8) -> Update {
        let mut b = [0u8; 16];
        b[0] = i;
        Update::Destroy {
            id: SessionId::from_bytes(b),
            until: 1,
        }
    }

    #[test]
    fn push_batches_are_cut_by_count_and_by_bytes() {
        let updates: Vec<Update> = (0..10).map(destroy).collect();
        let one = postcard::experimental::serialized_size(&updates[0]).unwrap();
        // By count.
        let (b, over) = push_batches(updates.clone(), 4, usize::MAX, usize::MAX);
        assert_eq!(
            b.iter().map(|b| b.updates.len()).collect::<Vec<_>>(),
            [4, 4, 2]
        );
        assert!(over.is_empty());
        // By bytes: room for three updates per batch.
        let budget = BATCH_OVERHEAD + 3 * one;
        let (b, _) = push_batches(updates.clone(), 100, budget, usize::MAX);
        assert_eq!(
            b.iter().map(|b| b.updates.len()).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        for batch in &b {
            assert!(encode(batch).unwrap().len() <= budget);
        }
        // Nothing fits the body at all: everything is returned apart, nothing sent.
        let (b, over) = push_batches(updates, 100, budget, one);
        assert!(b.is_empty());
        assert_eq!(over.len(), 10);
    }

    /// One of every peer message (and the token's routing bytes), with fixed contents.
    fn samples() -> Vec<(&'static str, Vec<u8>)> {
        use crate::state::{Placement, Stamp, WireEntry};
        use session_core::RawJson;
        let id = SessionId::from_bytes(std::array::from_fn(|i| 0x10 + i as u8));
        let stamp = Stamp {
            time: 0x0123_4567_89ab_cdef,
            node: 2,
        };
        let state = WireState {
            id,
            full: false,
            base: 41,
            created_at: 1_700_000_000_000,
            last_access: 1_700_000_100_000,
            idle_deadline: 1_700_001_900_000,
            absolute_deadline: 1_700_086_400_000,
            touched: stamp,
            entries: vec![
                WireEntry {
                    key: "user".into(),
                    stamp,
                    value: Some(RawJson::from_value("alice").unwrap_or_else(|_| unreachable!())),
                },
                WireEntry {
                    key: "cart:sku-01".into(),
                    stamp,
                    value: None,
                },
            ],
            placement: Some(Placement {
                stamp,
                owner: NodeId(1),
                backups: vec![NodeId(2)],
            }),
        };
        let identity = Identity {
            id: NodeId(3),
            addr: "10.0.0.3:7946".parse().unwrap_or_else(|_| unreachable!()),
            generation: 1_700_000_000_123,
            bump: 1,
        };
        let enc = |m: &dyn erased::Encode| m.bytes();
        vec![
            ("fetch_request", enc(&FetchRequest { id })),
            ("fetch_found", enc(&FetchResponse::Found(state.clone()))),
            ("fetch_not_found", enc(&FetchResponse::NotFound)),
            ("fetch_destroyed", enc(&FetchResponse::Destroyed)),
            (
                "push_batch",
                enc(&PushBatch {
                    updates: vec![
                        Update::State(state.clone()),
                        Update::Destroy { id, until: 9 },
                    ],
                }),
            ),
            (
                "push_ack",
                enc(&PushAck {
                    need_full: vec![id],
                    gone: vec![],
                }),
            ),
            (
                "hello",
                enc(&Hello {
                    identity: identity.clone(),
                }),
            ),
            (
                "hello_welcome",
                enc(&HelloAck::Welcome {
                    identity: identity.clone(),
                    members: vec![identity.clone()],
                }),
            ),
            (
                "hello_duplicate",
                enc(&HelloAck::DuplicateId {
                    holder: identity.clone(),
                }),
            ),
            ("leave", enc(&Leave { identity })),
            (
                "sync_request",
                enc(&SyncRequest {
                    session: 7,
                    scope: SyncScope::Shared,
                    message: vec![0x61, 0x00, 0xff],
                }),
            ),
            (
                "sync_response",
                enc(&SyncResponse {
                    message: vec![0x62],
                    safe: true,
                }),
            ),
            ("pull", enc(&Pull { ids: vec![id, id] })),
            (
                "pull_response",
                enc(&PullResponse {
                    sessions: vec![FetchResponse::Found(state), FetchResponse::NotFound],
                    tombstones: vec![5],
                }),
            ),
            (
                "pong",
                enc(&Pong {
                    node: NodeId(1),
                    started_at: 1_700_000_000_000,
                    sessions: 12,
                }),
            ),
            (
                "route",
                crate::routing::Route {
                    owner: NodeId(1),
                    version: 0x0102_0304_0506_0708,
                    backups: vec![NodeId(2), NodeId(300)],
                }
                .encode(),
            ),
        ]
    }

    /// Encoding any message through one signature, for the table above.
    mod erased {
        pub(super) trait Encode {
            fn bytes(&self) -> Vec<u8>;
        }
        impl<T: serde::Serialize> Encode for T {
            fn bytes(&self) -> Vec<u8> {
                super::encode(self).unwrap_or_else(|e| panic!("encoding a sample: {e}"))
            }
        }
    }

    /// The peer messages of protocol version 1 (`/ic/v1/...`) and the token's routing bytes,
    /// frozen in `tests/golden/wire_v1.txt`: a change of encoding breaks mixed-version clusters
    /// during a rolling deploy and old tokens, so it must be a visible, deliberate change (see
    /// `session_core::testing::golden`).
    #[test]
    fn wire_v1_known_answers() {
        use session_core::testing::golden;
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/wire_v1.txt");
        let samples = samples();
        let mut text =
            String::from("format=instant copy peer messages v1 (postcard), routing v1\n");
        for (name, bytes) in &samples {
            text.push_str(&format!("{name}={}\n", golden::hex(bytes)));
        }
        golden::assert_matches(&path, &text);
        // The file's bytes decode to the samples with today's code.
        let g = golden::read(&path);
        let bytes = |name: &str| {
            golden::unhex(golden::field(&g, name).unwrap_or_else(|| panic!("no {name} line")))
                .unwrap_or_else(|| panic!("{name}: not hex"))
        };
        let back = |name: &str| -> Vec<u8> {
            let b = bytes(name);
            match name {
                "fetch_request" => encode(&decode::<FetchRequest>(&b).unwrap()),
                "fetch_found" | "fetch_not_found" | "fetch_destroyed" => {
                    encode(&decode::<FetchResponse>(&b).unwrap())
                }
                "push_batch" => encode(&decode::<PushBatch>(&b).unwrap()),
                "push_ack" => encode(&decode::<PushAck>(&b).unwrap()),
                "hello" => encode(&decode::<Hello>(&b).unwrap()),
                "hello_welcome" | "hello_duplicate" => encode(&decode::<HelloAck>(&b).unwrap()),
                "leave" => encode(&decode::<Leave>(&b).unwrap()),
                "sync_request" => encode(&decode::<SyncRequest>(&b).unwrap()),
                "sync_response" => encode(&decode::<SyncResponse>(&b).unwrap()),
                "pull" => encode(&decode::<Pull>(&b).unwrap()),
                "pull_response" => encode(&decode::<PullResponse>(&b).unwrap()),
                "pong" => encode(&decode::<Pong>(&b).unwrap()),
                "route" => {
                    return crate::routing::Route::decode(&b, |_| true)
                        .unwrap()
                        .encode();
                }
                other => panic!("no decoder for {other}"),
            }
            .unwrap()
        };
        for (name, sample) in &samples {
            assert_eq!(&back(name), sample, "{name}");
        }
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
