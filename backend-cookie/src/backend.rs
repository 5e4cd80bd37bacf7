//! [`CookieBackend`]: the [`SessionBackend`] whose only storage is the client's cookie.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use session_core::{
    CoreCounters, Counters, Delta, ExpiryPolicy, KeyRing, Loaded, Metric, Saved, SessionBackend,
    SessionData, SessionError, SessionId, SessionRecord, now_millis,
};

use crate::config::{ConfigError, CookieConfig};
use crate::format::{OpenError, Opened, Sealer};

const SCHEME: &str = "cookie";
const OPENS_HELP: &str = "Authentic cookies opened, by outcome";

/// The sealed-cookie session backend: the session *is* the token.
///
/// `create`, `save` and `cycle_id` seal the whole session (values, deadlines, version,
/// revocation epoch) into a new cookie value with AES-256-GCM; `load` opens it and enforces the
/// deadlines and the epoch. Nothing is stored on the server, so there is no network or database
/// call, ever (the paper's N = 0, D = 0), and every node holding the same secrets can serve
/// every request.
///
/// See the [crate docs](crate) for the format and the security trade-offs (above all: a
/// cookie cannot be revoked one by one; `destroy` only tells the client to drop it).
///
/// ```
/// use backend_cookie::{CookieBackend, CookieConfig};
/// use session_core::{ExpiryPolicy, KeyRing, SessionBackend, SessionData, RawJson};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = CookieBackend::new(&CookieConfig::default(), ExpiryPolicy::default(), &KeyRing::generate())?;
/// let mut data = SessionData::new();
/// data.insert("user", RawJson::from_value("alice")?);
/// let saved = backend.create(data).await?;
/// let loaded = backend.load(&saved.token).await?.expect("a fresh cookie opens");
/// assert_eq!(loaded.record.data.get_as::<String>("user")?.as_deref(), Some("alice"));
/// assert_eq!(backend.counters().network_calls + backend.counters().db_calls, 0);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct CookieBackend {
    sealer: Sealer,
    policy: ExpiryPolicy,
    epoch: u32,
    counters: CoreCounters,
    stats: Stats,
}

/// This backend's own measurements (exported as [`Metric`]s in `counters().extra`).
#[derive(Debug, Default)]
struct Stats {
    seals: AtomicU64,
    compressed_seals: AtomicU64,
    sealed_bytes: AtomicU64,
    largest_seal: AtomicU64,
    too_large: AtomicU64,
    opened: AtomicU64,
    opened_with_old_key: AtomicU64,
    expired: AtomicU64,
    revoked: AtomicU64,
    undecodable: AtomicU64,
    warned_undecodable: AtomicBool,
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

impl CookieBackend {
    /// A backend sealing with `keys` (the application's root key ring; the AES keys are derived
    /// from it with HKDF for the purpose `cookie/aes-256-gcm/v1`) and enforcing `policy`.
    pub fn new(
        config: &CookieConfig,
        policy: ExpiryPolicy,
        keys: &KeyRing,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let sealer = Sealer::new(keys, &config.cookie_name)
            .with_compression(config.compress)
            .with_max_len(config.max_cookie_bytes);
        Ok(CookieBackend {
            sealer,
            policy,
            epoch: config.revocation_epoch,
            counters: CoreCounters::default(),
            stats: Stats::default(),
        })
    }

    /// The sealer (for tools that want to inspect or pre-seal cookies).
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The revocation epoch this backend seals with and requires.
    pub fn revocation_epoch(&self) -> u32 {
        self.epoch
    }

    /// True when the session must no longer be served at `now`.
    ///
    /// Besides the deadlines sealed in the cookie, the *current* policy is applied to the
    /// sealed timestamps, so shortening a timeout in the config also shortens every cookie
    /// already issued (a cookie is never trusted to carry the policy).
    fn expired(&self, r: &SessionRecord, now: u64) -> bool {
        let idle = self.policy.idle_timeout().as_millis() as u64;
        let absolute = self.policy.absolute_timeout().as_millis() as u64;
        r.is_expired(now)
            || now >= r.last_access.saturating_add(idle)
            || now >= r.created_at.saturating_add(absolute)
    }

    /// Seals a record, counting the outcome.
    fn seal(&self, record: &SessionRecord) -> Result<Saved, SessionError> {
        match self.sealer.seal(record, self.epoch) {
            Ok(sealed) => {
                let len = sealed.token.len() as u64;
                bump(&self.stats.seals);
                if sealed.compressed {
                    bump(&self.stats.compressed_seals);
                }
                self.stats.sealed_bytes.fetch_add(len, Ordering::Relaxed);
                self.stats.largest_seal.fetch_max(len, Ordering::Relaxed);
                Ok(Saved {
                    token: sealed.token,
                    expires_at: record.expires_at(),
                })
            }
            Err(e) => {
                if matches!(e, SessionError::TooLarge { .. }) {
                    bump(&self.stats.too_large);
                    tracing::warn!(error = %e, id = ?record.id, "session does not fit in a cookie");
                }
                Err(e)
            }
        }
    }

    /// The record as it stands after `delta` and activity at `now`, or `Gone` if it expired.
    fn next_record(
        &self,
        loaded: &Loaded,
        delta: &Delta,
        now: u64,
    ) -> Result<SessionRecord, SessionError> {
        if self.expired(&loaded.record, now) {
            return Err(SessionError::Gone);
        }
        let mut r = (*loaded.record).clone();
        r.apply_write(delta, now, &self.policy);
        Ok(r)
    }

    fn undecodable(&self, e: &OpenError) {
        bump(&self.stats.undecodable);
        // Only this build's own key can produce such a cookie, so it means a bug or a format
        // change; say so loudly once, not once per request.
        if !self.stats.warned_undecodable.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "an authentic session cookie did not decode; clearing it (further occurrences are counted, not logged)");
        } else {
            tracing::debug!(error = %e, "an authentic session cookie did not decode");
        }
    }
}

#[async_trait]
impl SessionBackend for CookieBackend {
    fn scheme(&self) -> &'static str {
        SCHEME
    }

    fn policy(&self) -> &ExpiryPolicy {
        &self.policy
    }

    async fn load(&self, token: &str) -> Result<Option<Loaded>, SessionError> {
        self.counters.loaded_token(token.len());
        let Opened {
            payload, key_index, ..
        } = match self.sealer.open(token) {
            Ok(o) => o,
            Err(e) => {
                self.counters.invalid_token();
                if let OpenError::Undecodable(_) = e {
                    self.undecodable(&e);
                }
                return Err(SessionError::InvalidToken(e.into()));
            }
        };
        if payload.epoch < self.epoch {
            bump(&self.stats.revoked);
            return Ok(None);
        }
        if self.expired(&payload.record, now_millis()) {
            bump(&self.stats.expired);
            return Ok(None);
        }
        bump(&self.stats.opened);
        if key_index > 0 {
            bump(&self.stats.opened_with_old_key);
        }
        // A cookie sealed with a retired key is re-sealed with the current one on this very
        // request (an empty save), so rotation completes as users come back.
        Ok(Some(Loaded {
            reissue: key_index > 0,
            ..Loaded::new(Arc::new(payload.record), token, Vec::new())
        }))
    }

    async fn create(&self, data: SessionData) -> Result<Saved, SessionError> {
        let mut record = self.policy.new_record(SessionId::random(), now_millis());
        record.data = data;
        let saved = self.seal(&record)?;
        self.counters.created();
        Ok(saved)
    }

    /// Re-seals the session with the delta applied and the idle deadline refreshed (an empty
    /// delta is a touch). The returned token differs from the one the client sent: the client
    /// must store it.
    async fn save(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        let record = self.next_record(loaded, delta, now_millis())?;
        let saved = self.seal(&record)?;
        self.counters.saved();
        Ok(saved)
    }

    /// Re-seals the session under a fresh id. The old cookie cannot be killed (the client held
    /// the only copy of it): it stays valid until its deadlines pass, unless the revocation
    /// epoch is bumped. Session fixation is still defeated: whoever planted or kept the old
    /// cookie holds the pre-login state, not the new one.
    async fn cycle_id(&self, loaded: &Loaded, delta: &Delta) -> Result<Saved, SessionError> {
        let mut record = self.next_record(loaded, delta, now_millis())?;
        record.id = SessionId::random();
        let saved = self.seal(&record)?;
        self.counters.cycled();
        Ok(saved)
    }

    /// Nothing to remove on the server: the layer tells the client to drop the cookie. A copy
    /// the client kept stays valid until it expires (see the crate docs).
    async fn destroy(&self, _loaded: &Loaded) -> Result<(), SessionError> {
        self.counters.destroyed();
        Ok(())
    }

    fn counters(&self) -> Counters {
        let s = &self.stats;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.counters.snapshot(vec![
            Metric::counter("seals_total", "Cookies sealed", r(&s.seals)),
            Metric::counter(
                "compressed_seals_total",
                "Cookies sealed with a deflated payload",
                r(&s.compressed_seals),
            ),
            Metric::counter(
                "sealed_bytes_total",
                "Bytes of cookie value sent to clients",
                r(&s.sealed_bytes),
            ),
            Metric::gauge(
                "largest_sealed_bytes",
                "Largest cookie value sealed so far",
                r(&s.largest_seal) as f64,
            ),
            Metric::counter(
                "too_large_total",
                "Sessions refused because the cookie would exceed the limit",
                r(&s.too_large),
            ),
            Metric::counter("opens_total", OPENS_HELP, r(&s.opened)).with_label("outcome", "ok"),
            Metric::counter("opens_total", OPENS_HELP, r(&s.expired))
                .with_label("outcome", "expired"),
            Metric::counter("opens_total", OPENS_HELP, r(&s.revoked))
                .with_label("outcome", "revoked"),
            Metric::counter(
                "old_key_opens_total",
                "Cookies served that a key other than the first sealed (rotation in progress)",
                r(&s.opened_with_old_key),
            ),
            Metric::counter(
                "undecodable_total",
                "Authentic cookies whose payload did not decode (a bug or a format change)",
                r(&s.undecodable),
            ),
        ])
    }
}
