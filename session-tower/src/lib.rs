//! # session-tower
//!
//! The session-sync backends that keep sessions on the server (instant copy between cluster
//! nodes, SQL, Redis) as a [`tower_sessions_core::SessionStore`] (tower-sessions 0.14, the
//! version axum-login 0.18 is built on): an app on tower-sessions or axum-login keeps its
//! handlers and changes the one line that builds its store. (The sealed-cookie backend does not
//! fit: tower-sessions' cookie holds only an id, the sealed cookie holds the session itself;
//! use session-core's own layer for it.)
//!
//! ```
//! use std::sync::Arc;
//! use session_core::{ExpiryPolicy, KeyRing, MemoryBackend, SessionBackend};
//! use session_tower::SyncStore;
//!
//! let keys = KeyRing::generate(); // the key ring the backend signs its tokens with
//! let backend: Arc<dyn SessionBackend> = Arc::new(MemoryBackend::new(ExpiryPolicy::default(), &keys));
//! let store = SyncStore::new(backend, &keys);
//! // tower_sessions::SessionManagerLayer::new(store), as with any other store.
//! # let _ = store;
//! ```
//!
//! ## How tower-sessions' records map onto our backends
//!
//! * **Ids.** tower-sessions keeps a bare 128-bit [`Id`] in its cookie, chosen by the store:
//!   [`create`](SessionStore::create) lets the backend mint the session and uses its id. It is
//!   not signed by us (tower-sessions can sign or encrypt its cookie with its own key); a forged
//!   id finds no session. To load, the store signs a token for the id itself, with the routing
//!   the backend derives from the bare id ([`SessionBackend::routing_for_id`]): for instant copy
//!   the id's first two bytes name the node that created the session, so a node that holds no
//!   copy asks that member (and the holders placement names) — a forged prefix costs at most one
//!   fetch to a configured member, never a connection elsewhere, and is counted
//!   (`bare_id_misses_total` among instant copy's metrics).
//! * **Saves.** tower-sessions saves the whole record; the store diffs it against what it
//!   loaded for that id on this node and sends only the keys that changed (and removals), so two
//!   requests changing different keys of one session both survive where the backend merges
//!   deltas (all of ours do). Best effort: when two requests for the same id overlap on one
//!   node, the later load's snapshot is the base for both.
//! * **What cannot carry over.** The cookie holds no version, so instant copy's
//!   read-your-writes across nodes (which rides in our own token) is not available: a node
//!   serves the newest copy it has (use `ack = "all"` so every holder has every acknowledged
//!   write). Expiry is the backend's [`ExpiryPolicy`](session_core::ExpiryPolicy) (idle and
//!   absolute deadlines); the record's `expiry_date` tells tower-sessions when the session
//!   ends, but a save cannot extend it past the backend's policy. tower-sessions turns every
//!   store error into a 500, so a store outage is a 500 here rather than our layer's 503 with
//!   `Retry-After`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use quick_cache::sync::Cache;
use serde_json::Value;
use session_core::{
    Delta, KeyRing, Loaded, RawJson, SessionBackend, SessionData, SessionError, SessionId,
    TokenSigner,
};
use time::OffsetDateTime;
pub use tower_sessions_core::SessionStore;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, Error};

/// Snapshots kept of loaded records, for diffing their saves (per node, most recent ids).
const SNAPSHOTS: usize = 10_000;

/// A load, kept for the save that follows it. `loaded` is `None` after a create (the store then
/// loads before it saves).
struct Snapshot {
    loaded: Option<Loaded>,
    data: HashMap<String, Value>,
}

/// A session-sync backend as a tower-sessions store.
pub struct SyncStore {
    backend: Arc<dyn SessionBackend>,
    signer: TokenSigner,
    /// What `load` returned for each id lately (the backend's session and the record's data):
    /// the session a `save` writes to and the base its record is diffed against, so a save
    /// costs no second load.
    loaded: Cache<Id, Arc<Snapshot>>,
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
        SyncStore {
            backend: self.backend.clone(),
            signer: self.signer.clone(),
            loaded: Cache::new(SNAPSHOTS),
        }
    }
}

fn backend_error(e: impl fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

/// Our session id for a tower-sessions id (the same 128 bits).
pub fn session_id(id: &Id) -> SessionId {
    SessionId::from_bytes(id.0.to_be_bytes())
}

/// The tower-sessions id for one of ours.
pub fn tower_id(id: &SessionId) -> Id {
    Id(i128::from_be_bytes(*id.as_bytes()))
}

fn to_data(map: &HashMap<String, Value>) -> Result<SessionData, Error> {
    let mut data = SessionData::new();
    for (k, v) in map {
        data.insert(
            k,
            RawJson::from_value(v).map_err(|e| Error::Encode(e.to_string()))?,
        );
    }
    Ok(data)
}

fn to_map(data: &SessionData) -> Result<HashMap<String, Value>, Error> {
    data.iter()
        .map(|(k, v)| {
            let value = v
                .parse::<Value>()
                .map_err(|e| Error::Decode(e.to_string()))?;
            Ok((k.to_owned(), value))
        })
        .collect()
}

fn expiry(ms: u64) -> OffsetDateTime {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl SyncStore {
    /// A store over `backend`, whose tokens are signed with `token_keys` (the same ring the
    /// backend was built with: the store signs the tokens it hands the backend).
    pub fn new(backend: Arc<dyn SessionBackend>, token_keys: &KeyRing) -> Self {
        SyncStore {
            backend,
            signer: TokenSigner::new(token_keys),
            loaded: Cache::new(SNAPSHOTS),
        }
    }

    /// The backend behind the store.
    pub fn backend(&self) -> &Arc<dyn SessionBackend> {
        &self.backend
    }

    async fn load_ours(&self, id: &Id) -> Result<Option<Loaded>, Error> {
        let sid = session_id(id);
        let token = self
            .signer
            .sign(&sid, &self.backend.routing_for_id(&sid))
            .map_err(backend_error)?;
        match self.backend.load(&token).await {
            Ok(loaded) => Ok(loaded),
            Err(SessionError::InvalidToken(_)) => Ok(None),
            Err(e) => Err(backend_error(e)),
        }
    }
}

#[async_trait]
impl SessionStore for SyncStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let saved = self
            .backend
            .create(to_data(&record.data)?)
            .await
            .map_err(backend_error)?;
        let verified = self.signer.verify(&saved.token).map_err(backend_error)?;
        record.id = tower_id(&verified.id);
        record.expiry_date = expiry(saved.expires_at);
        self.loaded.insert(
            record.id,
            Arc::new(Snapshot {
                loaded: None,
                data: record.data.clone(),
            }),
        );
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        // The load this request made (no second round trip), else a fresh one.
        let snapshot = self.loaded.remove(&record.id).map(|(_, s)| s);
        let loaded = match snapshot.as_ref().and_then(|s| s.loaded.clone()) {
            Some(l) => Some(l),
            None => self.load_ours(&record.id).await?,
        };
        let Some(loaded) = loaded else {
            // Destroyed (a logout elsewhere) or expired: writing it back would resurrect it.
            return Err(Error::Backend(
                "the session no longer exists (logged out or expired)".into(),
            ));
        };
        let base = match &snapshot {
            Some(s) => s.data.clone(),
            None => to_map(&loaded.record.data)?,
        };
        let mut delta = Delta::default();
        for (k, v) in &record.data {
            if base.get(k) != Some(v) {
                delta.set(
                    k,
                    RawJson::from_value(v).map_err(|e| Error::Encode(e.to_string()))?,
                );
            }
        }
        for k in base.keys() {
            if !record.data.contains_key(k) {
                delta.remove(k);
            }
        }
        self.backend
            .save(&loaded, &delta)
            .await
            .map_err(backend_error)?;
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some(loaded) = self.load_ours(id).await? else {
            return Ok(None);
        };
        let data = to_map(&loaded.record.data)?;
        let expiry_date = expiry(loaded.record.expires_at());
        self.loaded.insert(
            *id,
            Arc::new(Snapshot {
                loaded: Some(loaded),
                data: data.clone(),
            }),
        );
        Ok(Some(Record {
            id: *id,
            data,
            expiry_date,
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.loaded.remove(id);
        if let Some(loaded) = self.load_ours(id).await? {
            self.backend.destroy(&loaded).await.map_err(backend_error)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_both_ways() {
        let id = SessionId::random();
        assert_eq!(session_id(&tower_id(&id)), id);
        let t = Id(-42);
        assert_eq!(tower_id(&session_id(&t)), t);
    }
}
