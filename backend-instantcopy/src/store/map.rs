//! The store's session map: shards of a hash table holding each session's record and nothing
//! else. The id is not stored beside it: lookups hash the id and compare with the record's own
//! (`record.id`), so a slot is one pointer (8 bytes) instead of `DashMap`'s id plus pointer
//! (24). With the table's spare capacity (a shard is between 44 % and 88 % full: it doubles
//! when full) that is 10 to 20 bytes per session instead of 27 to 55; `examples/memory.rs`
//! measured 52 B per session with `DashMap` at 1,000,000 sessions on 8 shards.
//!
//! Shards are chosen, as `DashMap` does, from hash bits the table itself uses last, and each
//! is behind its own `RwLock`; closures run under the shard's lock and must not touch the map.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;
use parking_lot::RwLock;
use session_core::{SessionId, SessionRecord};

type Shard = HashTable<Arc<SessionRecord>>;

/// Session records by id.
#[derive(Debug)]
pub(super) struct Sessions {
    shards: Box<[RwLock<Shard>]>,
    /// `64 − log2(shards)`.
    shift: u32,
    hasher: RandomState,
}

impl Default for Sessions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let n = (cores * 4).next_power_of_two().max(2);
        Sessions {
            shards: (0..n).map(|_| RwLock::new(HashTable::new())).collect(),
            shift: 64 - n.trailing_zeros(),
            hasher: RandomState::new(),
        }
    }
}

impl Sessions {
    fn hash(&self, id: &SessionId) -> u64 {
        self.hasher.hash_one(id)
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        // Skip the top 7 bits: the table keeps them as each slot's tag.
        &self.shards[((hash << 7) >> self.shift) as usize]
    }

    fn rehash(&self) -> impl Fn(&Arc<SessionRecord>) -> u64 + '_ {
        |r| self.hash(&r.id)
    }

    /// Records held.
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Slots allocated (held plus spare).
    pub(super) fn capacity(&self) -> usize {
        self.shards.iter().map(|s| s.read().capacity()).sum()
    }

    /// The record of `id`, shared.
    pub(super) fn get(&self, id: &SessionId) -> Option<Arc<SessionRecord>> {
        let h = self.hash(id);
        self.shard(h).read().find(h, |r| r.id == *id).cloned()
    }

    /// Runs `f` on the slot of `id`, if held, under the shard's write lock. `f` may replace
    /// the record but must keep its id.
    pub(super) fn with_mut<R>(
        &self,
        id: &SessionId,
        f: impl FnOnce(&mut Arc<SessionRecord>) -> R,
    ) -> Option<R> {
        let h = self.hash(id);
        self.shard(h).write().find_mut(h, |r| r.id == *id).map(f)
    }

    /// Under the shard's write lock: `occupied` on the slot of `id` if held, else `vacant`,
    /// whose record (if any, with id `id`) is then held.
    pub(super) fn upsert<R>(
        &self,
        id: &SessionId,
        occupied: impl FnOnce(&mut Arc<SessionRecord>) -> R,
        vacant: impl FnOnce() -> (R, Option<Arc<SessionRecord>>),
    ) -> R {
        let h = self.hash(id);
        let mut shard = self.shard(h).write();
        if let Some(slot) = shard.find_mut(h, |r| r.id == *id) {
            return occupied(slot);
        }
        let (out, record) = vacant();
        if let Some(r) = record.filter(|r| r.id == *id) {
            shard.insert_unique(h, r, self.rehash());
        }
        out
    }

    /// Holds `record`, replacing any record with its id.
    pub(super) fn insert(&self, record: Arc<SessionRecord>) {
        let id = record.id;
        let h = self.hash(&id);
        let mut shard = self.shard(h).write();
        match shard.find_mut(h, |r| r.id == id) {
            Some(slot) => *slot = record,
            None => {
                shard.insert_unique(h, record, self.rehash());
            }
        }
    }

    /// Forgets `id` if `keep` says no to its record; returns whether it went.
    pub(super) fn remove_if(
        &self,
        id: &SessionId,
        remove: impl FnOnce(&SessionRecord) -> bool,
    ) -> bool {
        let h = self.hash(id);
        let mut shard = self.shard(h).write();
        match shard.find_entry(h, |r| r.id == *id) {
            Ok(e) if remove(e.get()) => {
                e.remove();
                true
            }
            _ => false,
        }
    }

    /// Forgets everything.
    pub(super) fn clear(&self) {
        for s in self.shards.iter() {
            s.write().clear();
        }
    }

    /// Runs `f` on every record, shard by shard (under each shard's read lock).
    pub(super) fn for_each(&self, mut f: impl FnMut(&Arc<SessionRecord>)) {
        for s in self.shards.iter() {
            s.read().iter().for_each(&mut f);
        }
    }

    /// Returns spare slots to the allocator (after a mass expiry).
    pub(super) fn shrink_to_fit(&self) {
        for s in self.shards.iter() {
            s.write().shrink_to_fit(self.rehash());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::SessionData;

    fn record(id: SessionId, version: u64) -> Arc<SessionRecord> {
        Arc::new(SessionRecord {
            id,
            data: SessionData::new(),
            created_at: 0,
            last_access: 0,
            idle_deadline: 0,
            absolute_deadline: 0,
            version,
        })
    }

    #[test]
    fn behaves_like_a_map_by_the_records_id() {
        let m = Sessions::default();
        let ids: Vec<SessionId> = (0..2000).map(|_| SessionId::random()).collect();
        for (i, id) in ids.iter().enumerate() {
            m.insert(record(*id, i as u64));
        }
        assert_eq!(m.len(), 2000);
        m.insert(record(ids[0], 77));
        assert_eq!(m.len(), 2000, "same id replaces");
        assert_eq!(m.get(&ids[0]).map(|r| r.version), Some(77));
        assert_eq!(m.get(&ids[5]).map(|r| r.version), Some(5));
        assert!(m.get(&SessionId::random()).is_none());
        assert_eq!(m.with_mut(&ids[6], |r| *r = record(ids[6], 60)), Some(()));
        assert_eq!(m.get(&ids[6]).map(|r| r.version), Some(60));
        assert!(!m.remove_if(&ids[7], |r| r.version == 8));
        assert!(m.remove_if(&ids[7], |r| r.version == 7));
        assert!(m.get(&ids[7]).is_none());
        let fresh = SessionId::random();
        let added = m.upsert(&fresh, |_| false, || (true, Some(record(fresh, 1))));
        assert!(added);
        assert!(m.upsert(&fresh, |r| r.version == 1, || (false, None)));
        let other = SessionId::random();
        m.upsert(&other, |_| (), || ((), Some(record(fresh, 2))));
        assert!(
            m.get(&other).is_none(),
            "a record under another id is not held"
        );
        let mut seen = 0;
        m.for_each(|_| seen += 1);
        assert_eq!(seen, m.len());
        for id in &ids[100..] {
            m.remove_if(id, |_| true);
        }
        m.shrink_to_fit();
        assert!(m.capacity() < 1000);
        assert_eq!(m.get(&ids[50]).map(|r| r.version), Some(50));
        m.clear();
        assert_eq!(m.len(), 0);
    }
}
