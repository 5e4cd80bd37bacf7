//! The near cache: copies of sessions this node does not hold, kept after a fetch so the next
//! read of the same session here is local (`replication = k` only, with `"all"` every node
//! holds every session; opt-in through `near_cache_capacity`, because of the window below).
//!
//! Owns nothing but the bounded map (`quick_cache`, an approximate LRU that costs a hash lookup
//! per read). A cached copy is served only while it is at least as new as the version in the
//! client's token, so a client never reads older data than it already saw (read-your-writes
//! holds as for a holder's copy); only while it is younger than `near_cache_ttl`, which bounds
//! how long another client's writes can go unseen here; never once the session's id is
//! tombstoned (a logout or id cycle, broadcast to every member, is checked before the cache);
//! and never past the copy's own deadlines. It is not a holder's copy: anti-entropy,
//! rebalancing and drains ignore it. A write or touch this node forwards to the holders
//! replaces the entry, once a holder acknowledged it, with the copy as the write left it (the
//! version the client's new token names, the deadlines the holders computed the same way), so
//! the client's next read here is local; a write this node makes as a holder, an id cycle or a
//! destroy drops it. A copy that fell behind the token is refreshed from one holder first
//! (see `read::fetch_remote`), the other only if that one does not have it in time.

use std::sync::Arc;
use std::time::Duration;

use quick_cache::sync::Cache;
use session_core::{SessionId, SessionRecord};

use crate::state::Placement;

/// A fetched copy and when it was fetched (ms since the epoch).
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub(crate) record: Arc<SessionRecord>,
    pub(crate) placement: Placement,
    pub(crate) version: u64,
    pub(crate) fetched_at: u64,
}

/// What the cache has for a session at a token's version.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A copy that may serve the read.
    Fresh(Cached),
    /// A copy, but too old for the token, past the TTL or expired: the holders answered for
    /// this session recently, so a refresh asks one of them first.
    Behind,
    /// Nothing cached.
    Absent,
}

/// Copies of sessions held elsewhere, at most `capacity`, each served for at most `ttl`.
pub(crate) struct NearCache {
    map: Cache<SessionId, Cached>,
    ttl_ms: u64,
}

impl std::fmt::Debug for NearCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearCache")
            .field("entries", &self.map.len())
            .finish()
    }
}

impl NearCache {
    /// A cache of at most `capacity` copies (`None` when the capacity is 0: off).
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Option<Self> {
        (capacity > 0).then(|| NearCache {
            map: Cache::new(capacity),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// The cached copy of `id` if it is at least `version`, fetched less than the TTL ago and
    /// not past its deadlines at `now`.
    pub(crate) fn lookup(&self, id: &SessionId, version: u64, now: u64) -> Lookup {
        let Some(c) = self.map.get(id) else {
            return Lookup::Absent;
        };
        if c.version < version
            || now.saturating_sub(c.fetched_at) >= self.ttl_ms
            || c.record.is_expired(now)
        {
            return Lookup::Behind;
        }
        Lookup::Fresh(c)
    }

    /// [`lookup`](Self::lookup)'s copy, if it may serve.
    #[cfg(test)]
    fn get(&self, id: &SessionId, version: u64, now: u64) -> Option<Cached> {
        match self.lookup(id, version, now) {
            Lookup::Fresh(c) => Some(c),
            Lookup::Behind | Lookup::Absent => None,
        }
    }

    /// Keeps a fetched copy (replacing an older one; never a newer one by an older).
    pub(crate) fn put(&self, id: SessionId, entry: Cached) {
        if let Some(old) = self.map.get(&id)
            && old.version > entry.version
        {
            return;
        }
        self.map.insert(id, entry);
    }

    /// Drops the copy of `id` (a write or touch forwarded from here, a destroy).
    pub(crate) fn forget(&self, id: &SessionId) {
        self.map.remove(id);
    }

    /// Copies cached now.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::ExpiryPolicy;

    fn entry(version: u64, fetched_at: u64) -> Cached {
        let policy = ExpiryPolicy::new(Duration::from_secs(60), Duration::from_secs(600)).unwrap();
        Cached {
            record: Arc::new(policy.new_record(SessionId::random(), 1_000)),
            placement: Placement {
                stamp: crate::state::Stamp { time: 1, node: 1 },
                owner: crate::config::NodeId(1),
                backups: vec![],
            },
            version,
            fetched_at,
        }
    }

    #[test]
    fn serves_only_what_is_new_enough_young_enough_and_live() {
        let c = NearCache::new(10, Duration::from_secs(30)).unwrap();
        let id = SessionId::random();
        c.put(id, entry(5, 1_000));
        assert!(c.get(&id, 5, 2_000).is_some());
        assert!(c.get(&id, 4, 2_000).is_some());
        assert!(c.get(&id, 6, 2_000).is_none(), "older than the token");
        assert!(matches!(c.lookup(&id, 6, 2_000), Lookup::Behind));
        assert!(matches!(
            c.lookup(&SessionId::random(), 0, 2_000),
            Lookup::Absent
        ));
        assert!(c.get(&id, 5, 31_000).is_none(), "past the TTL");
        assert!(
            c.get(&id, 5, 1_000 + 61_000).is_none(),
            "past the idle deadline"
        );
        // An older fetch never replaces a newer copy.
        c.put(id, entry(3, 1_500));
        assert_eq!(c.get(&id, 0, 2_000).map(|e| e.version), Some(5));
        c.forget(&id);
        assert!(c.get(&id, 0, 2_000).is_none());
        assert!(
            NearCache::new(0, Duration::from_secs(1)).is_none(),
            "0 turns it off"
        );
    }
}
