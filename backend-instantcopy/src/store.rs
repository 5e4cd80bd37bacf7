//! The node's memory: a sharded concurrent map of session states, tombstones of destroyed
//! sessions, and a deadline-ordered index that wakes the sweeper exactly when the next session
//! expires (the approach of mini-redis's `db.rs`), instead of scanning everything on a timer.
//!
//! Memory layout, for a node holding millions of sessions (measured by `examples/memory.rs`):
//! the map holds each session as its shared record alone (the replication metadata rides in
//! the record's data buffer, see `state/meta.rs`), one pointer per table slot (the id is the
//! record's own, see `store/map.rs`); callers get a [`SessionState`] view made on the spot. The expiry index is a binary min-heap of
//! `(deadline, id)` pairs, 24 bytes each in one array, rather than a B-tree whose partly
//! filled nodes cost about 40.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use session_core::{SessionData, SessionId, SessionRecord, now_millis};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::state::{MergeOutcome, SessionState, WireState};

mod map;

use map::Sessions;

/// What happened to an update from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Merged (or adopted, for a full state).
    Merged(MergeOutcome),
    /// A partial update for a session this node holds no copy of, or one whose copy is older
    /// than the copy the write was made on: ask for the full state.
    NeedFull,
    /// Dropped: the session is destroyed or already expired.
    Ignored,
}

/// Sessions held in this node's memory.
#[derive(Debug)]
pub struct Store {
    /// Each session's record, its metadata included (see [`SessionState::from_stored`]).
    sessions: Sessions,
    /// Stands in a slot while [`update`](Self::update) works on the record taken out of it
    /// (so the record is not shared, and a write does not copy it). Expired, so should a
    /// caller's closure panic, the slot reads as gone and the sweeper clears it.
    placeholder: Arc<SessionRecord>,
    /// Destroyed (or cycled-away) ids and when their tombstone may go (ms).
    destroyed: DashMap<SessionId, u64>,
    /// `(deadline, id)` pairs, earliest on top; a pair may be earlier than the session's real
    /// deadline (deadlines only move forward), in which case the sweeper re-files it. Never
    /// later: a merge that brings a deadline forward files the new one.
    index: Mutex<BinaryHeap<Reverse<(u64, SessionId)>>>,
    wake: Notify,
    sweeps: AtomicU64,
    swept: AtomicU64,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            sessions: Sessions::default(),
            placeholder: Arc::new(SessionRecord {
                id: SessionId::from_bytes([0; 16]),
                data: SessionData::new(),
                created_at: 0,
                last_access: 0,
                idle_deadline: 0,
                absolute_deadline: 0,
                version: 0,
            }),
            destroyed: DashMap::new(),
            index: Mutex::new(BinaryHeap::new()),
            wake: Notify::new(),
            sweeps: AtomicU64::new(0),
            swept: AtomicU64::new(0),
        }
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when no session is held.
    pub fn is_empty(&self) -> bool {
        self.sessions.len() == 0
    }

    /// Tombstones held.
    pub fn tombstones(&self) -> usize {
        self.destroyed.len()
    }

    /// Sweeper wake-ups and sessions it removed.
    pub fn sweep_counts(&self) -> (u64, u64) {
        (
            self.sweeps.load(Ordering::Relaxed),
            self.swept.load(Ordering::Relaxed),
        )
    }

    fn file(&self, deadline: u64, id: SessionId) {
        let earliest = {
            let mut idx = self.index.lock();
            let earliest = idx.peek().map(|Reverse((d, _))| *d);
            idx.push(Reverse((deadline, id)));
            earliest
        };
        if earliest.is_none_or(|e| deadline < e) {
            self.wake.notify_one();
        }
    }

    /// Runs `f` on a session's state, if held (the record is shared, not copied; `f` runs
    /// outside the map's lock).
    pub fn read<R>(&self, id: &SessionId, f: impl FnOnce(&SessionState) -> R) -> Option<R> {
        let record = self.sessions.get(id)?;
        SessionState::from_stored(record).ok().map(|s| f(&s))
    }

    /// Runs `f` on a session's state for writing, if held (under the map's lock).
    pub fn update<R>(&self, id: &SessionId, f: impl FnOnce(&mut SessionState) -> R) -> Option<R> {
        self.sessions
            .with_mut(id, |slot| Self::modify(slot, &self.placeholder, f))
            .flatten()
    }

    /// Runs `f` on the state in `slot`, the record taken out meanwhile.
    fn modify<R>(
        slot: &mut Arc<SessionRecord>,
        placeholder: &Arc<SessionRecord>,
        f: impl FnOnce(&mut SessionState) -> R,
    ) -> Option<R> {
        let record = std::mem::replace(slot, Arc::clone(placeholder));
        match SessionState::from_stored(record) {
            Ok(mut s) => {
                let out = f(&mut s);
                *slot = s.into_stored();
                Some(out)
            }
            Err(record) => {
                *slot = record;
                None
            }
        }
    }

    /// When the id's tombstone may go (ms), if the id was destroyed.
    pub fn tombstone_until(&self, id: &SessionId) -> Option<u64> {
        self.destroyed.get(id).map(|e| *e.value())
    }

    /// True when the id was destroyed (and its tombstone is still kept).
    pub fn is_destroyed(&self, id: &SessionId) -> bool {
        self.destroyed.contains_key(id)
    }

    /// Holds a new session (created here, or adopted whole from a peer). Refused when the id
    /// is destroyed or the state already expired.
    pub fn insert(&self, state: SessionState) -> bool {
        let r = state.record().clone();
        if self.is_destroyed(&r.id) || r.is_expired(now_millis()) {
            return false;
        }
        self.sessions.insert(state.into_stored());
        self.file(r.expires_at(), r.id);
        true
    }

    /// Merges an update from a peer (or a freshly fetched state).
    pub fn apply(&self, w: &WireState) -> Applied {
        if self.is_destroyed(&w.id) {
            return Applied::Ignored;
        }
        // `Err` is the answer when nothing needs filing.
        let merged = |slot: &mut Arc<SessionRecord>| {
            if !w.full && w.base > slot.version {
                // This copy missed an update the writer's copy had: a delta on top of the
                // gap would leave it looking current while lacking that write.
                return Err(Applied::NeedFull);
            }
            let before = slot.expires_at();
            let Some(outcome) = Self::modify(slot, &self.placeholder, |s| s.merge(w)) else {
                return Err(Applied::Ignored);
            };
            let after = slot.expires_at();
            if after >= before {
                return Err(Applied::Merged(outcome));
            }
            // A peer's earlier absolute deadline won: file the earlier deadline.
            Ok((after, outcome))
        };
        let adopted = || {
            if !w.full {
                return (Err(Applied::NeedFull), None);
            }
            match SessionState::from_wire(w) {
                Some(s) if !s.record().is_expired(now_millis()) => {
                    let at = s.record().expires_at();
                    let adopted = MergeOutcome {
                        changed: true,
                        conflicts: 0,
                    };
                    (Ok((at, adopted)), Some(s.into_stored()))
                }
                _ => (Err(Applied::Ignored), None),
            }
        };
        let (filed, outcome) = match self.sessions.upsert(&w.id, merged, adopted) {
            Ok(filed) => filed,
            Err(answer) => return answer,
        };
        self.file(filed, w.id);
        Applied::Merged(outcome)
    }

    /// Forgets a session and keeps a tombstone until `until` (ms).
    pub fn destroy(&self, id: SessionId, until: u64) {
        self.remove(&id);
        // A repeated destroy (a broadcast retried or replayed) files nothing new.
        if until > now_millis() && self.destroyed.insert(id, until) != Some(until) {
            self.file(until, id);
        }
    }

    /// Forgets every session copy (tombstones stay). Tests use it to stand for a node whose
    /// copies are all behind.
    pub fn clear(&self) {
        self.sessions.clear();
    }

    /// Forgets a copy without a tombstone if its version is still `version` (a copy that changed
    /// since it was handed off is kept). Returns whether it went.
    pub fn remove_if_version(&self, id: &SessionId, version: u64) -> bool {
        self.sessions.remove_if(id, |s| s.version == version)
    }

    /// Forgets a copy without a tombstone (an expired or stale copy).
    pub fn remove(&self, id: &SessionId) {
        self.sessions.remove_if(id, |_| true);
    }

    /// Tombstones created after `since` (ms before their expiry is unknown, so: all tombstones
    /// whose deadline is after `now`), for peers that may have missed them.
    pub fn live_tombstones(&self) -> Vec<(SessionId, u64)> {
        let now = now_millis();
        self.destroyed
            .iter()
            .filter(|e| *e.value() > now)
            .map(|e| (*e.key(), *e.value()))
            .collect()
    }

    /// Runs `f` on every held session (shard by shard; `f` must not touch the store).
    pub fn for_each(&self, mut f: impl FnMut(&SessionState)) {
        self.sessions.for_each(|r| {
            if let Ok(s) = SessionState::from_stored(r.clone()) {
                f(&s);
            }
        });
    }

    /// Ids of every held session (for repair scans).
    pub fn ids(&self) -> Vec<SessionId> {
        let mut ids = Vec::with_capacity(self.sessions.len());
        self.sessions.for_each(|r| ids.push(r.id));
        ids
    }

    /// Removes every session and tombstone whose deadline passed; returns how many sessions
    /// went. Index entries for sessions that were extended are re-filed at their new deadline.
    pub fn sweep(&self, now: u64) -> usize {
        let mut due: Vec<(u64, SessionId)> = {
            let mut idx = self.index.lock();
            let mut due = Vec::new();
            while let Some(Reverse(first)) = idx.peek().copied() {
                if first.0 > now {
                    break;
                }
                idx.pop();
                due.push(first);
            }
            if idx.capacity() > 1024 && idx.len() < idx.capacity() / 4 {
                // Return memory after a mass expiry.
                idx.shrink_to_fit();
            }
            due
        };
        // Popped in order, so a pair filed twice is adjacent: handle it once.
        due.dedup();
        let mut removed = 0;
        for (_, id) in due {
            if let Some(until) = self.destroyed.get(&id).map(|e| *e.value()) {
                if until <= now {
                    self.destroyed.remove(&id);
                } else {
                    self.file(until, id);
                }
            }
            let expires = self.sessions.get(&id).map(|s| s.expires_at());
            match expires {
                Some(at) if at <= now && self.sessions.remove_if(&id, |s| s.is_expired(now)) => {
                    removed += 1;
                }
                Some(at) if at <= now => {}
                Some(at) => self.file(at, id),
                None => {}
            }
        }
        self.sweeps.fetch_add(1, Ordering::Relaxed);
        self.swept.fetch_add(removed as u64, Ordering::Relaxed);
        if removed > 0 && self.sessions.len() < self.sessions.capacity() / 4 {
            // Return memory after a mass expiry.
            self.sessions.shrink_to_fit();
        }
        removed
    }

    /// The earliest filed deadline.
    fn next_deadline(&self) -> Option<u64> {
        self.index.lock().peek().map(|Reverse((d, _))| *d)
    }

    /// Sweeps until `stop` fires: sleeps until the earliest deadline (plus up to `jitter`, so
    /// nodes do not sweep in lockstep), or until a new earlier deadline is filed.
    pub async fn run_sweeper(self: Arc<Self>, jitter: Duration, stop: CancellationToken) {
        loop {
            let now = now_millis();
            let wait = match self.next_deadline() {
                Some(d) if d <= now => Duration::ZERO,
                Some(d) => Duration::from_millis(d - now) + random_jitter(jitter),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => { self.sweep(now_millis()); }
                _ = self.wake.notified() => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// A random duration in `0..=max`.
pub fn random_jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let mut b = [0u8; 8];
    session_core::fill_random(&mut b);
    let r = u64::from_le_bytes(b);
    Duration::from_micros(r % (max.as_micros() as u64 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeId;
    use crate::state::{Placement, Stamp};
    use session_core::{ExpiryPolicy, SessionData};

    fn state(idle_ms: u64) -> SessionState {
        let p =
            ExpiryPolicy::new(Duration::from_millis(idle_ms), Duration::from_secs(3600)).unwrap();
        SessionState::create(
            SessionId::random(),
            SessionData::new(),
            &p,
            now_millis(),
            Stamp { time: 1, node: 1 },
            Placement {
                stamp: Stamp { time: 1, node: 1 },
                owner: NodeId(1),
                backups: vec![],
            },
        )
    }

    #[test]
    fn sweep_removes_only_expired_and_refiles_extended() {
        let s = Store::new();
        let short = state(10);
        let long = state(60_000);
        let extended = state(10);
        let (a, b, c) = (short.record().id, long.record().id, extended.record().id);
        s.insert(short);
        s.insert(long);
        s.insert(extended);
        // Extend `c` in place: its index entry is now early.
        s.update(&c, |st| {
            let p = ExpiryPolicy::new(Duration::from_secs(60), Duration::from_secs(3600)).unwrap();
            st.touch(Stamp { time: 2, node: 1 }, now_millis(), &p);
        });
        let removed = s.sweep(now_millis() + 50);
        assert_eq!(removed, 1);
        assert!(s.read(&a, |_| ()).is_none());
        assert!(s.read(&b, |_| ()).is_some());
        assert!(s.read(&c, |_| ()).is_some(), "extended session survives");
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn a_merge_that_brings_the_deadline_forward_is_swept_on_time() {
        let s = Store::new();
        let st = state(60_000);
        let id = st.record().id;
        let mut earlier = st.to_wire_full();
        s.insert(st);
        // A peer's copy has an earlier absolute deadline (it wins: deadlines take the minimum).
        earlier.absolute_deadline = now_millis() + 20;
        earlier.full = false;
        assert!(matches!(s.apply(&earlier), Applied::Merged(_)));
        assert_eq!(s.next_deadline(), Some(earlier.absolute_deadline));
        assert_eq!(s.sweep(earlier.absolute_deadline), 1);
        assert!(s.read(&id, |_| ()).is_none());
    }

    #[test]
    fn repeated_destroys_and_double_filing_are_handled_once() {
        let s = Store::new();
        let st = state(60_000);
        let id = st.record().id;
        s.insert(st);
        let until = now_millis() + 1_000;
        for _ in 0..5 {
            s.destroy(id, until);
        }
        assert_eq!(
            s.index.lock().len(),
            2,
            "the session's entry and one tombstone entry"
        );
        // The same pair filed twice is swept once.
        s.file(until, id);
        assert_eq!(s.sweep(until + 1), 0);
        assert_eq!(s.tombstones(), 0);
        // Only the gone session's own entry is left; it finds nothing when it comes due.
        assert_eq!(s.index.lock().len(), 1);
        assert_eq!(s.sweep(now_millis() + 120_000), 0);
        assert_eq!(s.index.lock().len(), 0);
    }

    #[test]
    fn tombstones_block_resurrection_until_they_expire() {
        let s = Store::new();
        let st = state(60_000);
        let id = st.record().id;
        let full = st.to_wire_full();
        s.insert(st);
        s.destroy(id, now_millis() + 1000);
        assert_eq!(s.apply(&full), Applied::Ignored);
        assert!(!s.insert(SessionState::from_wire(&full).unwrap()));
        s.sweep(now_millis() + 2000);
        assert_eq!(s.tombstones(), 0);
    }

    #[test]
    fn partial_update_for_unknown_session_asks_for_full_state() {
        let s = Store::new();
        let st = state(60_000);
        let mut partial = st.to_wire_full();
        partial.full = false;
        assert_eq!(s.apply(&partial), Applied::NeedFull);
        assert!(matches!(s.apply(&st.to_wire_full()), Applied::Merged(_)));
        assert_eq!(s.len(), 1);
    }

    #[tokio::test]
    async fn sweeper_wakes_for_the_earliest_deadline() {
        let s = Arc::new(Store::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn(s.clone().run_sweeper(Duration::ZERO, stop.clone()));
        s.insert(state(60_000));
        s.insert(state(50));
        for _ in 0..100 {
            if s.len() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            s.len(),
            1,
            "the 50 ms session was swept without a fixed-interval scan"
        );
        stop.cancel();
        task.await.unwrap();
    }
}
