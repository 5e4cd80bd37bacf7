//! What a session and its updates weigh on the wire, by the crate's own encoding.
//!
//! Owns the simulated session's content (shaped like the demo's: a user, roles, a CSRF token
//! and one key per cart line, about 200 B of payload) and its conversion into the real
//! `backend_instantcopy` wire values: [`WireState`] (whole, or the one key a write changed),
//! [`Update`], [`PushBatch`](backend_instantcopy::wire::PushBatch), [`FetchResponse`]. Sizes are `wire::encode` (postcard) lengths of
//! those values, plus the AES-256-GCM seal's overhead measured once by sealing a body with
//! the crate's [`PeerSeal`]. A batch's size is computed from its updates' sizes with postcard's
//! rule for a `Vec` (a varint length, then the elements), which a test checks against encoding
//! the real `PushBatch`; the split of a pusher's updates into batches follows
//! `wire::push_batches` (by count and by bytes, checked against it in a test).

use backend_instantcopy::internals::{Placement, WireEntry, WireState};
use backend_instantcopy::wire::{
    self, FetchRequest, FetchResponse, PATH_PUSH, PeerSeal, PushAck, Update,
};
use backend_instantcopy::{NodeId, Stamp};
use session_core::{KeyRing, RawJson, Secret, SessionId};

use crate::error::{BenchError, Result};

/// SKUs a cart line can be for (the table1 generator's 12).
pub const SKUS: usize = 12;
/// Cart lines a session starts with.
pub const START_LINES: usize = 3;
/// Virtual time 0, as wall time (2026-01-01T00:00:00Z), so timestamps encode at their real
/// width.
pub const EPOCH_SECS: u64 = 1_767_225_600;
/// The demo's idle timeout (30 min) and absolute timeout (8 h), in ms.
const IDLE_MS: u64 = 30 * 60 * 1000;
const ABSOLUTE_MS: u64 = 8 * 3600 * 1000;
/// Bytes `wire::push_batches` reserves around a batch's updates.
pub const BATCH_OVERHEAD: usize = 64;

/// Virtual nanoseconds as a hybrid-logical-clock reading (NTP64: seconds ‖ fraction).
pub fn ntp64(t_ns: u64) -> u64 {
    let secs = EPOCH_SECS + t_ns / 1_000_000_000;
    let frac = ((t_ns % 1_000_000_000) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// Virtual nanoseconds as wall-clock milliseconds since the epoch.
pub fn millis(t_ns: u64) -> u64 {
    EPOCH_SECS * 1000 + t_ns / 1_000_000
}

/// Length of postcard's varint encoding of `n` (used for a `Vec`'s length prefix).
pub fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// What a simulated session holds: the fixed keys and the cart.
#[derive(Debug, Clone)]
pub struct Content {
    /// The user number (varies the `user` value's digits).
    pub user: u64,
    /// The CSRF token's 128 bits.
    pub csrf: u128,
    /// Quantity per SKU (0: no line).
    pub cart: [u16; SKUS],
    /// SKUs whose line was removed: a full state carries their key tombstones.
    pub removed: [bool; SKUS],
    /// Creation time (virtual ns).
    pub created_ns: u64,
    /// Last write (virtual ns).
    pub last_access_ns: u64,
}

/// The cart key of a SKU (`cart.sku-07`, the demo's `CART_PREFIX` and the generator's SKU
/// names).
pub fn cart_key(sku: usize) -> String {
    format!("cart.sku-{sku:02}")
}

fn json(text: String) -> Result<RawJson> {
    RawJson::from_json(text).map_err(|e| BenchError(format!("session content: {e}")))
}

/// The encoder: builds wire values and measures them.
pub struct Encoder {
    seal_overhead: usize,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("seal_overhead", &self.seal_overhead)
            .finish()
    }
}

impl Encoder {
    /// Measures the seal's overhead with the crate's [`PeerSeal`] (a fixed secret: sizes do
    /// not depend on the key or the random nonce).
    pub fn new() -> Result<Self> {
        let secret = Secret::new(b"bench simulate: sizes only, never used on a network".to_vec())
            .map_err(|e| BenchError(format!("seal key: {e}")))?;
        let keys = KeyRing::new([secret]).map_err(|e| BenchError(format!("seal key: {e}")))?;
        let seal = PeerSeal::new(&keys);
        let plain = [0u8; 100];
        let sealed = seal.seal_request("POST", PATH_PUSH, NodeId(1), NodeId(2), 0, &plain);
        let seal_overhead = sealed.body.len().saturating_sub(plain.len());
        Ok(Encoder { seal_overhead })
    }

    /// Bytes the seal adds to a body (nonce and tag).
    pub fn seal_overhead(&self) -> usize {
        self.seal_overhead
    }

    fn header(
        id: SessionId,
        c: &Content,
        full: bool,
        base: u64,
        touched: Stamp,
        placement: Option<Placement>,
    ) -> WireState {
        let created = millis(c.created_ns);
        let last = millis(c.last_access_ns);
        WireState {
            id,
            full,
            base: if full { 0 } else { base },
            created_at: created,
            last_access: last,
            idle_deadline: (last + IDLE_MS).min(created + ABSOLUTE_MS),
            absolute_deadline: created + ABSOLUTE_MS,
            touched,
            entries: Vec::new(),
            placement,
        }
    }

    /// The whole state of a session (every key, the key tombstones, the placement), every key
    /// stamped `stamp`.
    pub fn full_state(
        &self,
        id: SessionId,
        c: &Content,
        stamp: Stamp,
        placement: Placement,
    ) -> Result<WireState> {
        let mut w = Self::header(id, c, true, 0, stamp, Some(placement));
        let mut put = |key: String, value: Option<RawJson>| {
            w.entries.push(WireEntry { key, stamp, value });
        };
        put(
            "user".into(),
            Some(json(format!(
                r#"{{"id":{},"name":"alice.example"}}"#,
                100_000 + c.user
            ))?),
        );
        put(
            "roles".into(),
            Some(json(r#"["customer","newsletter"]"#.into())?),
        );
        put("csrf".into(), Some(json(format!(r#""{:032x}""#, c.csrf))?));
        for sku in 0..SKUS {
            if c.cart[sku] > 0 {
                put(cart_key(sku), Some(json(c.cart[sku].to_string())?));
            } else if c.removed[sku] {
                put(cart_key(sku), None);
            }
        }
        Ok(w)
    }

    /// The part one cart write changed: the line's new quantity, or its removal (`qty` 0).
    pub fn delta(
        &self,
        id: SessionId,
        c: &Content,
        base: u64,
        stamp: Stamp,
        sku: usize,
        qty: u16,
    ) -> Result<WireState> {
        let mut w = Self::header(id, c, false, base, stamp, None);
        let value = if qty == 0 {
            None
        } else {
            Some(json(qty.to_string())?)
        };
        w.entries.push(WireEntry {
            key: cart_key(sku),
            stamp,
            value,
        });
        Ok(w)
    }

    /// Encoded bytes of one update inside a batch.
    pub fn update_size(&self, u: &Update) -> Result<usize> {
        wire::encode(u)
            .map(|b| b.len())
            .map_err(|e| BenchError(format!("encoding an update: {e}")))
    }

    /// Sealed body bytes of a push batch whose updates encode to `sizes` (postcard: the
    /// count as a varint, then each update).
    pub fn batch_body(&self, count: usize, sum_sizes: usize) -> usize {
        varint_len(count) + sum_sizes + self.seal_overhead
    }

    /// Sealed body bytes of a push acknowledgement listing `need_full` sessions.
    pub fn ack_body(&self, need_full: usize) -> Result<usize> {
        let ack = PushAck {
            need_full: vec![SessionId::from_bytes([0; 16]); need_full],
            gone: Vec::new(),
        };
        wire::encode(&ack)
            .map(|b| b.len() + self.seal_overhead)
            .map_err(|e| BenchError(format!("encoding an ack: {e}")))
    }

    /// Sealed body bytes of a fetch request.
    pub fn fetch_request_body(&self) -> Result<usize> {
        let req = FetchRequest {
            id: SessionId::from_bytes([0; 16]),
        };
        wire::encode(&req)
            .map(|b| b.len() + self.seal_overhead)
            .map_err(|e| BenchError(format!("encoding a fetch: {e}")))
    }

    /// Sealed body bytes of a fetch answer carrying `state` (or `NotFound`).
    pub fn fetch_response_body(&self, state: Option<WireState>) -> Result<usize> {
        let resp = match state {
            Some(s) => FetchResponse::Found(s),
            None => FetchResponse::NotFound,
        };
        wire::encode(&resp)
            .map(|b| b.len() + self.seal_overhead)
            .map_err(|e| BenchError(format!("encoding a fetch answer: {e}")))
    }
}

/// Splits updates of the given encoded sizes into batches the way `wire::push_batches` does:
/// a new batch when the current one holds `max_items` updates or the next update would take
/// it past `max_bytes` (counting [`BATCH_OVERHEAD`]); returns the batch lengths.
pub fn split(sizes: &[usize], max_items: usize, max_bytes: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut len, mut bytes) = (0usize, BATCH_OVERHEAD);
    for &size in sizes {
        if len > 0 && (len >= max_items.max(1) || bytes.saturating_add(size) > max_bytes) {
            out.push(len);
            len = 0;
            bytes = BATCH_OVERHEAD;
        }
        bytes = bytes.saturating_add(size);
        len += 1;
    }
    if len > 0 {
        out.push(len);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use backend_instantcopy::wire::PushBatch;

    fn content() -> Content {
        let mut cart = [0; SKUS];
        cart[1] = 2;
        cart[5] = 1;
        cart[9] = 3;
        let mut removed = [false; SKUS];
        removed[4] = true;
        Content {
            user: 42,
            csrf: 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
            cart,
            removed,
            created_ns: 5_000_000_000,
            last_access_ns: 6_000_000_000,
        }
    }

    fn stamp(t: u64) -> Stamp {
        Stamp {
            time: ntp64(t),
            node: 3,
        }
    }

    #[test]
    fn batch_size_formula_is_the_real_encoding() {
        let enc = Encoder::new().unwrap();
        assert_eq!(enc.seal_overhead(), 28, "12-byte nonce + 16-byte tag");
        let id = SessionId::from_bytes([7; 16]);
        let c = content();
        let placement = Placement {
            stamp: stamp(1),
            owner: NodeId(1),
            backups: vec![NodeId(2)],
        };
        let mut updates = vec![Update::State(
            enc.full_state(id, &c, stamp(10), placement).unwrap(),
        )];
        for i in 0..200 {
            updates.push(Update::State(
                enc.delta(id, &c, ntp64(10 + i), stamp(11 + i), i as usize % SKUS, 2)
                    .unwrap(),
            ));
        }
        let sizes: Vec<usize> = updates
            .iter()
            .map(|u| enc.update_size(u).unwrap())
            .collect();
        let sum: usize = sizes.iter().sum();
        let batch = PushBatch {
            updates: updates.clone(),
        };
        let real = wire::encode(&batch).unwrap().len() + enc.seal_overhead();
        assert_eq!(enc.batch_body(updates.len(), sum), real);
        // The split matches the crate's.
        for (items, bytes) in [(512, 1 << 20), (16, 1 << 20), (512, 2000), (3, 900)] {
            let (real, _) = wire::push_batches(updates.clone(), items, bytes, usize::MAX);
            let lens: Vec<usize> = real.iter().map(|b| b.updates.len()).collect();
            assert_eq!(
                split(&sizes, items, bytes),
                lens,
                "{items} items, {bytes} B"
            );
        }
    }

    #[test]
    fn the_session_is_shaped_like_the_demos() {
        let enc = Encoder::new().unwrap();
        let id = SessionId::from_bytes([7; 16]);
        let placement = Placement {
            stamp: stamp(1),
            owner: NodeId(1),
            backups: vec![],
        };
        let full = enc.full_state(id, &content(), stamp(2), placement).unwrap();
        let payload: usize = full
            .entries
            .iter()
            .map(|e| e.key.len() + e.value.as_ref().map_or(0, RawJson::len))
            .sum();
        assert!((150..260).contains(&payload), "payload {payload} B");
        let size = enc.update_size(&Update::State(full)).unwrap();
        assert!(size > payload && size < payload + 250, "{size} B encoded");
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
    }
}
