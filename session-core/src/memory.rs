//! A single-process reference backend: the behaviour every real backend must match.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::backend::{CoreCounters, Counters, Metric, SessionBackend};
use crate::error::SessionError;
use crate::expiry::ExpiryPolicy;
use crate::id::SessionId;
use crate::keys::KeyRing;
use crate::record::{Delta, Loaded, Saved, SessionData, SessionRecord, now_millis};
use crate::token::TokenSigner;

/// Sessions in one process's memory, behind signed tokens.
///
/// This is the reference implementation of the [`SessionBackend`] contract, used to check the
/// conformance suite itself and for unit tests of applications. It does not share sessions
/// between processes and sweeps expired sessions only when they are looked up (plus
/// [`sweep`](MemoryBackend::sweep)); for a real cluster use the instant-copy backend.
///
/// ```
/// use session_core::{MemoryBackend, SessionBackend};
/// let backend = MemoryBackend::default();
/// assert_eq!(backend.scheme(), "memory");
/// ```
#[derive(Debug)]
pub struct MemoryBackend {
    sessions: Mutex<HashMap<SessionId, Arc<SessionRecord>>>,
    signer: TokenSigner,
    policy: ExpiryPolicy,
    counters: CoreCounters,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::new(ExpiryPolicy::default(), &KeyRing::generate())
    }
}

impl MemoryBackend {
    /// A backend with this policy, signing tokens with `keys`.
    pub fn new(policy: ExpiryPolicy, keys: &KeyRing) -> Self {
        MemoryBackend {
            sessions: Mutex::new(HashMap::new()),
            signer: TokenSigner::new(keys),
            policy,
            counters: CoreCounters::default(),
        }
    }

    /// Number of sessions held (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// True when no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every expired session; returns how many.
    pub fn sweep(&self) -> usize {
        let now = now_millis();
        let mut s = self.sessions.lock();
        let before = s.len();
        s.retain(|_, r| !r.is_expired(now));
        before - s.len()
    }

    fn issue(&self, record: &SessionRecord) -> Result<Saved, SessionError> {
        Ok(Saved {
            token: self.signer.sign(&record.id, &[])?,
            expires_at: record.expires_at(),
        })
    }
}

#[async_trait]
impl SessionBackend for MemoryBackend {
    fn scheme(&self) -> &'static str {
        "memory"
    }

    fn policy(&self) -> &ExpiryPolicy {
        &self.policy
    }

    async fn load(&self, token: &str) -> Result<Option<Loaded>, SessionError> {
        self.counters.loaded_token(token.len());
        let verified = self.signer.verify(token).inspect_err(|_| {
            self.counters.invalid_token();
        })?;
        let now = now_millis();
        let mut sessions = self.sessions.lock();
        match sessions.get(&verified.id) {
            Some(r) if r.is_expired(now) => {
                sessions.remove(&verified.id);
                Ok(None)
            }
            Some(r) => Ok(Some(Loaded {
                reissue: verified.key_index > 0,
                ..Loaded::new(r.clone(), token, verified.routing)
            })),
            None => Ok(None),
        }
    }

    async fn create(&self, data: SessionData) -> Result<Saved, SessionError> {
        let mut record = self.policy.new_record(SessionId::random(), now_millis());
        record.data = data;
        let saved = self.issue(&record)?;
        self.sessions.lock().insert(record.id, Arc::new(record));
        self.counters.created();
        Ok(saved)
    }

    async fn save(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        let now = now_millis();
        let mut sessions = self.sessions.lock();
        let Some(current) = sessions.get_mut(&loaded.record.id) else {
            return Err(SessionError::Gone);
        };
        if current.is_expired(now) {
            sessions.remove(&loaded.record.id);
            return Err(SessionError::Gone);
        }
        let r = Arc::make_mut(current);
        r.apply_write(delta, now, &self.policy);
        self.counters.saved();
        // Re-signed, so a token signed with a retired key is replaced by one with the current key.
        let saved = Saved {
            token: self.signer.sign(&r.id, &[])?,
            expires_at: r.expires_at(),
        };
        Ok(saved)
    }

    async fn cycle_id(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        let now = now_millis();
        let mut sessions = self.sessions.lock();
        let Some(current) = sessions.get(&loaded.record.id).cloned() else {
            return Err(SessionError::Gone);
        };
        if current.is_expired(now) {
            sessions.remove(&loaded.record.id);
            return Err(SessionError::Gone);
        }
        let mut r = (*current).clone();
        r.id = SessionId::random();
        r.apply_write(delta, now, &self.policy);
        let saved = self.issue(&r)?;
        sessions.insert(r.id, Arc::new(r));
        sessions.remove(&loaded.record.id);
        self.counters.cycled();
        Ok(saved)
    }

    async fn destroy(&self, loaded: &Loaded) -> Result<(), SessionError> {
        self.sessions.lock().remove(&loaded.record.id);
        self.counters.destroyed();
        Ok(())
    }

    fn counters(&self) -> Counters {
        self.counters.snapshot(vec![Metric::gauge(
            "sessions_held",
            "Sessions held in memory",
            self.len() as f64,
        )])
    }
}
