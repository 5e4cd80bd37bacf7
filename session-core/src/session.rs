//! The per-request session handle: lazy loading, a delta of writes, and the commit that writes
//! back only what changed.
//!
//! Past 600 lines with its tests (the last fifth).

use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::SessionBackend;
use crate::error::SessionError;
use crate::id::SessionId;
use crate::record::{Delta, Loaded, RawJson, RawJsonStr, SessionData, now_millis};

/// What the client must be told after a request.
///
/// `Debug` never prints the token (it is a bearer credential): `Issue { token: "<redacted, N
/// bytes>", .. }`.
#[derive(Clone, PartialEq, Eq)]
pub enum Commit {
    /// Nothing to send: the client's token (or lack of one) stays valid.
    Unchanged,
    /// Send this token (new session, re-sealed cookie, cycled id, refreshed expiry).
    Issue {
        /// The token.
        token: String,
        /// Expiry in ms since the epoch (for `Max-Age`).
        expires_at: u64,
    },
    /// Tell the client to drop its token (logout, or it sent a dead one).
    Clear,
}

impl std::fmt::Debug for Commit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Commit::Unchanged => f.write_str("Unchanged"),
            Commit::Issue { token, expires_at } => f
                .debug_struct("Issue")
                .field("token", &crate::record::Redacted(token.len()))
                .field("expires_at", expires_at)
                .finish(),
            Commit::Clear => f.write_str("Clear"),
        }
    }
}

/// Caps on what one session may hold, checked before anything is written: a write that would
/// take the session past either is refused with [`SessionError::TooLarge`] (the layer answers
/// `413`) and nothing is saved.
///
/// The defaults (64 KiB of keys and values, 1,000 keys) are far above what a web session needs
/// and far below what would let one client make a node or a store hold megabytes per session,
/// or make one replication batch too large for its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Most bytes of keys and values together ([`SessionData::payload_len`]).
    pub max_bytes: usize,
    /// Most keys.
    pub max_keys: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_bytes: 64 * 1024,
            max_keys: 1000,
        }
    }
}

impl SessionLimits {
    /// No caps beyond the data structure's own ([`MAX_PAYLOAD_LEN`](crate::MAX_PAYLOAD_LEN)).
    pub const UNLIMITED: SessionLimits = SessionLimits {
        max_bytes: usize::MAX,
        max_keys: usize::MAX,
    };

    /// Checks that `data` changed by `delta` stays within the caps, without building it.
    pub fn check(&self, data: Option<&SessionData>, delta: &Delta) -> Result<(), SessionError> {
        let (mut bytes, mut keys) = data.map_or((0, 0), |d| (d.payload_len(), d.len()));
        if let Some(d) = data {
            for k in &delta.removed {
                if let Some(v) = d.get(k) {
                    bytes = bytes.saturating_sub(k.len() + v.len());
                    keys = keys.saturating_sub(1);
                }
            }
        }
        for (k, v) in &delta.set {
            match data.and_then(|d| d.get(k)) {
                Some(old) => bytes = bytes.saturating_sub(old.len()).saturating_add(v.len()),
                None => {
                    bytes = bytes.saturating_add(k.len() + v.len());
                    keys = keys.saturating_add(1);
                }
            }
        }
        if keys > self.max_keys {
            return Err(SessionError::TooLarge {
                size: keys,
                limit: self.max_keys,
                what: "the session's key count",
            });
        }
        if bytes > self.max_bytes {
            return Err(SessionError::TooLarge {
                size: bytes,
                limit: self.max_bytes,
                what: "the session's size",
            });
        }
        Ok(())
    }
}

#[derive(Default)]
struct Pending {
    delta: Delta,
    cycle: bool,
    destroy: bool,
    /// Outcome of an explicit `save()` earlier in the request, still to be sent.
    outcome: Option<Commit>,
    /// A commit of this handle carried a change (data, an id cycle or a destroy).
    wrote: bool,
}

enum LoadState {
    NotLoaded,
    /// Loaded (`None`: no, invalid or expired token). Shared so every read hands out the same
    /// copy with one reference-count increment, never a clone of the record.
    Done(Option<Arc<Loaded>>),
}

struct Inner {
    backend: Arc<dyn SessionBackend>,
    limits: SessionLimits,
    token: Mutex<Option<Arc<str>>>,
    /// The load's outcome. A plain lock, never held across an `.await`: after the first load
    /// every read is one uncontended lock and an `Arc` clone.
    state: Mutex<LoadState>,
    /// Held while loading (and while `save` resets the state), so concurrent readers of one
    /// request load once and a reset waits for a load in flight.
    loading: tokio::sync::Mutex<()>,
    pending: Mutex<Pending>,
}

/// A request's session: read lazily, written as a delta, committed after the handler.
///
/// Cloning is cheap and every clone is the same session. Reads load the session from the
/// backend on first use (a handler that never touches the session costs no I/O). Writes are
/// recorded locally and sent as one [`Delta`] when the request ends (or on an explicit
/// [`save`](Session::save)); a request that changes nothing writes nothing. No lock is ever held
/// across an `.await`, so reading and writing in one handler cannot deadlock.
///
/// In an axum app the [`SessionLayer`](crate::SessionLayer) creates it and handlers take it as an
/// extractor. Other frameworks can drive it directly:
///
/// ```
/// # use std::sync::Arc;
/// # use session_core::{Commit, MemoryBackend, Session, SessionBackend};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), session_core::SessionError> {
/// let backend: Arc<dyn SessionBackend> = Arc::new(MemoryBackend::default());
/// let session = Session::new(backend.clone(), None);
/// session.insert("user", "alice")?;
/// let Commit::Issue { token, .. } = session.commit().await? else { unreachable!() };
///
/// let next = Session::new(backend, Some(token));
/// assert_eq!(next.get::<String>("user").await?.as_deref(), Some("alice"));
/// assert_eq!(next.commit().await?, Commit::Unchanged); // a read writes nothing
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("backend", &self.inner.backend.scheme())
            .field("has_token", &self.inner.token.lock().is_some())
            .finish()
    }
}

fn serde_err(key: &str) -> impl FnOnce(serde_json::Error) -> SessionError + '_ {
    move |source| SessionError::Serde {
        key: key.to_owned(),
        source,
    }
}

impl Session {
    /// A handle for a request that carried `token` (or none).
    pub fn new(backend: Arc<dyn SessionBackend>, token: Option<String>) -> Self {
        Self::with_token(backend, token.filter(|t| !t.is_empty()).map(Arc::from))
    }

    /// [`new`](Session::new) with the token already shared (the layer builds it straight from
    /// the request header: one allocation).
    pub(crate) fn with_token(backend: Arc<dyn SessionBackend>, token: Option<Arc<str>>) -> Self {
        Self::with_limits(backend, token, SessionLimits::default())
    }

    /// A handle whose writes are checked against `limits` (the layer passes
    /// [`SessionConfig`](crate::SessionConfig)'s); [`new`](Session::new) uses the defaults.
    pub fn with_limits(
        backend: Arc<dyn SessionBackend>,
        token: Option<Arc<str>>,
        limits: SessionLimits,
    ) -> Self {
        Session {
            inner: Arc::new(Inner {
                backend,
                limits,
                token: Mutex::new(token.filter(|t| !t.is_empty())),
                state: Mutex::new(LoadState::NotLoaded),
                loading: tokio::sync::Mutex::new(()),
                pending: Mutex::new(Pending::default()),
            }),
        }
    }

    /// The loaded session if the load already happened (`Some(None)`: loaded, no session).
    fn loaded_now(&self) -> Option<Option<Arc<Loaded>>> {
        match &*self.inner.state.lock() {
            LoadState::Done(l) => Some(l.clone()),
            LoadState::NotLoaded => None,
        }
    }

    /// True when the session was loaded from a copy that may be stale (see
    /// [`Loaded::stale`]).
    pub fn is_stale(&self) -> bool {
        matches!(self.loaded_now(), Some(Some(l)) if l.stale)
    }

    /// The backend behind this session.
    pub fn backend(&self) -> &Arc<dyn SessionBackend> {
        &self.inner.backend
    }

    /// Loads the session (once) and returns it, or `None` for no/invalid/expired token.
    async fn loaded(&self) -> Result<Option<Arc<Loaded>>, SessionError> {
        if let Some(l) = self.loaded_now() {
            return Ok(l);
        }
        let _loading = self.inner.loading.lock().await;
        if let Some(l) = self.loaded_now() {
            return Ok(l);
        }
        let token = self.inner.token.lock().clone();
        let loaded = match token {
            None => None,
            Some(t) => match self.inner.backend.load(&t).await {
                Ok(l) => l,
                Err(SessionError::InvalidToken(e)) => {
                    tracing::debug!(error = %e, "rejected session token; starting a fresh session");
                    None
                }
                Err(e) => return Err(e),
            },
        }
        .map(Arc::new);
        *self.inner.state.lock() = LoadState::Done(loaded.clone());
        Ok(loaded)
    }

    /// The raw JSON value for `key`, seeing this request's own writes.
    pub async fn get_raw(&self, key: &str) -> Result<Option<RawJson>, SessionError> {
        {
            let p = self.inner.pending.lock();
            if let Some(v) = p.delta.lookup(key) {
                return Ok(v.cloned());
            }
            if p.destroy {
                return Ok(None);
            }
        }
        Ok(self
            .loaded()
            .await?
            .and_then(|l| l.record.data.get(key).map(RawJsonStr::to_owned)))
    }

    /// The value for `key`, decoded as `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        {
            let p = self.inner.pending.lock();
            if let Some(v) = p.delta.lookup(key) {
                return v.map(RawJson::parse).transpose().map_err(serde_err(key));
            }
            if p.destroy {
                return Ok(None);
            }
        }
        match self.loaded().await? {
            Some(l) => l.record.data.get_as(key).map_err(serde_err(key)),
            None => Ok(None),
        }
    }

    /// Sets `key` to `value` (recorded now, written when the request ends).
    ///
    /// A key and value that alone pass the session's size cap are refused at once with
    /// [`SessionError::TooLarge`]; the cap on the whole session is checked when it is written.
    pub fn insert<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), SessionError> {
        let raw = RawJson::from_value(value).map_err(serde_err(key))?;
        let size = key.len().saturating_add(raw.len());
        if size > self.inner.limits.max_bytes {
            return Err(SessionError::TooLarge {
                size,
                limit: self.inner.limits.max_bytes,
                what: "the session's size",
            });
        }
        self.inner.pending.lock().delta.set(key, raw);
        Ok(())
    }

    /// Sets `key` to already-encoded JSON.
    pub fn insert_raw(&self, key: &str, value: RawJson) {
        self.inner.pending.lock().delta.set(key, value);
    }

    /// Removes `key` (recorded now, written when the request ends). Removing a key the stored
    /// session does not hold writes nothing: the removal is dropped at commit, so no backend
    /// ever records a tombstone for a key that never existed.
    pub fn remove(&self, key: &str) {
        self.inner.pending.lock().delta.remove(key);
    }

    /// Removes `key` and returns the value it had.
    pub async fn take<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let v = self.get(key).await?;
        self.remove(key);
        Ok(v)
    }

    /// All keys currently visible (stored ones plus this request's writes), sorted.
    pub async fn keys(&self) -> Result<Vec<String>, SessionError> {
        let mut keys = Vec::new();
        self.for_each_key(|k| keys.push(k.to_owned())).await?;
        Ok(keys)
    }

    /// Calls `f` with every visible key (stored ones plus this request's writes, minus its
    /// removals) in sorted order, without copying the keys: the allocation-free way to count or
    /// filter keys on a hot path.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use session_core::{MemoryBackend, Session, SessionBackend};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), session_core::SessionError> {
    /// # let backend: Arc<dyn SessionBackend> = Arc::new(MemoryBackend::default());
    /// let session = Session::new(backend, None);
    /// session.insert("cart.book", &2)?;
    /// session.insert("user", "alice")?;
    /// let mut lines = 0;
    /// session.for_each_key(|k| lines += usize::from(k.starts_with("cart."))).await?;
    /// assert_eq!(lines, 1);
    /// # Ok(()) }
    /// ```
    pub async fn for_each_key(&self, mut f: impl FnMut(&str)) -> Result<(), SessionError> {
        let base = if self.inner.pending.lock().destroy {
            None
        } else {
            self.loaded().await?
        };
        let stored = base.iter().flat_map(|l| l.record.data.keys());
        // `f` runs with no lock held (it may use the session). Stored keys are sorted, so the
        // common read-only request walks them as they are; with pending writes, the delta's
        // (few) keys are copied out and merged in order.
        let delta = {
            let p = self.inner.pending.lock();
            (!p.delta.is_empty()).then(|| {
                let set: Vec<Box<str>> = p.delta.set.iter().map(|(k, _)| k.clone()).collect();
                (set, p.delta.removed.clone())
            })
        };
        let Some((set, removed)) = delta else {
            stored.for_each(f);
            return Ok(());
        };
        // Both delta lists are sorted and unique (the `Delta` invariant).
        let touched = |k: &str| {
            set.binary_search_by(|x| (**x).cmp(k)).is_ok()
                || removed.binary_search_by(|x| (**x).cmp(k)).is_ok()
        };
        let mut stored = stored.filter(|k| !touched(k)).peekable();
        let mut set = set.iter().map(|k| &**k).peekable();
        loop {
            let next = match (stored.peek(), set.peek()) {
                (Some(a), Some(b)) if a <= b => stored.next(),
                (_, Some(_)) => set.next(),
                (Some(_), None) => stored.next(),
                (None, None) => break,
            };
            if let Some(k) = next {
                f(k);
            }
        }
        Ok(())
    }

    /// True when the session holds no values.
    pub async fn is_empty(&self) -> Result<bool, SessionError> {
        let mut any = false;
        self.for_each_key(|_| any = true).await?;
        Ok(!any)
    }

    /// Removes every value (the session itself stays; use [`destroy`](Session::destroy) to end it).
    pub async fn clear(&self) -> Result<(), SessionError> {
        for k in self.keys().await? {
            self.remove(&k);
        }
        Ok(())
    }

    /// The id of the stored session, or `None` if the request has none yet.
    pub async fn id(&self) -> Result<Option<SessionId>, SessionError> {
        Ok(self.loaded().await?.map(|l| l.record.id))
    }

    /// The stored session as loaded (without this request's pending writes).
    pub async fn record(&self) -> Result<Option<Loaded>, SessionError> {
        Ok(self.loaded().await?.map(|l| (*l).clone()))
    }

    /// Gives the session a new id when the request ends, invalidating the old one everywhere.
    /// Call it on login and privilege changes to defeat session fixation.
    pub fn cycle_id(&self) {
        self.inner.pending.lock().cycle = true;
    }

    /// Ends the session everywhere when the request ends (logout). Values inserted after this
    /// call start a new session.
    pub fn destroy(&self) {
        let mut p = self.inner.pending.lock();
        p.destroy = true;
        p.cycle = false;
        p.delta = Delta::default();
    }

    /// True if this request has writes, a cycle or a destroy waiting.
    pub fn is_modified(&self) -> bool {
        let p = self.inner.pending.lock();
        !p.delta.is_empty() || p.cycle || p.destroy
    }

    /// True once a [`save`](Session::save) or [`commit`](Session::commit) of this handle went to
    /// the backend with a change: values set or removed, an id cycle or a destroy (whether or
    /// not the backend accepted it). A touch, a token re-issue, and a removal of a key the
    /// session does not hold are not changes. The layer uses it to count
    /// the request as a write ([`RequestKind`](crate::cost::RequestKind)).
    pub fn has_written(&self) -> bool {
        self.inner.pending.lock().wrote
    }

    /// Writes pending changes now instead of after the handler, so the handler can react to an
    /// error (for example a cookie that would be too large). The resulting token is still sent
    /// by the layer when the response goes out.
    pub async fn save(&self) -> Result<(), SessionError> {
        let outcome = self.commit_pending().await?;
        if let Commit::Issue { token, .. } = &outcome {
            *self.inner.token.lock() = Some(Arc::from(token.as_str()));
            let _loading = self.inner.loading.lock().await;
            *self.inner.state.lock() = LoadState::NotLoaded;
        }
        let mut p = self.inner.pending.lock();
        if outcome != Commit::Unchanged {
            p.outcome = Some(outcome);
        }
        Ok(())
    }

    /// Writes back what the request changed and says what to tell the client.
    ///
    /// * a destroyed session is removed (and a new one created if values were set afterwards);
    /// * a cycled id moves the session and applies the delta in one backend call;
    /// * a non-empty delta is saved; an unchanged session is only *touched*, and only when the
    ///   expiry policy says enough of the idle window has passed;
    /// * a session whose token the backend flagged for re-issue ([`Loaded::reissue`]: retired
    ///   signing key, failover re-homing) gets a fresh token through an empty save;
    /// * a new session is persisted only if it holds data;
    /// * a token that named no live session is cleared.
    pub async fn commit(&self) -> Result<Commit, SessionError> {
        let outcome = self.commit_pending().await?;
        let earlier = self.inner.pending.lock().outcome.take();
        Ok(match (outcome, earlier) {
            (Commit::Unchanged, Some(e)) => e,
            (o, _) => o,
        })
    }

    async fn commit_pending(&self) -> Result<Commit, SessionError> {
        let (mut delta, cycle, destroy) = {
            let mut p = self.inner.pending.lock();
            (
                std::mem::take(&mut p.delta),
                std::mem::take(&mut p.cycle),
                std::mem::take(&mut p.destroy),
            )
        };
        let modified = !delta.is_empty() || cycle || destroy;
        let was_loaded = self.loaded_now().is_some() || {
            // A load may be in flight in another clone of this handle: wait for it.
            let _loading = self.inner.loading.lock().await;
            self.loaded_now().is_some()
        };
        if !modified && !was_loaded {
            return Ok(Commit::Unchanged);
        }
        let had_token = self.inner.token.lock().is_some();
        let backend = &self.inner.backend;
        let loaded = self.loaded().await?;
        let issue = |s: crate::Saved| Commit::Issue {
            token: s.token,
            expires_at: s.expires_at,
        };

        // Removals of keys the session does not hold change nothing: drop them, so no backend
        // records a per-key tombstone for them (instant copy keeps those until the absolute
        // deadline), and a request whose only change was such a removal writes nothing.
        match &loaded {
            Some(l) if !destroy => delta.removed.retain(|k| l.record.data.contains_key(k)),
            _ => delta.removed.clear(),
        }
        self.inner.limits.check(
            loaded.as_ref().filter(|_| !destroy).map(|l| &l.record.data),
            &delta,
        )?;
        if !delta.is_empty() || cycle || destroy {
            self.inner.pending.lock().wrote = true;
        }

        if destroy {
            if let Some(l) = &loaded {
                backend.destroy(l).await?;
            }
            *self.inner.state.lock() = LoadState::Done(None);
            *self.inner.token.lock() = None;
            if !delta.set.is_empty() {
                return Ok(issue(backend.create(data_from(&delta)).await?));
            }
            return Ok(if had_token {
                Commit::Clear
            } else {
                Commit::Unchanged
            });
        }
        match loaded {
            Some(l) if cycle => Ok(issue(backend.cycle_id(&l, &delta).await?)),
            Some(l) if !delta.is_empty() => Ok(issue(backend.save(&l, &delta).await?)),
            Some(l) => {
                if l.reissue || backend.policy().needs_touch(&l.record, now_millis()) {
                    Ok(issue(backend.save(&l, &delta).await?))
                } else {
                    Ok(Commit::Unchanged)
                }
            }
            // Removals alone leave a new session empty: nothing to persist.
            None if !delta.set.is_empty() => Ok(issue(backend.create(data_from(&delta)).await?)),
            None if had_token => Ok(Commit::Clear),
            None => Ok(Commit::Unchanged),
        }
    }
}

fn data_from(delta: &Delta) -> SessionData {
    let mut d = SessionData::new();
    d.apply(delta);
    d
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::backend::Counters;
    use crate::expiry::ExpiryPolicy;
    use crate::record::Saved;
    use crate::{MemoryBackend, SessionData};

    /// The reference backend with a load that yields (so readers can race) and counts.
    #[derive(Default)]
    struct SlowLoads {
        inner: MemoryBackend,
        loads: AtomicU64,
    }

    #[async_trait]
    impl SessionBackend for SlowLoads {
        fn scheme(&self) -> &'static str {
            "slow"
        }
        fn policy(&self) -> &ExpiryPolicy {
            self.inner.policy()
        }
        async fn load(&self, token: &str) -> Result<Option<Loaded>, SessionError> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            self.inner.load(token).await
        }
        async fn create(&self, data: SessionData) -> Result<Saved, SessionError> {
            self.inner.create(data).await
        }
        async fn save(&self, l: &Loaded, d: &Delta) -> Result<Saved, SessionError> {
            self.inner.save(l, d).await
        }
        async fn cycle_id(&self, l: &Loaded, d: &Delta) -> Result<Saved, SessionError> {
            self.inner.cycle_id(l, d).await
        }
        async fn destroy(&self, l: &Loaded) -> Result<(), SessionError> {
            self.inner.destroy(l).await
        }
        fn counters(&self) -> Counters {
            self.inner.counters()
        }
    }

    async fn stored(backend: &Arc<SlowLoads>, keys: &[&str]) -> String {
        let s = Session::new(backend.clone(), None);
        for k in keys {
            s.insert(k, &1).unwrap();
        }
        match s.commit().await.unwrap() {
            Commit::Issue { token, .. } => token,
            other => panic!("expected a token, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn racing_readers_load_once_and_save_reloads() {
        let backend = Arc::new(SlowLoads::default());
        let token = stored(&backend, &["a", "b"]).await;
        backend.loads.store(0, Ordering::SeqCst);
        let s = Session::new(backend.clone(), Some(token));
        let (a, b, keys) = tokio::join!(s.get::<u32>("a"), s.get::<u32>("b"), s.keys());
        assert_eq!((a.unwrap(), b.unwrap()), (Some(1), Some(1)));
        assert_eq!(keys.unwrap(), vec!["a", "b"]);
        assert_eq!(
            backend.loads.load(Ordering::SeqCst),
            1,
            "one load per request"
        );
        assert_eq!(s.record().await.unwrap().unwrap().record.data.len(), 2);
        s.insert("c", &3).unwrap();
        s.save().await.unwrap();
        assert_eq!(s.get::<u32>("c").await.unwrap(), Some(3));
        assert_eq!(
            backend.loads.load(Ordering::SeqCst),
            2,
            "an explicit save reloads the session it wrote"
        );
    }

    #[tokio::test]
    async fn keys_merge_stored_keys_with_pending_writes_in_order() {
        let backend = Arc::new(SlowLoads::default());
        let token = stored(&backend, &["a", "c", "e", "g"]).await;
        let s = Session::new(backend.clone(), Some(token));
        assert_eq!(s.keys().await.unwrap(), vec!["a", "c", "e", "g"]);
        s.insert("b", &2).unwrap();
        s.insert("e", &5).unwrap();
        s.remove("c");
        s.insert("z", &26).unwrap();
        s.remove("nothing");
        assert_eq!(s.keys().await.unwrap(), vec!["a", "b", "e", "g", "z"]);
        let mut seen = Vec::new();
        s.for_each_key(|k| {
            // The callback may use the session: no lock is held while it runs.
            assert!(s.is_modified());
            seen.push(k.to_owned());
        })
        .await
        .unwrap();
        assert_eq!(seen, vec!["a", "b", "e", "g", "z"]);
        assert!(!s.is_empty().await.unwrap());

        s.destroy();
        assert!(
            s.keys().await.unwrap().is_empty(),
            "destroyed: nothing visible"
        );
        assert!(s.is_empty().await.unwrap());
        s.insert("fresh", &1).unwrap();
        assert_eq!(s.keys().await.unwrap(), vec!["fresh"]);
    }

    #[tokio::test]
    async fn read_only_key_walks_see_stored_keys_and_can_use_the_session() {
        let backend = Arc::new(SlowLoads::default());
        let token = stored(&backend, &["cart.a", "cart.b", "user"]).await;
        let s = Session::new(backend.clone(), Some(token));
        let mut lines = 0;
        s.for_each_key(|k| {
            assert!(!s.is_modified());
            lines += usize::from(k.starts_with("cart."));
        })
        .await
        .unwrap();
        assert_eq!(lines, 2);
        let none = Session::new(backend, None);
        assert!(none.keys().await.unwrap().is_empty());
        assert!(none.is_empty().await.unwrap());
        assert_eq!(none.commit().await.unwrap(), Commit::Unchanged);
    }
}
