//! # session-actix
//!
//! The session-sync backends that keep sessions on the server (instant copy between cluster
//! nodes, SQL, Redis) as an [`actix_session::storage::SessionStore`]: an actix-web app on
//! actix-session keeps its handlers and changes the store it gives `SessionMiddleware`.
//!
//! ```
//! use std::sync::Arc;
//! use session_core::{ExpiryPolicy, KeyRing, MemoryBackend, SessionBackend};
//! use session_actix::SyncStore;
//!
//! let keys = KeyRing::generate();
//! let backend: Arc<dyn SessionBackend> = Arc::new(MemoryBackend::new(ExpiryPolicy::default(), &keys));
//! let store = SyncStore::new(backend);
//! // actix_session::SessionMiddleware::new(store, cookie_key), as with any other store.
//! # let _ = store;
//! ```
//!
//! ## How actix-session maps onto our backends
//!
//! * **The session key is our token.** actix-session lets the store choose the key its cookie
//!   carries, and every `update` may return a new one: the key is the backend's signed token, with
//!   instant copy's routing (owner, backups) and the version the client last saw. So unlike
//!   tower-sessions' bare ids, nothing is lost: a forged key is "no session" before any I/O,
//!   failover re-homes the token, and read-your-writes across nodes holds.
//! * **Saves are deltas.** actix-session hands the whole state to `update`; the store diffs it
//!   against what it loaded for that key on this node and sends only the changed and removed
//!   keys, so two requests changing different keys of one session both survive. Best effort:
//!   when two requests with the same key overlap on one node, the later load is the base for
//!   both.
//! * **What cannot carry over.** Values are what actix-session stores, JSON text per key (it
//!   serializes with serde_json), kept as our raw JSON values. Expiry is the backend's policy
//!   (idle and absolute deadlines); actix-session's `ttl` arguments are not used, and
//!   `update_ttl` is a touch. A store error becomes actix-session's error (a 500), not our
//!   layer's 503 with `Retry-After`. The sealed-cookie backend does not fit (its token is the
//!   whole session, which actix-session would treat as a key; use actix-session's own
//!   `CookieSessionStore` or our axum layer).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use quick_cache::sync::Cache;
use session_core::{Delta, Loaded, RawJson, SessionBackend, SessionData, SessionError};

/// Snapshots kept of loaded states, for diffing their updates (most recent keys).
const SNAPSHOTS: usize = 10_000;

type State = HashMap<String, String>;

/// A session-sync backend as an actix-session store.
pub struct SyncStore {
    backend: Arc<dyn SessionBackend>,
    /// What `load` returned for each key lately (the backend's session and its state): the
    /// session an `update` writes to and the base it is diffed against, so an update costs no
    /// second load.
    loaded: Cache<String, Arc<(Loaded, State)>>,
}

impl fmt::Debug for SyncStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncStore")
            .field("backend", &self.backend.scheme())
            .finish()
    }
}

impl Clone for SyncStore {
    fn clone(&self) -> Self {
        SyncStore::new(self.backend.clone())
    }
}

fn to_data(state: &State) -> Result<SessionData, anyhow::Error> {
    let mut data = SessionData::new();
    for (k, v) in state {
        data.insert(k, RawJson::from_json(v.clone())?);
    }
    Ok(data)
}

fn to_state(data: &SessionData) -> State {
    data.iter()
        .map(|(k, v)| (k.to_owned(), v.as_str().to_owned()))
        .collect()
}

fn key(token: String) -> Result<SessionKey, anyhow::Error> {
    SessionKey::try_from(token).map_err(|e| anyhow::anyhow!("{e}"))
}

impl SyncStore {
    /// A store over `backend`.
    pub fn new(backend: Arc<dyn SessionBackend>) -> Self {
        SyncStore {
            backend,
            loaded: Cache::new(SNAPSHOTS),
        }
    }

    /// The backend behind the store.
    pub fn backend(&self) -> &Arc<dyn SessionBackend> {
        &self.backend
    }

    async fn load_ours(&self, key: &SessionKey) -> Result<Option<Loaded>, anyhow::Error> {
        match self.backend.load(key.as_ref()).await {
            Ok(l) => Ok(l),
            // A forged, tampered or expired key is no session, as for our own layer.
            Err(SessionError::InvalidToken(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn create(&self, state: &State) -> Result<SessionKey, anyhow::Error> {
        let saved = self.backend.create(to_data(state)?).await?;
        key(saved.token)
    }
}

impl SessionStore for SyncStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<State>, LoadError> {
        let Some(loaded) = self
            .load_ours(session_key)
            .await
            .map_err(LoadError::Other)?
        else {
            return Ok(None);
        };
        let state = to_state(&loaded.record.data);
        self.loaded.insert(
            session_key.as_ref().to_owned(),
            Arc::new((loaded, state.clone())),
        );
        Ok(Some(state))
    }

    async fn save(
        &self,
        session_state: State,
        _ttl: &time::Duration,
    ) -> Result<SessionKey, SaveError> {
        self.create(&session_state).await.map_err(SaveError::Other)
    }

    async fn update(
        &self,
        session_key: SessionKey,
        session_state: State,
        _ttl: &time::Duration,
    ) -> Result<SessionKey, UpdateError> {
        // The load this request made (no second round trip), else a fresh one.
        let (loaded, base) = match self.loaded.remove(session_key.as_ref()) {
            Some((_, snapshot)) => (snapshot.0.clone(), snapshot.1.clone()),
            None => {
                let Some(loaded) = self
                    .load_ours(&session_key)
                    .await
                    .map_err(UpdateError::Other)?
                else {
                    // Gone (expired, or logged out elsewhere): a new session, as
                    // actix-session's own stores do.
                    return self
                        .create(&session_state)
                        .await
                        .map_err(UpdateError::Other);
                };
                let base = to_state(&loaded.record.data);
                (loaded, base)
            }
        };
        let mut delta = Delta::default();
        for (k, v) in &session_state {
            if base.get(k) != Some(v) {
                let value = RawJson::from_json(v.clone())
                    .map_err(|e| UpdateError::Serialization(e.into()))?;
                delta.set(k, value);
            }
        }
        for k in base.keys() {
            if !session_state.contains_key(k) {
                delta.remove(k);
            }
        }
        let saved = self
            .backend
            .save(&loaded, &delta)
            .await
            .map_err(|e| UpdateError::Other(e.into()))?;
        key(saved.token).map_err(UpdateError::Other)
    }

    async fn update_ttl(
        &self,
        session_key: &SessionKey,
        _ttl: &time::Duration,
    ) -> Result<(), anyhow::Error> {
        // The backend's own policy decides the deadlines: this is a touch.
        if let Some(loaded) = self.load_ours(session_key).await? {
            self.backend.save(&loaded, &Delta::default()).await?;
        }
        Ok(())
    }

    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        self.loaded.remove(session_key.as_ref());
        if let Some(loaded) = self.load_ours(session_key).await? {
            self.backend.destroy(&loaded).await?;
        }
        Ok(())
    }
}
