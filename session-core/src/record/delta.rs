//! [`Delta`]: what one request changed (keys set, keys removed), which backends apply to the
//! stored session instead of writing a snapshot.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::raw_json::RawJson;

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
