//! The replicated state of one session, and the merge that makes copies converge.
//!
//! Every key carries the [`Stamp`] of the write that set or removed it (a hybrid-logical-clock
//! time plus the writing node's id, totally ordered). Merging keeps, per key, the write with the
//! highest stamp (last-writer-wins, node id breaking ties; two writes with one stamp, which only
//! two nodes misconfigured with the same id could make, are ordered by value); deadlines only
//! move forward (max); the placement (owner and backups) is last-writer-wins too. This merge is
//! commutative, associative and idempotent, so copies that receive the same updates in any
//! order, duplicated or delayed, end identical (property-tested below, and fuzzed on arbitrary
//! updates). Writes to *different* keys never conflict; concurrent writes to the *same* key
//! resolve deterministically and are counted as conflicts.
//!
//! Past 600 lines because the merge and its property tests (the last third) belong together.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use session_core::{
    Delta, ExpiryPolicy, RawJson, RawJsonStr, SessionData, SessionId, SessionRecord,
};

use crate::config::NodeId;

mod meta;

use meta::Meta;

/// The stamp of one write: HLC time, then writer node id as the tie-break.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Stamp {
    /// Hybrid-logical-clock time (NTP64 format).
    pub time: u64,
    /// The node that made the write.
    pub node: u16,
}

/// Owner and backups, with the stamp of the decision that set them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// When the placement was decided.
    pub stamp: Stamp,
    /// The owner.
    pub owner: NodeId,
    /// The backups (empty with `replication = "all"`).
    pub backups: Vec<NodeId>,
}

/// One key's write as sent between nodes: a value, or `None` for a removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// The key.
    pub key: String,
    /// The write's stamp.
    pub stamp: Stamp,
    /// The value, or `None` when the key was removed.
    pub value: Option<RawJson>,
}

/// A session's state, whole (`full`) or as the part one write changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireState {
    /// The session.
    pub id: SessionId,
    /// True when this carries every key (a receiver without a copy can adopt it).
    pub full: bool,
    /// For a partial update: the version of the copy the write was made on. A receiver whose
    /// copy is older has missed something in between (a lost or reordered update), so it
    /// asks for the whole state instead of merging a delta on top of a gap. 0 for full states.
    pub base: u64,
    /// Creation time (ms).
    pub created_at: u64,
    /// Last activity that moved the idle deadline (ms).
    pub last_access: u64,
    /// Idle deadline (ms).
    pub idle_deadline: u64,
    /// Absolute deadline (ms).
    pub absolute_deadline: u64,
    /// Stamp of the last touch.
    pub touched: Stamp,
    /// Key writes.
    pub entries: Vec<WireEntry>,
    /// The placement, when it is part of this update.
    pub placement: Option<Placement>,
}

/// A [`Stamp`] as kept per key: ten bytes with no padding (a `Stamp` takes 16 in memory).
/// Sessions hold one per key, so this is a per-key saving on every copy a node holds.
#[derive(Clone, Copy, PartialEq, Eq)]
struct PackedStamp([u8; 10]);

impl PackedStamp {
    fn get(self) -> Stamp {
        let [t0, t1, t2, t3, t4, t5, t6, t7, n0, n1] = self.0;
        Stamp {
            time: u64::from_le_bytes([t0, t1, t2, t3, t4, t5, t6, t7]),
            node: u16::from_le_bytes([n0, n1]),
        }
    }
}

impl From<Stamp> for PackedStamp {
    fn from(s: Stamp) -> Self {
        let [t0, t1, t2, t3, t4, t5, t6, t7] = s.time.to_le_bytes();
        let [n0, n1] = s.node.to_le_bytes();
        PackedStamp([t0, t1, t2, t3, t4, t5, t6, t7, n0, n1])
    }
}

impl std::fmt::Debug for PackedStamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

/// How long (in the session's own clock: its newest stamp) a removed key's tombstone is kept.
/// A tombstone makes a removal win over an older write of the key that arrives late; after
/// this long every replica has long since merged the removal (anti-entropy runs every few
/// seconds), so it is dropped. The trade-off is Cassandra's `gc_grace_seconds`: a replica cut
/// off for longer than this, holding the key's older value, brings the key back when it heals.
pub const KEY_TOMBSTONE_TTL_MS: u64 = 60 * 60 * 1000;

/// Most removed-key tombstones a session keeps (the oldest go first): a client that sets and
/// removes fresh keys without end cannot grow a session's state without bound.
pub const MAX_KEY_TOMBSTONES: usize = 256;

/// What a merge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Something changed.
    pub changed: bool,
    /// Incoming writes that lost to a concurrent write of another node with a different value.
    pub conflicts: u32,
}

/// The replicated state of one session held by a node.
///
/// Laid out for a node holding millions of these (see `examples/memory.rs`): the record's data
/// buffer carries, in its extension bytes, every key's write stamp, the removed keys, the
/// touch stamp and the placement (the layout is in `state/meta.rs`), so the store keeps one
/// shared [`SessionRecord`] per session and nothing beside it. This type is the working view
/// the store hands to its callers: the record (shared, as every request that loaded it holds
/// it) and the placement decoded from it.
#[derive(Debug, Clone)]
pub struct SessionState {
    record: Arc<SessionRecord>,
    /// What the record's metadata says, decoded (kept in step by every change).
    placement: Placement,
}

fn find_tomb(t: &[(Box<str>, Stamp)], key: &str) -> Result<usize, usize> {
    t.binary_search_by(|(k, _)| (**k).cmp(key))
}

/// The total order writes to one key are merged by: the stamp, then (for two writes with the
/// same stamp, which a correct clock never issues but two nodes configured with the same id
/// would) the value, a removal first. Total, so copies converge whatever they receive.
fn write_order(stamp: Stamp, value: Option<&RawJsonStr>) -> (Stamp, Option<&str>) {
    (stamp, value.map(RawJsonStr::as_str))
}

/// The winning writes of one merge (or local write), by key, applied together: one rebuild of
/// the session's data however many keys change.
type Pending<'a> = BTreeMap<&'a str, (Stamp, Option<&'a RawJsonStr>)>;

/// The same for placements: the stamp, then the placement itself.
fn placement_order(p: &Placement) -> (Stamp, NodeId, &[NodeId]) {
    (p.stamp, p.owner, &p.backups)
}

impl SessionState {
    /// A new session created at `now` with `data`, every key stamped `stamp`.
    pub fn create(
        id: SessionId,
        data: SessionData,
        policy: &ExpiryPolicy,
        now: u64,
        stamp: Stamp,
        placement: Placement,
    ) -> Self {
        let mut record = policy.new_record(id, now);
        record.data = data;
        Self::from_record(record, stamp, placement)
    }

    /// A state holding `record` (its data, times and deadlines), every key stamped `stamp`.
    /// Used when a session moves to a new id: its creation time and absolute deadline stay.
    pub fn from_record(mut record: SessionRecord, stamp: Stamp, placement: Placement) -> Self {
        let meta = Meta {
            touched: stamp,
            stamps: vec![stamp; record.data.len()],
            tombstones: Vec::new(),
        };
        record.version = stamp.time;
        let mut s = SessionState {
            record: Arc::new(record),
            placement,
        };
        s.save_meta(&meta);
        s
    }

    /// The working view of a record the store holds (`None` if its metadata does not decode,
    /// which only a record this type did not make could cause; the record is handed back).
    pub(crate) fn from_stored(record: Arc<SessionRecord>) -> Result<Self, Arc<SessionRecord>> {
        match meta::decode_placement(record.data.extension()) {
            Some(placement) => Ok(SessionState { record, placement }),
            None => Err(record),
        }
    }

    /// What the store keeps: the record, metadata included.
    pub(crate) fn into_stored(self) -> Arc<SessionRecord> {
        self.record
    }

    /// The update a node that holds no copy sends for a write on `record` (the session as it
    /// fetched it): the delta's keys stamped `stamp`, and the touched deadlines.
    pub fn remote_write(
        record: &SessionRecord,
        delta: &Delta,
        stamp: Stamp,
        now: u64,
        policy: &ExpiryPolicy,
    ) -> WireState {
        let entries = delta
            .removed
            .iter()
            .filter(|k| record.data.get(k).is_some())
            .map(|k| WireEntry {
                key: k.to_string(),
                stamp,
                value: None,
            })
            .chain(delta.set.iter().map(|(k, v)| WireEntry {
                key: k.to_string(),
                stamp,
                value: Some(v.clone()),
            }))
            .collect();
        WireState {
            id: record.id,
            full: false,
            base: record.version,
            created_at: record.created_at,
            last_access: record.last_access.max(now),
            idle_deadline: record
                .idle_deadline
                .max(policy.refreshed_idle_deadline(now, record.absolute_deadline)),
            absolute_deadline: record.absolute_deadline,
            touched: stamp,
            entries,
            placement: None,
        }
    }

    /// Adopts a full state received from a peer.
    pub fn from_wire(w: &WireState) -> Option<Self> {
        if !w.full {
            return None;
        }
        let placement = w.placement.clone()?;
        let mut s = SessionState {
            record: Arc::new(SessionRecord {
                id: w.id,
                data: SessionData::new(),
                created_at: w.created_at,
                last_access: w.last_access,
                idle_deadline: w.idle_deadline.min(w.absolute_deadline),
                absolute_deadline: w.absolute_deadline,
                version: 0,
            }),
            placement,
        };
        let mut meta = Meta {
            touched: w.touched,
            stamps: Vec::new(),
            tombstones: Vec::new(),
        };
        // As a merge into nothing: a key named twice keeps its newest write, in any order.
        let mut pending = Pending::new();
        for e in &w.entries {
            if s.judge(&meta, &pending, e).0 {
                pending.insert(&e.key, (e.stamp, e.value.as_deref()));
            }
        }
        if !s.put_all(&mut meta, &pending) {
            return None;
        }
        s.refresh_version(&meta);
        Some(s)
    }

    /// The materialized record (shared, not copied).
    pub fn record(&self) -> &Arc<SessionRecord> {
        &self.record
    }

    /// The current placement.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// The version: the highest stamp time of the session's data (key writes, removals and
    /// touches). A placement change does not count: a copy that only learned where the
    /// session now lives is no newer for a client than the data it holds, and a node that
    /// re-places a stale copy must not make it look current.
    pub fn version(&self) -> u64 {
        self.record.version
    }

    /// Approximate heap bytes held (for memory accounting): keys and values, their stamps,
    /// removed keys and the placement (the data buffer, which holds them all).
    #[cfg(feature = "testing")]
    pub fn heap_bytes(&self) -> usize {
        self.record.data.buffer_len()
    }

    /// The metadata, decoded. The record's own bytes, so decoding cannot fail unless the
    /// record was not made by this type; then (logged) every key counts as never written.
    fn meta(&self) -> Meta {
        let data = &self.record.data;
        match meta::decode(data.extension(), data.len()) {
            Some((m, _)) => m,
            None => {
                tracing::error!(id = ?self.record.id, "session metadata does not decode");
                Meta {
                    touched: Stamp::default(),
                    stamps: vec![Stamp::default(); data.len()],
                    tombstones: Vec::new(),
                }
            }
        }
    }

    /// Writes `meta` (and the placement) into the record (in place when the encoding keeps
    /// its length).
    fn save_meta(&mut self, meta: &Meta) {
        let bytes = meta::encode(meta, &self.placement);
        if Arc::make_mut(&mut self.record)
            .data
            .set_extension(&bytes)
            .is_err()
        {
            tracing::warn!(id = ?self.record.id, "session metadata not stored: data too large");
        }
    }

    /// Removed keys and their stamps, sorted by key.
    #[cfg(test)]
    fn tombs(&self) -> Vec<(Box<str>, Stamp)> {
        self.meta().tombstones
    }

    fn refresh_version(&mut self, meta: &Meta) {
        let live = meta.stamps.iter().map(|s| s.time);
        let removed = meta.tombstones.iter().map(|(_, s)| s.time);
        let max = live
            .chain(removed)
            .chain([meta.touched.time])
            .max()
            .unwrap_or(0);
        if self.record.version != max {
            Arc::make_mut(&mut self.record).version = max;
        }
    }

    /// The stamp currently recorded for `key` (live or removed).
    fn stamp_of(&self, meta: &Meta, key: &str) -> Option<Stamp> {
        if let Some(i) = self.index_of(key) {
            return meta.stamps.get(i).copied();
        }
        let t = &meta.tombstones;
        find_tomb(t, key).ok().map(|i| t[i].1)
    }

    /// Whether `e` is later than what this state, with the `pending` writes of the same batch
    /// on top, records for its key (see `write_order`), and, when it is not, whether it lost to
    /// a concurrent write of another node with a different value (a conflict).
    fn judge(&self, meta: &Meta, pending: &Pending<'_>, e: &WireEntry) -> (bool, bool) {
        let (local, local_value) = match pending.get(e.key.as_str()) {
            Some(&(stamp, value)) => (stamp, value),
            None => match self.stamp_of(meta, &e.key) {
                Some(stamp) => (stamp, self.record.data.get(&e.key)),
                None => return (true, false),
            },
        };
        let value = e.value.as_deref();
        if write_order(e.stamp, value) > write_order(local, local_value) {
            return (true, false);
        }
        let conflict = local > e.stamp && local.node != e.stamp.node && local_value != value;
        (false, conflict)
    }

    fn index_of(&self, key: &str) -> Option<usize> {
        self.record.data.position(key)
    }

    /// Sets (or removes) every key of `pending` with its stamp, unconditionally, rebuilding the
    /// data (metadata included) once. False (and nothing changed) if the data would pass its
    /// size limit. With nothing pending, the metadata is still written (in place when it
    /// keeps its length).
    fn put_all(&mut self, meta: &mut Meta, pending: &Pending<'_>) -> bool {
        if pending.is_empty() {
            self.save_meta(meta);
            return true;
        }
        // The stamps after the writes, aligned with the (sorted) keys: the same merge as the
        // data's.
        let mut stamps = Vec::with_capacity(meta.stamps.len() + pending.len());
        let mut old = self
            .record
            .data
            .keys()
            .zip(meta.stamps.iter().copied())
            .peekable();
        for (&key, &(stamp, value)) in pending {
            while let Some((_, s)) = old.next_if(|(k, _)| *k < key) {
                stamps.push(s);
            }
            old.next_if(|(k, _)| *k == key);
            if value.is_some() {
                stamps.push(stamp);
            }
        }
        stamps.extend(old.map(|(_, s)| s));
        let mut next = Meta {
            touched: meta.touched,
            stamps,
            tombstones: meta.tombstones.clone(),
        };
        let t = &mut next.tombstones;
        for (&key, &(stamp, value)) in pending {
            match (value, find_tomb(t, key)) {
                (Some(_), Ok(i)) => {
                    t.remove(i);
                }
                (Some(_), Err(_)) => {}
                (None, Ok(i)) => t[i].1 = stamp,
                (None, Err(i)) => t.insert(i, (key.into(), stamp)),
            }
        }
        prune_tombstones(&mut next);
        let bytes = meta::encode(&next, &self.placement);
        let r = Arc::make_mut(&mut self.record);
        if let Err(e) = r
            .data
            .apply_writes_with_extension(pending.iter().map(|(&k, &(_, v))| (k, v)), &bytes)
        {
            tracing::warn!(error = %e, "replicated write refused");
            return false;
        }
        *meta = next;
        true
    }

    /// Applies a local write (delta + touch) stamped `stamp` and returns the update to send.
    pub fn apply_local(
        &mut self,
        delta: &Delta,
        stamp: Stamp,
        now: u64,
        policy: &ExpiryPolicy,
    ) -> WireState {
        let mut meta = self.meta();
        let mut entries = Vec::with_capacity(delta.set.len() + delta.removed.len());
        let mut pending = Pending::new();
        for k in &delta.removed {
            // Removing a key this copy does not have changes nothing a reader could see:
            // recording a tombstone for it would only let a client grow the state.
            if self.index_of(k).is_none() {
                continue;
            }
            pending.insert(k, (stamp, None));
            entries.push(WireEntry {
                key: k.to_string(),
                stamp,
                value: None,
            });
        }
        for (k, v) in &delta.set {
            pending.insert(k, (stamp, Some(v)));
            entries.push(WireEntry {
                key: k.to_string(),
                stamp,
                value: Some(v.clone()),
            });
        }
        let base = self.version();
        // The touch first, so the writes and the touch make one rebuild of the data. (Pruning
        // removed keys sees the same newest stamp either way: `stamp` is among the writes.)
        self.touch_meta(&mut meta, stamp, now, policy);
        self.put_all(&mut meta, &pending);
        self.refresh_version(&meta);
        let mut w = self.header(false, meta.touched);
        w.base = base;
        w.entries = entries;
        w
    }

    fn touch_meta(&mut self, meta: &mut Meta, stamp: Stamp, now: u64, policy: &ExpiryPolicy) {
        let r = Arc::make_mut(&mut self.record);
        r.last_access = r.last_access.max(now);
        r.idle_deadline = r
            .idle_deadline
            .max(policy.refreshed_idle_deadline(now, r.absolute_deadline));
        meta.touched = meta.touched.max(stamp);
    }

    /// Moves the idle deadline for activity at `now`.
    pub fn touch(&mut self, stamp: Stamp, now: u64, policy: &ExpiryPolicy) {
        let mut meta = self.meta();
        self.touch_meta(&mut meta, stamp, now, policy);
        self.save_meta(&meta);
        self.refresh_version(&meta);
    }

    /// Sets a new placement (failover re-homing, repair) and returns the update to send.
    pub fn set_placement(&mut self, placement: Placement) -> WireState {
        let base = self.version();
        let meta = self.meta();
        if placement_order(&placement) > placement_order(&self.placement) {
            self.placement = placement;
            self.save_meta(&meta);
            self.refresh_version(&meta);
        }
        let mut w = self.header(false, meta.touched);
        w.base = base;
        w.placement = Some(self.placement.clone());
        w
    }

    fn header(&self, full: bool, touched: Stamp) -> WireState {
        let r = &self.record;
        WireState {
            id: r.id,
            full,
            base: if full { 0 } else { r.version },
            created_at: r.created_at,
            last_access: r.last_access,
            idle_deadline: r.idle_deadline,
            absolute_deadline: r.absolute_deadline,
            touched,
            entries: Vec::new(),
            placement: None,
        }
    }

    /// The whole state, for a node that has no copy.
    pub fn to_wire_full(&self) -> WireState {
        let meta = self.meta();
        let mut w = self.header(true, meta.touched);
        w.entries = self
            .record
            .data
            .iter()
            .zip(&meta.stamps)
            .map(|((k, v), s)| WireEntry {
                key: k.to_owned(),
                stamp: *s,
                value: Some(v.to_owned()),
            })
            .chain(meta.tombstones.iter().map(|(k, s)| WireEntry {
                key: k.to_string(),
                stamp: *s,
                value: None,
            }))
            .collect();
        w.placement = Some(self.placement.clone());
        w
    }

    /// This state under a new id (id cycling keeps every stamp, so late updates to the old id
    /// can never be mistaken for newer ones).
    pub fn with_id(&self, id: SessionId) -> SessionState {
        let mut s = self.clone();
        Arc::make_mut(&mut s.record).id = id;
        s
    }

    /// Merges an update from a peer.
    pub fn merge(&mut self, w: &WireState) -> MergeOutcome {
        let mut out = MergeOutcome::default();
        let mut meta = self.meta();
        {
            let r = &self.record;
            let created_at = r.created_at.min(w.created_at);
            let absolute_deadline = r.absolute_deadline.min(w.absolute_deadline);
            let last_access = r.last_access.max(w.last_access);
            let idle_deadline = r.idle_deadline.max(w.idle_deadline).min(absolute_deadline);
            let after = (created_at, last_access, idle_deadline, absolute_deadline);
            if (
                r.created_at,
                r.last_access,
                r.idle_deadline,
                r.absolute_deadline,
            ) != after
            {
                let r = Arc::make_mut(&mut self.record);
                r.created_at = created_at;
                r.last_access = last_access;
                r.idle_deadline = idle_deadline;
                r.absolute_deadline = absolute_deadline;
                out.changed = true;
            }
        }
        let mut meta_changed = false;
        if w.touched > meta.touched {
            meta.touched = w.touched;
            meta_changed = true;
        }
        if let Some(p) = &w.placement
            && placement_order(p) > placement_order(&self.placement)
        {
            self.placement = p.clone();
            meta_changed = true;
        }
        let mut pending = Pending::new();
        for e in &w.entries {
            let (wins, conflict) = self.judge(&meta, &pending, e);
            if wins {
                pending.insert(&e.key, (e.stamp, e.value.as_deref()));
            } else if conflict {
                out.conflicts += 1;
            }
        }
        if !pending.is_empty() {
            if self.put_all(&mut meta, &pending) {
                out.changed = true;
            } else if meta_changed {
                self.save_meta(&meta);
            }
        } else if meta_changed {
            self.save_meta(&meta);
        }
        out.changed |= meta_changed;
        if out.changed {
            self.refresh_version(&meta);
        }
        out
    }

    /// A 128-bit digest of everything that tells two copies apart: every key's stamp (stamps
    /// are unique per write, so they stand for the values), removed keys, the touch stamp, the
    /// placement and the four times. Two copies with equal digests hold the same state;
    /// anti-entropy compares digests, never values. The hash (XXH3-128) is fixed by the crate
    /// version, so nodes of different builds agree during a rolling upgrade.
    pub fn digest(&self) -> [u8; 16] {
        let meta = self.meta();
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for (k, s) in self.record.data.keys().zip(&meta.stamps) {
            h.update(k.as_bytes());
            h.update(&[0]);
            h.update(&PackedStamp::from(*s).0);
        }
        h.update(&[1]);
        for (k, s) in &meta.tombstones {
            h.update(k.as_bytes());
            h.update(&[0]);
            h.update(&PackedStamp::from(*s).0);
        }
        h.update(&[2]);
        h.update(&PackedStamp::from(meta.touched).0);
        h.update(&PackedStamp::from(self.placement.stamp).0);
        h.update(&self.placement.owner.0.to_le_bytes());
        for b in &self.placement.backups {
            h.update(&b.0.to_le_bytes());
        }
        let r = &self.record;
        for t in [
            r.created_at,
            r.last_access,
            r.idle_deadline,
            r.absolute_deadline,
        ] {
            h.update(&t.to_le_bytes());
        }
        h.digest128().to_le_bytes()
    }

    /// Keys, values and stamps in a canonical form (for comparing copies in tests).
    #[cfg(feature = "testing")]
    pub fn fingerprint(&self) -> String {
        let full = self.to_wire_full();
        let mut entries = full.entries;
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        format!(
            "{:?}|{}|{}|{}|{:?}|{:?}|{:?}",
            entries,
            full.last_access,
            full.idle_deadline,
            full.absolute_deadline,
            full.touched,
            full.placement,
            self.record.version
        )
    }
}

/// Drops removed-key tombstones older than [`KEY_TOMBSTONE_TTL_MS`] before the session's
/// newest stamp, and the oldest beyond [`MAX_KEY_TOMBSTONES`]. Decided by the state alone, so
/// replicas holding the same writes prune the same tombstones and stay identical.
fn prune_tombstones(meta: &mut Meta) {
    if meta.tombstones.is_empty() {
        return;
    }
    let newest = meta
        .stamps
        .iter()
        .map(|s| s.time)
        .chain(meta.tombstones.iter().map(|(_, s)| s.time))
        .chain([meta.touched.time])
        .max()
        .unwrap_or(0);
    let t = &mut meta.tombstones;
    t.retain(|(_, s)| s.time.saturating_add(KEY_TOMBSTONE_TTL_MS) >= newest);
    if t.len() > MAX_KEY_TOMBSTONES {
        let mut by_age: Vec<Stamp> = t.iter().map(|(_, s)| *s).collect();
        by_age.sort_unstable();
        let cutoff = by_age[t.len() - MAX_KEY_TOMBSTONES];
        t.retain(|(_, s)| *s >= cutoff);
    }
    t.shrink_to_fit();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn policy() -> ExpiryPolicy {
        ExpiryPolicy::new(Duration::from_secs(100), Duration::from_secs(1000)).unwrap()
    }

    fn placement(t: u64) -> Placement {
        Placement {
            stamp: Stamp { time: t, node: 1 },
            owner: NodeId(1),
            backups: vec![NodeId(2)],
        }
    }

    fn base() -> SessionState {
        let mut data = SessionData::new();
        data.insert("k0", RawJson::from_value(&0).unwrap());
        SessionState::create(
            SessionId::from_bytes([7; 16]),
            data,
            &policy(),
            1_000,
            Stamp { time: 1, node: 1 },
            placement(1),
        )
    }

    /// One write made by `node` at logical `time`: set or remove keys.
    #[derive(Debug, Clone)]
    struct Op {
        node: u16,
        time: u64,
        now: u64,
        sets: Vec<(u8, i32)>,
        removes: Vec<u8>,
        rehome: bool,
    }

    fn op() -> impl Strategy<Value = Op> {
        (
            1u16..4,
            2u64..60,
            1_000u64..5_000,
            proptest::collection::vec((0u8..5, any::<i32>()), 0..3),
            proptest::collection::vec(0u8..5, 0..2),
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(node, time, now, sets, removes, rehome)| Op {
                node,
                time,
                now,
                sets,
                removes,
                rehome,
            })
    }

    /// The update each op produces, made on the writer's own copy (as a node would).
    fn updates(ops: &[Op]) -> Vec<WireState> {
        let mut writers: std::collections::HashMap<u16, SessionState> = Default::default();
        ops.iter()
            .enumerate()
            .map(|(i, o)| {
                let s = writers.entry(o.node).or_insert_with(base);
                let mut d = Delta::default();
                for k in &o.removes {
                    d.remove(&format!("k{k}"));
                }
                for (k, v) in &o.sets {
                    d.set(&format!("k{k}"), RawJson::from_value(v).unwrap());
                }
                // An HLC never issues the same stamp twice: make each op's time unique.
                let stamp = Stamp {
                    time: o.time * 64 + i as u64,
                    node: o.node,
                };
                let mut w = s.apply_local(&d, stamp, o.now, &policy());
                if o.rehome {
                    let p = Placement {
                        stamp,
                        owner: NodeId(o.node),
                        backups: vec![NodeId(o.node % 3 + 1)],
                    };
                    w.placement = s.set_placement(p).placement;
                }
                w
            })
            .collect()
    }

    proptest! {
        /// Copies that receive the same updates in any order, with duplicates, end identical.
        #[test]
        fn copies_converge_under_reordering_and_duplication(
            ops in proptest::collection::vec(op(), 1..12),
            seeds in proptest::collection::vec(any::<u64>(), 3),
            dups in proptest::collection::vec(0usize..12, 0..6),
        ) {
            let ups = updates(&ops);
            let mut finals = Vec::new();
            for seed in seeds {
                // A deterministic shuffle per seed, plus duplicated deliveries.
                let mut order: Vec<usize> = (0..ups.len()).collect();
                order.extend(dups.iter().map(|d| d % ups.len()));
                let mut x = seed | 1;
                for i in (1..order.len()).rev() {
                    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                    order.swap(i, (x % (i as u64 + 1)) as usize);
                }
                let mut copy = base();
                for i in order {
                    copy.merge(&ups[i]);
                }
                finals.push(copy.fingerprint());
            }
            prop_assert!(finals.windows(2).all(|w| w[0] == w[1]), "{finals:#?}");
        }

        /// Merging is idempotent and a full state is equivalent to its history.
        #[test]
        fn full_state_equals_history(ops in proptest::collection::vec(op(), 1..10)) {
            let ups = updates(&ops);
            let mut a = base();
            for u in &ups { a.merge(u); }
            let once = a.fingerprint();
            for u in &ups { a.merge(u); }
            prop_assert_eq!(&once, &a.fingerprint());
            let b = SessionState::from_wire(&a.to_wire_full()).unwrap();
            prop_assert_eq!(once, b.fingerprint());
            prop_assert_eq!(a.digest(), b.digest());
        }

        /// Digests agree exactly when copies do: equal after the same updates in any order,
        /// different while one copy misses an update that changed something.
        #[test]
        fn digests_tell_copies_apart(ops in proptest::collection::vec(op(), 2..10), skip in 0usize..10) {
            let ups = updates(&ops);
            let skip = skip % ups.len();
            let mut all = base();
            let mut reversed = base();
            let mut missing = base();
            for u in &ups { all.merge(u); }
            for u in ups.iter().rev() { reversed.merge(u); }
            for (i, u) in ups.iter().enumerate() { if i != skip { missing.merge(u); } }
            prop_assert_eq!(all.digest(), reversed.digest());
            prop_assert_eq!(
                all.digest() == missing.digest(),
                all.fingerprint() == missing.fingerprint()
            );
        }

        /// Writes to different keys from different nodes all survive, whatever the order.
        #[test]
        fn disjoint_writes_all_survive(order in Just((0..6usize).collect::<Vec<_>>()).prop_shuffle()) {
            let ops: Vec<Op> = (0..6i32).map(|i| Op {
                node: (i % 3 + 1) as u16, time: 10 + i as u64, now: 2_000,
                sets: vec![(i as u8 % 5, i)], removes: vec![], rehome: false,
            }).collect();
            let ups = updates(&ops[..5]);
            let mut copy = base();
            for i in order.into_iter().filter(|i| *i < 5) { copy.merge(&ups[i]); }
            for i in 0..5i32 {
                let got: Option<i32> = copy.record().data.get_as(&format!("k{i}")).unwrap();
                prop_assert_eq!(got, Some(i));
            }
        }
    }

    #[test]
    fn same_key_conflict_is_counted_and_resolved_by_stamp() {
        let mut a = base();
        let mut b = base();
        let mut da = Delta::default();
        da.set("k", RawJson::from_value(&"from-a").unwrap());
        let mut db = Delta::default();
        db.set("k", RawJson::from_value(&"from-b").unwrap());
        let wa = a.apply_local(&da, Stamp { time: 5, node: 1 }, 2000, &policy());
        let wb = b.apply_local(&db, Stamp { time: 5, node: 2 }, 2000, &policy());
        let oa = a.merge(&wb);
        let ob = b.merge(&wa);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(
            a.record().data.get_as::<String>("k").unwrap().as_deref(),
            Some("from-b"),
            "equal times: the higher node id wins"
        );
        assert_eq!(
            oa.conflicts + ob.conflicts,
            1,
            "exactly one side saw a losing write"
        );
    }

    #[test]
    fn removal_beats_older_set_and_loses_to_newer() {
        let mut s = base();
        let mut d = Delta::default();
        d.remove("k0");
        let w_remove = s.apply_local(&d, Stamp { time: 10, node: 2 }, 2000, &policy());
        assert!(s.record().data.get("k0").is_none());
        // An older set arriving late does not resurrect the key.
        let mut old = base();
        let mut d = Delta::default();
        d.set("k0", RawJson::from_value(&"old").unwrap());
        let w_old = old.apply_local(&d, Stamp { time: 5, node: 3 }, 2000, &policy());
        s.merge(&w_old);
        assert!(s.record().data.get("k0").is_none());
        // A newer set does.
        let mut d = Delta::default();
        d.set("k0", RawJson::from_value(&"new").unwrap());
        let w_new = old.apply_local(&d, Stamp { time: 20, node: 3 }, 2000, &policy());
        s.merge(&w_new);
        s.merge(&w_remove);
        assert_eq!(
            s.record().data.get_as::<String>("k0").unwrap().as_deref(),
            Some("new")
        );
    }

    fn entry(key: &str, time: u64, node: u16, value: Option<&str>) -> WireEntry {
        WireEntry {
            key: key.into(),
            stamp: Stamp { time, node },
            value: value.map(|v| RawJson::from_value(v).unwrap()),
        }
    }

    /// Regression (fuzz property `converges` in fuzz/fuzz_targets/peer_messages.rs): a full
    /// state naming a key twice was adopted in entry order, so the older write could win.
    #[test]
    fn adopting_a_full_state_does_not_depend_on_entry_order() {
        let mut w = base().to_wire_full();
        w.entries = vec![
            entry("k", 5, 1, Some("newer")),
            entry("k", 3, 2, Some("older")),
            entry("gone", 4, 1, None),
            entry("gone", 2, 1, Some("before removal")),
        ];
        let forward = SessionState::from_wire(&w).unwrap();
        w.entries.reverse();
        let backward = SessionState::from_wire(&w).unwrap();
        assert_eq!(forward.fingerprint(), backward.fingerprint());
        assert_eq!(
            forward
                .record()
                .data
                .get_as::<String>("k")
                .unwrap()
                .as_deref(),
            Some("newer")
        );
        assert!(forward.record().data.get("gone").is_none());
    }

    /// Regression: two writes with the same stamp (two nodes misconfigured with one node id)
    /// or two placements with the same stamp left copies that merged them in different orders
    /// different for ever. Ties now break on the value, then on the placement itself.
    #[test]
    fn equal_stamps_still_converge() {
        let mut a = base();
        let mut b = base();
        let mut w1 = base().to_wire_full();
        w1.full = false;
        w1.entries = vec![entry("k", 9, 3, Some("one"))];
        w1.placement = Some(Placement {
            stamp: Stamp { time: 9, node: 3 },
            owner: NodeId(3),
            backups: vec![NodeId(1)],
        });
        let mut w2 = w1.clone();
        w2.entries = vec![entry("k", 9, 3, Some("two"))];
        w2.placement = Some(Placement {
            stamp: Stamp { time: 9, node: 3 },
            owner: NodeId(2),
            backups: vec![NodeId(4)],
        });
        a.merge(&w1);
        a.merge(&w2);
        b.merge(&w2);
        b.merge(&w1);
        assert_eq!(a.fingerprint(), b.fingerprint());
        // Merging either again changes nothing.
        assert!(!a.merge(&w1).changed);
        assert!(!a.merge(&w2).changed);
    }

    #[test]
    fn packed_stamps_round_trip_at_the_extremes() {
        for (time, node) in [
            (0, 0),
            (1, 1),
            (u64::MAX, u16::MAX),
            (0x0102_0304_0506_0708, 513),
        ] {
            let s = Stamp { time, node };
            assert_eq!(PackedStamp::from(s).get(), s);
        }
        assert_eq!(std::mem::size_of::<PackedStamp>(), 10);
    }

    #[test]
    fn tombstones_come_and_go_with_removals_and_later_sets() {
        let mut s = base();
        assert!(s.tombs().is_empty(), "no removal, no tombstone");
        let mut d = Delta::default();
        d.remove("k0");
        d.remove("never-set");
        s.apply_local(&d, Stamp { time: 10, node: 1 }, 2000, &policy());
        assert_eq!(
            s.tombs().len(),
            1,
            "a key that never existed leaves no tombstone"
        );
        assert_eq!(
            s.stamp_of(&s.meta(), "k0"),
            Some(Stamp { time: 10, node: 1 })
        );
        assert!(s.meta().stamps.is_empty());
        let mut d = Delta::default();
        d.set("k0", RawJson::from_value(&1).unwrap());
        d.set("never-set", RawJson::from_value(&2).unwrap());
        s.apply_local(&d, Stamp { time: 11, node: 1 }, 2000, &policy());
        assert!(
            s.tombs().is_empty(),
            "the tombstones go with the later sets"
        );
        assert_eq!(s.meta().stamps.len(), 2);
        assert_eq!(s.version(), 11);
        // The state survives a full round trip through the wire form.
        let copy = SessionState::from_wire(&s.to_wire_full()).unwrap();
        assert_eq!(copy.fingerprint(), s.fingerprint());
    }

    #[test]
    fn key_tombstones_are_pruned_by_age_and_count_identically_on_every_replica() {
        let policy = policy();
        let mut s = base();
        let mut replica = SessionState::from_wire(&s.to_wire_full()).unwrap();
        // Set and remove 300 fresh keys, one pair per millisecond.
        let mut t = 100;
        for i in 0..300 {
            let mut d = Delta::default();
            d.set(&format!("x{i}"), RawJson::from_value(&i).unwrap());
            let w = s.apply_local(&d, Stamp { time: t, node: 1 }, 2000, &policy);
            replica.merge(&w);
            let mut d = Delta::default();
            d.remove(&format!("x{i}"));
            let w = s.apply_local(
                &d,
                Stamp {
                    time: t + 1,
                    node: 1,
                },
                2000,
                &policy,
            );
            replica.merge(&w);
            t += 2;
        }
        assert_eq!(s.tombs().len(), MAX_KEY_TOMBSTONES, "capped");
        assert_eq!(s.tombs().iter().map(|(k, _)| &**k).min(), Some("x100"));
        assert_eq!(
            replica.fingerprint(),
            s.fingerprint(),
            "replicas prune alike"
        );
        // An hour of the session's time later, every one of them is gone.
        let mut d = Delta::default();
        d.set("k", RawJson::from_value(&1).unwrap());
        let w = s.apply_local(
            &d,
            Stamp {
                time: t + KEY_TOMBSTONE_TTL_MS + 1,
                node: 1,
            },
            2000,
            &policy,
        );
        replica.merge(&w);
        assert!(s.tombs().is_empty());
        assert_eq!(replica.fingerprint(), s.fingerprint());
        // A full copy of the pruned state converges with the replica.
        let copy = SessionState::from_wire(&s.to_wire_full()).unwrap();
        assert_eq!(copy.fingerprint(), s.fingerprint());
    }

    #[test]
    fn deadlines_only_move_forward_and_respect_the_absolute_deadline() {
        let mut s = base();
        let before = s.record().idle_deadline;
        let mut stale = s.to_wire_full();
        stale.idle_deadline = before - 50_000;
        stale.last_access = 0;
        s.merge(&stale);
        assert_eq!(s.record().idle_deadline, before);
        let mut far = s.to_wire_full();
        far.idle_deadline = u64::MAX;
        s.merge(&far);
        assert_eq!(s.record().idle_deadline, s.record().absolute_deadline);
    }
}
