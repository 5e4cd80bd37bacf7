//! The session model: JSON values by string key, deadlines, a version, and the delta a request
//! records instead of a snapshot.
//!
//! One file per concept: [`RawJson`] (a value, `raw_json`), [`SessionData`] (the values of a
//! session, `data`), [`Delta`] (a request's changes, `delta`), and here the record a backend
//! hands out with its load and save results.

mod data;
mod delta;
mod raw_json;

pub use data::{MAX_PAYLOAD_LEN, PayloadTooLarge, SessionData};
pub use delta::Delta;
pub use raw_json::{RawJson, RawJsonStr};

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::id::SessionId;

/// A stored session as a backend hands it out: id, values, timestamps and version.
///
/// All times are milliseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session id.
    pub id: SessionId,
    /// The values.
    pub data: SessionData,
    /// When the session was created.
    pub created_at: u64,
    /// When activity last moved the idle deadline.
    pub last_access: u64,
    /// The sliding deadline: the session dies if not used before it.
    pub idle_deadline: u64,
    /// The absolute deadline: the session dies then, however active.
    pub absolute_deadline: u64,
    /// Increases with every applied change.
    pub version: u64,
}

impl SessionRecord {
    /// The earlier of the two deadlines.
    pub fn expires_at(&self) -> u64 {
        self.idle_deadline.min(self.absolute_deadline)
    }

    /// True once `now` has reached a deadline.
    pub fn is_expired(&self, now: u64) -> bool {
        now >= self.expires_at()
    }

    /// Applies one request's write at `now`: the delta's keys, a new version, and the activity
    /// that slides the idle deadline (never past the absolute one). Expiry is the caller's to
    /// check first: a write to an expired session is `SessionError::Gone`, not a revival.
    ///
    /// ```
    /// use session_core::{Delta, ExpiryPolicy, RawJson, SessionId};
    /// let policy = ExpiryPolicy::default();
    /// let mut r = policy.new_record(SessionId::random(), 1_000);
    /// let mut d = Delta::default();
    /// d.set("user", RawJson::from_value("ann").unwrap());
    /// r.apply_write(&d, 61_000, &policy);
    /// assert_eq!((r.version, r.last_access), (2, 61_000));
    /// assert_eq!(r.idle_deadline, policy.refreshed_idle_deadline(61_000, r.absolute_deadline));
    /// ```
    pub fn apply_write(&mut self, delta: &Delta, now: u64, policy: &crate::ExpiryPolicy) {
        self.data.apply(delta);
        self.version += 1;
        self.last_access = now;
        self.idle_deadline = policy.refreshed_idle_deadline(now, self.absolute_deadline);
    }
}

/// Stands for a secret in `Debug` output: its length only.
pub(crate) struct Redacted(pub(crate) usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0)
    }
}

/// A session loaded for one request: the record plus whatever routing the client's token carried.
///
/// The record is shared (`Arc`): a backend that keeps sessions in memory hands out its own copy
/// without cloning the values. `Debug` never prints the token.
#[derive(Clone)]
pub struct Loaded {
    /// The stored session.
    pub record: Arc<SessionRecord>,
    /// The token the client presented (a backend may compare it to decide on re-issuing).
    pub token: Arc<str>,
    /// Routing data from the token (owner/backup nodes for instant copy; empty elsewhere).
    pub routing: Vec<u8>,
    /// The client's token should be replaced even if the request changes nothing: it was
    /// signed with a retired key, or it routes to nodes that no longer hold the session
    /// (failover re-homing). The session then saves an empty delta to get a fresh token.
    pub reissue: bool,
    /// The session was served from a copy that may be older than the client's last write,
    /// because the newest copy is out of reach and the backend was told to prefer
    /// availability (instant copy's `on_unreachable = "stale"`). The layer marks such a
    /// response with `x-session-stale: 1`; writes to it are refused as unavailable.
    pub stale: bool,
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded")
            .field("record", &self.record)
            .field("token", &Redacted(self.token.len()))
            .field("routing", &self.routing)
            .field("reissue", &self.reissue)
            .field("stale", &self.stale)
            .finish()
    }
}

impl Loaded {
    /// A loaded session that needs no token re-issue.
    pub fn new(record: Arc<SessionRecord>, token: &str, routing: Vec<u8>) -> Self {
        Loaded {
            record,
            token: Arc::from(token),
            routing,
            reissue: false,
            stale: false,
        }
    }
}

/// What a successful write hands back to the caller: the token to send the client. `Debug`
/// never prints the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Saved {
    /// The token the client must carry from now on (may equal the one it sent).
    pub token: String,
    /// When the session expires (ms since the epoch), for the cookie's `Max-Age`.
    pub expires_at: u64,
}

impl fmt::Debug for Saved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Saved")
            .field("token", &Redacted(self.token.len()))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Milliseconds since the Unix epoch by the session clock: the system clock, unless a test runs
/// the task under a [`TestClock`](crate::clock::TestClock) (see [`clock`](crate::clock)).
pub fn now_millis() -> u64 {
    crate::clock::now_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: impl Serialize) -> RawJson {
        RawJson::from_value(&x).unwrap()
    }

    #[test]
    fn raw_json_validates() {
        assert!(RawJson::from_json("{\"a\":1}").is_ok());
        assert!(RawJson::from_json("{").is_err());
        assert!(RawJson::from_json("1 2").is_err());
        assert!(RawJson::from_json("").is_err());
    }

    #[test]
    fn data_round_trips_through_json_and_postcard_like_formats() {
        let mut d = SessionData::new();
        d.insert("zeta", v(1));
        d.insert("ключ", v("значение"));
        d.insert("a", v(serde_json::json!({"nested": [1, 2, {"x": null}]})));
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, d.to_json_object());
        let back: SessionData = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert_eq!(SessionData::from_json_object(&json).unwrap(), d);
        assert_eq!(d.keys().collect::<Vec<_>>(), vec!["a", "zeta", "ключ"]);
    }

    #[test]
    fn delta_keeps_the_last_operation_per_key() {
        let mut d = Delta::default();
        d.set("b", v(1));
        d.set("a", v(2));
        d.set("b", v(3));
        d.remove("a");
        d.remove("c");
        d.set("c", v(4));
        assert_eq!(d.lookup("a"), Some(None));
        assert_eq!(d.lookup("b"), Some(Some(&v(3))));
        assert_eq!(d.lookup("c"), Some(Some(&v(4))));
        assert_eq!(d.lookup("z"), None);
        let mut data = SessionData::new();
        data.insert("a", v(0));
        data.insert("keep", v(true));
        data.apply(&d);
        assert_eq!(
            data.to_json_object(),
            r#"{"b":3,"c":4,"keep":true}"#.to_string()
        );
    }

    #[test]
    fn debug_does_not_print_values() {
        let mut d = SessionData::new();
        d.insert("password", v("hunter2"));
        assert!(!format!("{d:?}").contains("hunter2"));
    }
}
