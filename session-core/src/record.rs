//! The session model: JSON values by string key, deadlines, a version, and the delta a request
//! records instead of a snapshot.

use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::id::SessionId;

/// One session value: valid JSON text, kept encoded.
///
/// Values stay as JSON text from the moment they are inserted until a handler asks for a typed
/// value, so loading, replicating and storing a session never re-encodes values it does not
/// touch. The text is validated when the value is built.
///
/// With a human-readable serializer (JSON) a `RawJson` is written as the JSON value itself; with
/// a binary one (postcard) as a string holding the JSON text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RawJson(Box<str>);

impl RawJson {
    /// Serializes a value to JSON.
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(RawJson(serde_json::to_string(value)?.into_boxed_str()))
    }

    /// Wraps JSON text after checking that it is exactly one valid JSON value.
    pub fn from_json(text: impl Into<String>) -> Result<Self, serde_json::Error> {
        let text: String = text.into();
        serde_json::from_str::<serde::de::IgnoredAny>(&text)?;
        Ok(RawJson(text.into_boxed_str()))
    }

    /// Decodes the value into `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Length of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: the shortest JSON value is one character.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let raw: &RawValue =
                serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
            raw.serialize(s)
        } else {
            s.serialize_str(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let raw = Box::<RawValue>::deserialize(d)?;
            Ok(RawJson(String::from(raw.get()).into_boxed_str()))
        } else {
            let text = String::deserialize(d)?;
            RawJson::from_json(text).map_err(D::Error::custom)
        }
    }
}

/// A session's values: string keys to JSON values, sorted by key.
///
/// Stored as one sorted vector: small sessions (the common case) cost two allocations per entry
/// and no hash table, and iteration order is deterministic (which makes copies comparable).
///
/// ```
/// use session_core::{RawJson, SessionData};
/// let mut data = SessionData::new();
/// data.insert("user", RawJson::from_value("alice").unwrap());
/// assert_eq!(data.get_as::<String>("user").unwrap().as_deref(), Some("alice"));
/// assert_eq!(data.to_json_object(), r#"{"user":"alice"}"#);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SessionData {
    entries: Vec<(Box<str>, RawJson)>,
}

impl SessionData {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&RawJson> {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    /// The value for `key`, decoded.
    pub fn get_as<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, serde_json::Error> {
        self.get(key).map(RawJson::parse).transpose()
    }

    /// Sets `key`, returning the previous value.
    pub fn insert(&mut self, key: impl Into<Box<str>>, value: RawJson) -> Option<RawJson> {
        let key = key.into();
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<RawJson> {
        self.find(key).ok().map(|i| self.entries.remove(i).1)
    }

    /// Index of `key` in key order (entries are sorted), for stores that keep per-entry
    /// metadata in a parallel vector.
    pub fn position(&self, key: &str) -> Option<usize> {
        self.find(key).ok()
    }

    /// True when `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &RawJson)> {
        self.entries.iter().map(|(k, v)| (&**k, v))
    }

    /// Keys in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.entries.iter().map(|(k, _)| &**k)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sum of key and value lengths in bytes (the payload, without any overhead).
    pub fn payload_len(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Applies a delta: removed keys go, set keys take their new values.
    pub fn apply(&mut self, delta: &Delta) {
        for k in &delta.removed {
            self.remove(k);
        }
        for (k, v) in &delta.set {
            self.insert(k.clone(), v.clone());
        }
    }

    /// The map as one JSON object (for stores that keep JSON, such as PostgreSQL's JSONB).
    pub fn to_json_object(&self) -> String {
        let mut out = String::with_capacity(self.payload_len() + 4 * self.len() + 2);
        out.push('{');
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Serializing a &str to JSON cannot fail.
            out.push_str(&serde_json::to_string(&**k).unwrap_or_default());
            out.push(':');
            out.push_str(v.as_str());
        }
        out.push('}');
        out
    }

    /// Parses a JSON object into a map (values are validated and kept as text).
    pub fn from_json_object(text: &str) -> Result<Self, serde_json::Error> {
        let map: std::collections::BTreeMap<String, Box<RawValue>> = serde_json::from_str(text)?;
        Ok(SessionData {
            entries: map
                .into_iter()
                .map(|(k, v)| (k.into_boxed_str(), RawJson(String::from(v.get()).into())))
                .collect(),
        })
    }
}

impl fmt::Debug for SessionData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys only: values may be personal data and do not belong in logs.
        f.debug_set().entries(self.keys()).finish()
    }
}

impl FromIterator<(String, RawJson)> for SessionData {
    fn from_iter<I: IntoIterator<Item = (String, RawJson)>>(iter: I) -> Self {
        let mut d = SessionData::new();
        for (k, v) in iter {
            d.insert(k, v);
        }
        d
    }
}

impl Serialize for SessionData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.entries.iter().map(|(k, v)| (&**k, v)))
    }
}

impl<'de> Deserialize<'de> for SessionData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, RawJson>::deserialize(d)?;
        Ok(SessionData {
            entries: map
                .into_iter()
                .map(|(k, v)| (k.into_boxed_str(), v))
                .collect(),
        })
    }
}

/// What one request changed: keys set and keys removed.
///
/// Backends apply a delta to the stored session on their side, so two concurrent requests that
/// change different keys both survive (no read-modify-write of the whole session). A key is never
/// in both lists; the last operation on a key wins.
///
/// ```
/// use session_core::{Delta, RawJson};
/// let mut d = Delta::default();
/// d.set("a", RawJson::from_value(&1).unwrap());
/// d.remove("a");
/// assert!(d.set.is_empty());
/// assert_eq!(d.removed, vec!["a".into()]);
/// ```
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Keys set to new values, sorted by key, unique.
    pub set: Vec<(Box<str>, RawJson)>,
    /// Keys removed, sorted, unique.
    pub removed: Vec<Box<str>>,
}

impl Delta {
    /// Records `key = value`.
    pub fn set(&mut self, key: &str, value: RawJson) {
        if let Ok(i) = self.removed.binary_search_by(|k| (**k).cmp(key)) {
            self.removed.remove(i);
        }
        match self.set.binary_search_by(|(k, _)| (**k).cmp(key)) {
            Ok(i) => self.set[i].1 = value,
            Err(i) => self.set.insert(i, (key.into(), value)),
        }
    }

    /// Records the removal of `key`.
    pub fn remove(&mut self, key: &str) {
        if let Ok(i) = self.set.binary_search_by(|(k, _)| (**k).cmp(key)) {
            self.set.remove(i);
        }
        if let Err(i) = self.removed.binary_search_by(|k| (**k).cmp(key)) {
            self.removed.insert(i, key.into());
        }
    }

    /// What this delta says about `key`: `Some(Some(v))` set, `Some(None)` removed, `None` untouched.
    pub fn lookup(&self, key: &str) -> Option<Option<&RawJson>> {
        if let Ok(i) = self.set.binary_search_by(|(k, _)| (**k).cmp(key)) {
            return Some(Some(&self.set[i].1));
        }
        if self.removed.binary_search_by(|k| (**k).cmp(key)).is_ok() {
            return Some(None);
        }
        None
    }

    /// True when nothing was changed.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.removed.is_empty()
    }

    /// Bytes of keys and values carried (for size limits and counters).
    pub fn payload_len(&self) -> usize {
        self.set
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
            + self.removed.iter().map(|k| k.len()).sum::<usize>()
    }
}

impl fmt::Debug for Delta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delta")
            .field("set", &self.set.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("removed", &self.removed)
            .finish()
    }
}

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
}

/// A session loaded for one request: the record plus whatever routing the client's token carried.
///
/// The record is shared (`Arc`): a backend that keeps sessions in memory hands out its own copy
/// without cloning the values.
#[derive(Clone, Debug)]
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
}

impl Loaded {
    /// A loaded session that needs no token re-issue.
    pub fn new(record: Arc<SessionRecord>, token: &str, routing: Vec<u8>) -> Self {
        Loaded {
            record,
            token: Arc::from(token),
            routing,
            reissue: false,
        }
    }
}

/// What a successful write hands back to the caller: the token to send the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saved {
    /// The token the client must carry from now on (may equal the one it sent).
    pub token: String,
    /// When the session expires (ms since the epoch), for the cookie's `Max-Age`.
    pub expires_at: u64,
}

/// Milliseconds since the Unix epoch, by the system clock.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
