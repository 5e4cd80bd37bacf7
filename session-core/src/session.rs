//! The per-request session handle: lazy loading, a delta of writes, and the commit that writes
//! back only what changed.

use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::SessionBackend;
use crate::error::SessionError;
use crate::id::SessionId;
use crate::record::{Delta, Loaded, RawJson, SessionData, now_millis};

/// What the client must be told after a request.
#[derive(Debug, Clone, PartialEq, Eq)]
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

#[derive(Default)]
struct Pending {
    delta: Delta,
    cycle: bool,
    destroy: bool,
    /// Outcome of an explicit `save()` earlier in the request, still to be sent.
    outcome: Option<Commit>,
}

enum LoadState {
    NotLoaded,
    Done(Option<Loaded>),
}

struct Inner {
    backend: Arc<dyn SessionBackend>,
    token: Mutex<Option<Arc<str>>>,
    load: tokio::sync::Mutex<LoadState>,
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
        Session {
            inner: Arc::new(Inner {
                backend,
                token: Mutex::new(token.filter(|t| !t.is_empty()).map(Arc::from)),
                load: tokio::sync::Mutex::new(LoadState::NotLoaded),
                pending: Mutex::new(Pending::default()),
            }),
        }
    }

    /// The backend behind this session.
    pub fn backend(&self) -> &Arc<dyn SessionBackend> {
        &self.inner.backend
    }

    /// Loads the session (once) and returns it, or `None` for no/invalid/expired token.
    async fn loaded(&self) -> Result<Option<Loaded>, SessionError> {
        let mut state = self.inner.load.lock().await;
        if let LoadState::Done(l) = &*state {
            return Ok(l.clone());
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
        };
        *state = LoadState::Done(loaded.clone());
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
            .and_then(|l| l.record.data.get(key).cloned()))
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
    pub fn insert<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), SessionError> {
        let raw = RawJson::from_value(value).map_err(serde_err(key))?;
        self.inner.pending.lock().delta.set(key, raw);
        Ok(())
    }

    /// Sets `key` to already-encoded JSON.
    pub fn insert_raw(&self, key: &str, value: RawJson) {
        self.inner.pending.lock().delta.set(key, value);
    }

    /// Removes `key` (recorded now, written when the request ends).
    pub fn remove(&self, key: &str) {
        self.inner.pending.lock().delta.remove(key);
    }

    /// Removes `key` and returns the value it had.
    pub async fn take<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let v = self.get(key).await?;
        self.remove(key);
        Ok(v)
    }

    /// All keys currently visible (stored ones plus this request's writes).
    pub async fn keys(&self) -> Result<Vec<String>, SessionError> {
        let base = if self.inner.pending.lock().destroy {
            None
        } else {
            self.loaded().await?
        };
        let p = self.inner.pending.lock();
        let mut keys: Vec<String> = base
            .iter()
            .flat_map(|l| l.record.data.keys())
            .filter(|k| p.delta.lookup(k).is_none())
            .map(str::to_owned)
            .collect();
        keys.extend(p.delta.set.iter().map(|(k, _)| k.to_string()));
        keys.sort();
        Ok(keys)
    }

    /// True when the session holds no values.
    pub async fn is_empty(&self) -> Result<bool, SessionError> {
        Ok(self.keys().await?.is_empty())
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
        self.loaded().await
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

    /// Writes pending changes now instead of after the handler, so the handler can react to an
    /// error (for example a cookie that would be too large). The resulting token is still sent
    /// by the layer when the response goes out.
    pub async fn save(&self) -> Result<(), SessionError> {
        let outcome = self.commit_pending().await?;
        if let Commit::Issue { token, .. } = &outcome {
            *self.inner.token.lock() = Some(Arc::from(token.as_str()));
            *self.inner.load.lock().await = LoadState::NotLoaded;
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
        let (delta, cycle, destroy) = {
            let mut p = self.inner.pending.lock();
            (
                std::mem::take(&mut p.delta),
                std::mem::take(&mut p.cycle),
                std::mem::take(&mut p.destroy),
            )
        };
        let modified = !delta.is_empty() || cycle || destroy;
        let was_loaded = matches!(*self.inner.load.lock().await, LoadState::Done(_));
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

        if destroy {
            if let Some(l) = &loaded {
                backend.destroy(l).await?;
            }
            *self.inner.load.lock().await = LoadState::Done(None);
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
