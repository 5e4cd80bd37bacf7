//! [`SessionData`]: a session's values, packed into one buffer (a small header, an offset
//! index, then keys and JSON texts sorted by key, then a backend's extension bytes: one
//! allocation per session), with the serde visitors that decode it straight into that layout,
//! and the payload limit ([`MAX_PAYLOAD_LEN`]).
//!
//! Past 600 lines because its property tests (the last third) check the packed layout against a
//! `BTreeMap` model and belong beside it.

use std::fmt;

use serde::de::{DeserializeOwned, DeserializeSeed, Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use super::delta::Delta;
use super::raw_json::{RawJson, RawJsonStr, validate_json};

/// The largest payload (key and value bytes together) one [`SessionData`] can hold: its
/// offsets are at most `u32`, so 4 GiB − 1 bytes (the index and any extension count towards
/// that too).
///
/// [`SessionData::try_insert`], [`SessionData::try_apply`] and [`SessionData::apply_writes`]
/// return [`PayloadTooLarge`] rather than grow past it; decoding a larger map (from a peer or a
/// store) fails with a decode error.
pub const MAX_PAYLOAD_LEN: usize = u32::MAX as usize;

/// A change would grow a [`SessionData`] past [`MAX_PAYLOAD_LEN`]; the map was left unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("session data of {len} bytes would exceed the {MAX_PAYLOAD_LEN}-byte limit")]
pub struct PayloadTooLarge {
    /// The payload length the change would have produced.
    pub len: usize,
}

/// A session's values: string keys to JSON values, sorted by key.
///
/// Layout: one byte buffer (`buf`), empty for an empty map, else
///
/// ```text
/// [n] [key end₀, value end₀, key end₁, …] [key₀ value₀ key₁ value₁ …] [extension]
/// ```
///
/// where `n` (the entry count) and every offset are `u16` while the whole buffer is at most
/// 65,535 bytes and `u32` beyond (the buffer's length says which), offsets count from the
/// buffer's start, and an entry starts where the previous one ends. A map is therefore one
/// allocation whatever its size (an empty one none), `get` is a binary search over the keys,
/// and iteration order is deterministic (which makes copies comparable).
///
/// The *extension* is bytes a backend keeps with the values in the same allocation (instant
/// copy keeps its per-key write stamps and the session's placement there): not part of the
/// values, so equality, serialization, [`payload_len`](Self::payload_len) and `Debug` ignore
/// it, and changes to the values keep it as it is. See [`extension`](Self::extension).
///
/// Why: a node holds millions of sessions, and the two previous layouts spent more on the
/// allocator and on offsets than on the payload: a vector of boxed key and boxed value pairs
/// (two allocations per entry plus the vector) took 545 B per 197 B four-key session, a
/// buffer plus a separate `u32` index 320 B (see `backend-instantcopy/examples/memory.rs`).
/// Values are handed out as borrowed [`RawJsonStr`]s.
///
/// Changes rebuild the buffer (sessions are small): [`insert`](Self::insert) and
/// [`remove`](Self::remove) once per key, [`apply`](Self::apply) and
/// [`apply_writes`](Self::apply_writes) once per batch, and a value replaced by one of the same
/// length is overwritten in place.
///
/// ```
/// use session_core::{RawJson, SessionData};
/// let mut data = SessionData::new();
/// data.insert("user", RawJson::from_value("alice").unwrap());
/// assert_eq!(data.get_as::<String>("user").unwrap().as_deref(), Some("alice"));
/// assert_eq!(data.to_json_object(), r#"{"user":"alice"}"#);
/// ```
#[derive(Clone, Default)]
pub struct SessionData {
    /// Header, index, keys and values, extension (see the type's documentation).
    buf: Box<[u8]>,
}

/// Largest buffer whose offsets are `u16`.
const NARROW_MAX: usize = u16::MAX as usize;

/// Builds a [`SessionData`] entry by entry (keys must come in strictly increasing order, or
/// [`Builder::finish`] sorts them).
struct Builder {
    /// Keys and values, concatenated.
    buf: Vec<u8>,
    /// Per entry: `[end of key, end of value]`, offsets into `buf`.
    index: Vec<[usize; 2]>,
    /// False once a key came out of order (or twice).
    sorted: bool,
}

impl Builder {
    fn with_capacity(bytes: usize, entries: usize) -> Self {
        Builder {
            buf: Vec::with_capacity(bytes),
            index: Vec::with_capacity(entries),
            sorted: true,
        }
    }

    fn last_key(&self) -> Option<&[u8]> {
        let n = self.index.len();
        let [key_end, _] = *self.index.last()?;
        let start = if n >= 2 { self.index[n - 2][1] } else { 0 };
        self.buf.get(start..key_end)
    }

    /// Where the next entry starts.
    fn end(&self) -> usize {
        self.index.last().map_or(0, |e| e[1])
    }

    /// Records an entry whose key and value were just appended to `buf` (key from `start`).
    fn close_entry(&mut self, start: usize, key_end: usize) {
        if let Some(prev) = self.last_key()
            && self.buf.get(start..key_end).is_none_or(|k| prev >= k)
        {
            self.sorted = false;
        }
        self.index.push([key_end, self.buf.len()]);
    }

    fn push(&mut self, key: &str, value: &str) {
        let start = self.buf.len();
        self.buf.extend_from_slice(key.as_bytes());
        let key_end = self.buf.len();
        self.buf.extend_from_slice(value.as_bytes());
        self.close_entry(start, key_end);
    }

    /// The map, with `extension` after the entries.
    fn finish(self, extension: &[u8]) -> Result<SessionData, PayloadTooLarge> {
        if self.sorted {
            return assemble(&self.buf, &self.index, extension);
        }
        // Out of order or repeated keys (a hand-written or foreign encoding): sort, and keep
        // the last value of a repeated key, as inserting the entries one by one would.
        let data = assemble(&self.buf, &self.index, &[])?;
        let mut writes: Vec<Write<'_>> = data.iter().map(|(k, v)| (k, Some(v))).collect();
        normalize(&mut writes);
        let mut sorted = SessionData::new();
        sorted.apply_sorted(&writes, Some(extension))?;
        Ok(sorted)
    }
}

/// Lays out the final buffer: header, index, the entries of `entries` (indexed by `index`,
/// offsets into `entries`), `extension`. One allocation of exactly the needed size.
fn assemble(
    entries: &[u8],
    index: &[[usize; 2]],
    extension: &[u8],
) -> Result<SessionData, PayloadTooLarge> {
    let n = index.len();
    if n == 0 && extension.is_empty() {
        return Ok(SessionData::default());
    }
    let body = entries.len() + extension.len();
    let narrow = 2 * (1 + 2 * n) + body;
    let (width, total) = if narrow <= NARROW_MAX {
        (2, narrow)
    } else {
        (4, 4 * (1 + 2 * n) + body)
    };
    if total > u32::MAX as usize {
        return Err(PayloadTooLarge { len: entries.len() });
    }
    let base = width * (1 + 2 * n);
    let mut out = Vec::with_capacity(total);
    let put = |out: &mut Vec<u8>, x: usize| {
        // `total` fits the width, and every offset is below it.
        if width == 2 {
            out.extend_from_slice(&u16::try_from(x).unwrap_or(u16::MAX).to_le_bytes());
        } else {
            out.extend_from_slice(&u32::try_from(x).unwrap_or(u32::MAX).to_le_bytes());
        }
    };
    put(&mut out, n);
    for &[key_end, end] in index {
        put(&mut out, base + key_end);
        put(&mut out, base + end);
    }
    out.extend_from_slice(entries);
    out.extend_from_slice(extension);
    Ok(SessionData {
        buf: out.into_boxed_slice(),
    })
}

/// One write of a batch: `Some(value)` sets the key, `None` removes it.
type Write<'a> = (&'a str, Option<&'a RawJsonStr>);

/// Sorts `writes` by key, keeping the last write of a repeated key (stable: the order of the
/// batch decides).
fn normalize(writes: &mut Vec<Write<'_>>) {
    writes.sort_by(|a, b| a.0.cmp(b.0));
    // `dedup_by` keeps the first of a run; copy each later write over it before dropping it.
    writes.dedup_by(|later, kept| {
        later.0 == kept.0 && {
            *kept = *later;
            true
        }
    });
}

impl SessionData {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes per header word and offset: 2 while the buffer fits `u16` offsets, else 4.
    fn width(&self) -> usize {
        if self.buf.len() > NARROW_MAX { 4 } else { 2 }
    }

    /// The header word or offset at byte `at`.
    fn word(&self, at: usize) -> usize {
        match self.buf.get(at..at + self.width()) {
            Some(&[a, b]) => usize::from(u16::from_le_bytes([a, b])),
            Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]) as usize,
            _ => 0,
        }
    }

    /// Offset `k` of the index (entry `i`'s key ends at offset `2i`, its value at `2i + 1`).
    fn offset(&self, k: usize) -> usize {
        self.word(self.width() * (1 + k))
    }

    /// Where the first entry starts (after the header and the index).
    fn entries_start(&self) -> usize {
        if self.buf.is_empty() {
            0
        } else {
            self.width() * (1 + 2 * self.len())
        }
    }

    /// Where entry `i` starts (for `i == len()`: where the entries end).
    fn start(&self, i: usize) -> usize {
        match i.checked_sub(1) {
            Some(p) => self.offset(2 * p + 1),
            None => self.entries_start(),
        }
    }

    /// The text between two offsets. The buffer is only ever built from whole `str`s, so the
    /// check cannot fail (checked rather than assumed: no `unsafe`).
    fn text(&self, from: usize, to: usize) -> &str {
        self.buf
            .get(from..to)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }

    fn key_at(&self, i: usize) -> &str {
        self.text(self.start(i), self.offset(2 * i))
    }

    fn value_range(&self, i: usize) -> (usize, usize) {
        (self.offset(2 * i), self.offset(2 * i + 1))
    }

    fn value_at(&self, i: usize) -> &RawJsonStr {
        let (from, to) = self.value_range(i);
        RawJsonStr::from_valid(self.text(from, to))
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key_at(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&RawJsonStr> {
        self.find(key).ok().map(|i| self.value_at(i))
    }

    /// The value for `key`, decoded.
    pub fn get_as<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, serde_json::Error> {
        self.get(key).map(RawJsonStr::parse).transpose()
    }

    /// Sets `key`, returning the previous value.
    ///
    /// Should the map grow past [`MAX_PAYLOAD_LEN`] it is left unchanged, `None` is returned
    /// and a warning logged; [`try_insert`](Self::try_insert) reports that case instead.
    pub fn insert(&mut self, key: impl AsRef<str>, value: RawJson) -> Option<RawJson> {
        match self.try_insert(key, value) {
            Ok(previous) => previous,
            Err(e) => {
                tracing::warn!(error = %e, "session value not stored");
                None
            }
        }
    }

    /// Sets `key`, returning the previous value, or refuses (leaving the map unchanged) if the
    /// map would grow past [`MAX_PAYLOAD_LEN`].
    pub fn try_insert(
        &mut self,
        key: impl AsRef<str>,
        value: RawJson,
    ) -> Result<Option<RawJson>, PayloadTooLarge> {
        let key = key.as_ref();
        let previous = self.get(key).map(RawJsonStr::to_owned);
        self.apply_sorted(&[(key, Some(value.as_raw_json_str()))], None)?;
        Ok(previous)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<RawJson> {
        let previous = self.get(key)?.to_owned();
        // Shrinking cannot exceed the limit.
        let _ = self.apply_sorted(&[(key, None)], None);
        Some(previous)
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
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &RawJsonStr)> {
        (0..self.len()).map(|i| (self.key_at(i), self.value_at(i)))
    }

    /// Keys in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        (0..self.len()).map(|i| self.key_at(i))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.word(0)
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sum of key and value lengths in bytes (the payload, without any overhead or extension).
    pub fn payload_len(&self) -> usize {
        self.start(self.len()) - self.entries_start()
    }

    /// Bytes the allocation holding this map takes (header, index, payload and extension).
    pub fn buffer_len(&self) -> usize {
        self.buf.len()
    }

    /// The extension: bytes a backend keeps beside the values, in the same allocation (empty
    /// unless set). Not part of the values: equality, serialization and `Debug` ignore it, and
    /// every change to the values keeps it as it is.
    ///
    /// ```
    /// use session_core::{RawJson, SessionData};
    /// let mut data = SessionData::new();
    /// data.insert("a", RawJson::from_value(&1).unwrap());
    /// data.set_extension(&[7, 7]).unwrap();
    /// data.insert("b", RawJson::from_value(&2).unwrap());
    /// assert_eq!(data.extension(), &[7, 7]);
    /// let mut plain = SessionData::new();
    /// plain.insert("a", RawJson::from_value(&1).unwrap());
    /// plain.insert("b", RawJson::from_value(&2).unwrap());
    /// assert_eq!(data, plain);
    /// ```
    pub fn extension(&self) -> &[u8] {
        self.buf.get(self.start(self.len())..).unwrap_or_default()
    }

    /// Replaces the extension (in place when it keeps its length, else with one rebuild), or
    /// refuses, leaving the map unchanged, if the buffer would pass [`MAX_PAYLOAD_LEN`].
    pub fn set_extension(&mut self, extension: &[u8]) -> Result<(), PayloadTooLarge> {
        let from = self.start(self.len());
        if self.buf.len() - from == extension.len() {
            self.buf[from..].copy_from_slice(extension);
            return Ok(());
        }
        self.apply_sorted(&[], Some(extension))
    }

    /// Applies a delta: removed keys go, set keys take their new values (one rebuild for the
    /// whole delta).
    ///
    /// Should the map grow past [`MAX_PAYLOAD_LEN`] it is left unchanged and a warning logged;
    /// [`try_apply`](Self::try_apply) reports that case instead.
    pub fn apply(&mut self, delta: &Delta) {
        if let Err(e) = self.try_apply(delta) {
            tracing::warn!(error = %e, "session delta not applied");
        }
    }

    /// Applies a delta (removals first, then sets, as [`Delta`] records them) with one rebuild,
    /// or refuses, leaving the map unchanged, if it would grow past [`MAX_PAYLOAD_LEN`].
    pub fn try_apply(&mut self, delta: &Delta) -> Result<(), PayloadTooLarge> {
        self.apply_writes(
            delta
                .removed
                .iter()
                .map(|k| (&**k, None))
                .chain(delta.set.iter().map(|(k, v)| (&**k, Some(&**v)))),
        )
    }

    /// Applies a batch of writes, `(key, Some(value))` to set and `(key, None)` to remove, with
    /// one rebuild (or in place when every write replaces a value by one of the same length).
    /// A key written twice takes its last write. Refuses, leaving the map unchanged, if it
    /// would grow past [`MAX_PAYLOAD_LEN`].
    pub fn apply_writes<'a, I>(&mut self, writes: I) -> Result<(), PayloadTooLarge>
    where
        I: IntoIterator<Item = (&'a str, Option<&'a RawJsonStr>)>,
    {
        let mut writes: Vec<Write<'a>> = writes.into_iter().collect();
        normalize(&mut writes);
        self.apply_sorted(&writes, None)
    }

    /// [`apply_writes`](Self::apply_writes) and [`set_extension`](Self::set_extension)
    /// together, with at most one rebuild.
    pub fn apply_writes_with_extension<'a, I>(
        &mut self,
        writes: I,
        extension: &[u8],
    ) -> Result<(), PayloadTooLarge>
    where
        I: IntoIterator<Item = (&'a str, Option<&'a RawJsonStr>)>,
    {
        let mut writes: Vec<Write<'a>> = writes.into_iter().collect();
        normalize(&mut writes);
        self.apply_sorted(&writes, Some(extension))
    }

    /// Applies writes sorted by key, each key once, and replaces the extension when one is
    /// given (else keeps it).
    fn apply_sorted(
        &mut self,
        writes: &[Write<'_>],
        extension: Option<&[u8]>,
    ) -> Result<(), PayloadTooLarge> {
        let ext_from = self.start(self.len());
        let same_ext = extension.is_none_or(|e| e.len() == self.buf.len() - ext_from);
        if writes.is_empty() && extension.is_none() {
            return Ok(());
        }
        // In place: every write replaces a value by one of the same length, and the
        // extension keeps its length.
        if same_ext {
            let mut places = Vec::new();
            for &(k, v) in writes {
                match (self.find(k), v) {
                    (Ok(i), Some(v)) if self.value_at(i).len() == v.len() => places.push(i),
                    _ => break,
                }
            }
            if places.len() == writes.len() {
                for (&i, &(_, v)) in places.iter().zip(writes) {
                    let (from, to) = self.value_range(i);
                    if let Some(v) = v {
                        self.buf[from..to].copy_from_slice(v.as_str().as_bytes());
                    }
                }
                if let Some(e) = extension {
                    self.buf[ext_from..].copy_from_slice(e);
                }
                return Ok(());
            }
        }
        // Otherwise one rebuild: measure the result, then write it.
        let (mut bytes, mut entries) = (0usize, 0usize);
        self.merge_walk(writes, |k, v| {
            bytes += k.len() + v.len();
            entries += 1;
        });
        if bytes > MAX_PAYLOAD_LEN {
            return Err(PayloadTooLarge { len: bytes });
        }
        let mut b = Builder::with_capacity(bytes, entries);
        self.merge_walk(writes, |k, v| b.push(k, v));
        let extension = extension.unwrap_or_else(|| self.extension());
        *self = assemble(&b.buf, &b.index, extension)?;
        Ok(())
    }

    /// Calls `emit` with every entry of this map updated by `writes` (sorted, unique), in key
    /// order.
    fn merge_walk<'a>(&'a self, writes: &[Write<'a>], mut emit: impl FnMut(&'a str, &'a str)) {
        let n = self.len();
        let mut i = 0;
        for &(k, v) in writes {
            while i < n && self.key_at(i) < k {
                emit(self.key_at(i), self.value_at(i).as_str());
                i += 1;
            }
            if i < n && self.key_at(i) == k {
                i += 1;
            }
            if let Some(v) = v {
                emit(k, v.as_str());
            }
        }
        while i < n {
            emit(self.key_at(i), self.value_at(i).as_str());
            i += 1;
        }
    }

    /// The map as one JSON object (for stores that keep JSON, such as PostgreSQL's JSONB).
    pub fn to_json_object(&self) -> String {
        let mut out = String::with_capacity(self.payload_len() + 4 * self.len() + 2);
        out.push('{');
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Serializing a &str to JSON cannot fail.
            out.push_str(&serde_json::to_string(k).unwrap_or_default());
            out.push(':');
            out.push_str(v.as_str());
        }
        out.push('}');
        out
    }

    /// Parses a JSON object into a map (values are validated and kept as text).
    pub fn from_json_object(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl PartialEq for SessionData {
    /// The entries only: the extension is not part of the values.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for SessionData {}

impl fmt::Debug for SessionData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys only: values may be personal data and do not belong in logs.
        f.debug_set().entries(self.keys()).finish()
    }
}

impl FromIterator<(String, RawJson)> for SessionData {
    /// Collects entries; a key given twice keeps its last value. Entries that together pass
    /// [`MAX_PAYLOAD_LEN`] give an empty map (with a warning).
    fn from_iter<I: IntoIterator<Item = (String, RawJson)>>(iter: I) -> Self {
        let mut b = Builder::with_capacity(0, 0);
        for (k, v) in iter {
            b.push(&k, v.as_str());
        }
        b.finish(&[]).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "session values dropped");
            SessionData::new()
        })
    }
}

impl Serialize for SessionData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for SessionData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(DataVisitor)
    }
}

/// Decodes a map straight into the packed layout (keys sorted, a repeated key keeping its last
/// value, as a `BTreeMap` would).
struct DataVisitor;

impl<'de> Visitor<'de> for DataVisitor {
    type Value = SessionData;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of session values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SessionData, A::Error> {
        // The size hint comes from the peer: cap what it may make us reserve.
        let entries = map.size_hint().unwrap_or(0).min(64);
        let mut b = Builder::with_capacity(0, entries);
        while map.next_key_seed(AppendKey(&mut b.buf))?.is_some() {
            let start = b.end();
            let key_end = b.buf.len();
            map.next_value_seed(AppendValue(&mut b.buf))?;
            b.close_entry(start, key_end);
            if b.buf.len() > MAX_PAYLOAD_LEN {
                return Err(A::Error::custom(PayloadTooLarge { len: b.buf.len() }));
            }
        }
        b.finish(&[]).map_err(A::Error::custom)
    }
}

/// Appends a decoded string (a key) to the buffer.
struct AppendKey<'b>(&'b mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for AppendKey<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for AppendKey<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.0.extend_from_slice(v.as_bytes());
        Ok(())
    }
}

/// Appends a decoded value's JSON text to the buffer: the JSON value itself from a
/// human-readable format, a string of JSON text (validated) from a binary one.
struct AppendValue<'b>(&'b mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for AppendValue<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if d.is_human_readable() {
            let raw = Box::<RawValue>::deserialize(d)?;
            self.0.extend_from_slice(raw.get().as_bytes());
            Ok(())
        } else {
            d.deserialize_str(self)
        }
    }
}

impl Visitor<'_> for AppendValue<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string of JSON text")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        validate_json(v).map_err(E::custom)?;
        self.0.extend_from_slice(v.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod packed_tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// The model: what the map should hold.
    type Model = BTreeMap<String, String>;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, String),
        Remove(String),
        Apply(Vec<(String, Option<String>)>),
        Writes(Vec<(String, Option<String>)>),
    }

    fn key() -> impl Strategy<Value = String> {
        // A small alphabet so keys collide; the empty key and non-ASCII keys included.
        "[abé\"]{0,3}"
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            (0..10u8).prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            ".{0,12}".prop_map(|s| serde_json::Value::String(s).to_string()),
            Just("null".to_string()),
            Just(r#"{"a":[1,true,{"b":null}]}"#.to_string()),
            Just(" [ 1 , 2 ] ".to_string()),
        ]
    }

    fn write() -> impl Strategy<Value = (String, Option<String>)> {
        (key(), proptest::option::of(value()))
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (key(), value()).prop_map(|(k, v)| Op::Insert(k, v)),
            key().prop_map(Op::Remove),
            proptest::collection::vec(write(), 0..6).prop_map(Op::Apply),
            proptest::collection::vec(write(), 0..6).prop_map(Op::Writes),
        ]
    }

    fn raw(v: &str) -> RawJson {
        RawJson::from_json(v).unwrap()
    }

    fn check(data: &SessionData, model: &Model) {
        assert_eq!(data.len(), model.len());
        assert_eq!(data.is_empty(), model.is_empty());
        let entries: Vec<(&str, &str)> = data.iter().map(|(k, v)| (k, v.as_str())).collect();
        let expected: Vec<(&str, &str)> = model
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(entries, expected);
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            model.keys().collect::<Vec<_>>()
        );
        assert_eq!(
            data.payload_len(),
            model.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        );
        for (i, (k, v)) in model.iter().enumerate() {
            assert_eq!(data.get(k).map(RawJsonStr::as_str), Some(v.as_str()));
            assert_eq!(data.position(k), Some(i));
            assert!(data.contains_key(k));
        }
        for absent in ["zz", "ab\"é", "x"] {
            if !model.contains_key(absent) {
                assert!(data.get(absent).is_none());
                assert_eq!(data.position(absent), None);
            }
        }
    }

    /// The encodings the previous layout produced, from the model.
    fn old_json(model: &Model) -> String {
        let map: BTreeMap<&str, &RawValue> = model
            .iter()
            .map(|(k, v)| (k.as_str(), serde_json::from_str::<&RawValue>(v).unwrap()))
            .collect();
        serde_json::to_string(&map).unwrap()
    }

    fn old_json_object(model: &Model) -> String {
        let body: Vec<String> = model
            .iter()
            .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
            .collect();
        format!("{{{}}}", body.join(","))
    }

    fn old_postcard(model: &Model) -> Vec<u8> {
        postcard::to_allocvec(model).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn behaves_like_a_sorted_map_and_encodes_as_before(ops in proptest::collection::vec(op(), 0..24)) {
            let mut data = SessionData::new();
            let mut model = Model::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let previous = data.insert(k.as_str(), raw(&v));
                        prop_assert_eq!(previous.map(|p| p.as_str().to_owned()), model.insert(k, v));
                    }
                    Op::Remove(k) => {
                        let previous = data.remove(&k);
                        prop_assert_eq!(previous.map(|p| p.as_str().to_owned()), model.remove(&k));
                    }
                    Op::Apply(writes) => {
                        let mut delta = Delta::default();
                        for (k, v) in &writes {
                            match v {
                                Some(v) => delta.set(k, raw(v)),
                                None => delta.remove(k),
                            }
                        }
                        for k in &delta.removed {
                            model.remove(&**k);
                        }
                        for (k, v) in &delta.set {
                            model.insert(k.to_string(), v.as_str().to_owned());
                        }
                        data.apply(&delta);
                    }
                    Op::Writes(writes) => {
                        let owned: Vec<(String, Option<RawJson>)> =
                            writes.iter().map(|(k, v)| (k.clone(), v.as_deref().map(raw))).collect();
                        data.apply_writes(owned.iter().map(|(k, v)| (k.as_str(), v.as_deref())))
                            .unwrap();
                        for (k, v) in writes {
                            match v {
                                Some(v) => model.insert(k, v),
                                None => model.remove(&k),
                            };
                        }
                    }
                }
                check(&data, &model);
            }
            if model.is_empty() {
                prop_assert_eq!(&data, &SessionData::new());
            }

            // Byte-identical encodings, and round trips.
            let json = serde_json::to_string(&data).unwrap();
            prop_assert_eq!(&json, &old_json(&model));
            prop_assert_eq!(&data.to_json_object(), &old_json_object(&model));
            // Decoding JSON trims whitespace around values (as it did): compare with the
            // previous decoding, a `BTreeMap` of `RawJson`.
            let decoded = serde_json::from_str::<SessionData>(&json).unwrap();
            let previous: BTreeMap<String, RawJson> = serde_json::from_str(&json).unwrap();
            check(
                &decoded,
                &previous.iter().map(|(k, v)| (k.clone(), v.as_str().to_owned())).collect(),
            );
            prop_assert_eq!(&SessionData::from_json_object(&json).unwrap(), &decoded);
            if model.values().all(|v| v.trim() == v) {
                prop_assert_eq!(&decoded, &data);
                prop_assert_eq!(&data.to_json_object(), &json);
            }
            let bytes = postcard::to_allocvec(&data).unwrap();
            prop_assert_eq!(&bytes, &old_postcard(&model));
            prop_assert_eq!(&postcard::from_bytes::<SessionData>(&bytes).unwrap(), &data);
            let collected: SessionData = model.iter().map(|(k, v)| (k.clone(), raw(v))).collect();
            prop_assert_eq!(&collected, &data);
            prop_assert_eq!(data.clone(), data);
        }

        #[test]
        fn decoding_sorts_and_keeps_the_last_of_a_repeated_key(
            entries in proptest::collection::vec((key(), value()), 0..8)
        ) {
            let model: Model = entries.iter().cloned().collect();
            // JSON in the given order, repeats included.
            let mut json = String::from("{");
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                json.push_str(&serde_json::to_string(k).unwrap());
                json.push(':');
                json.push_str(v);
            }
            json.push('}');
            let data: SessionData = serde_json::from_str(&json).unwrap();
            let old: BTreeMap<String, RawJson> = serde_json::from_str(&json).unwrap();
            check(&data, &old.iter().map(|(k, v)| (k.clone(), v.as_str().to_owned())).collect());
            // A postcard map is a length and the pairs, as a sequence of pairs is.
            let bytes = postcard::to_allocvec(&entries).unwrap();
            let data: SessionData = postcard::from_bytes(&bytes).unwrap();
            check(&data, &model);
            let collected: SessionData = entries.iter().map(|(k, v)| (k.clone(), raw(v))).collect();
            check(&collected, &model);
        }
    }

    #[test]
    fn binary_decoding_validates_values() {
        let bytes = postcard::to_allocvec(&vec![("k", "{")]).unwrap();
        assert!(postcard::from_bytes::<SessionData>(&bytes).is_err());
        let bytes = postcard::to_allocvec(&vec![("k", "1 2")]).unwrap();
        assert!(postcard::from_bytes::<SessionData>(&bytes).is_err());
        assert!(serde_json::from_str::<SessionData>(r#"{"k":}"#).is_err());
        assert!(serde_json::from_str::<SessionData>(r#"[1]"#).is_err());
    }

    #[test]
    fn same_length_replacement_is_in_place_and_others_rebuild() {
        let mut d = SessionData::new();
        d.insert("a", raw("1"));
        d.insert("b", raw(r#""xy""#));
        let mut delta = Delta::default();
        delta.set("a", raw("2"));
        delta.set("b", raw(r#""zw""#));
        d.apply(&delta);
        assert_eq!(d.to_json_object(), r#"{"a":2,"b":"zw"}"#);
        delta.set("b", raw("[]"));
        delta.remove("a");
        d.apply(&delta);
        assert_eq!(d.to_json_object(), r#"{"b":[]}"#);
        assert_eq!(d.remove("b"), Some(raw("[]")));
        assert_eq!(d, SessionData::new());
    }

    #[test]
    fn raw_json_str_matches_raw_json() {
        let owned = raw(r#"{"n":1}"#);
        let borrowed: &RawJsonStr = &owned;
        assert_eq!(borrowed, owned);
        assert_eq!(owned, borrowed);
        assert_eq!(borrowed.to_owned(), owned);
        assert_eq!(borrowed.parse::<serde_json::Value>().unwrap()["n"], 1);
        assert_eq!(format!("{borrowed} {borrowed:?}"), r#"{"n":1} {"n":1}"#);
        assert_eq!(
            serde_json::to_string(borrowed).unwrap(),
            serde_json::to_string(&owned).unwrap()
        );
        assert_eq!(
            postcard::to_allocvec(borrowed).unwrap(),
            postcard::to_allocvec(&owned).unwrap()
        );
    }

    #[test]
    fn builder_builds() {
        let mut b = Builder::with_capacity(0, 0);
        b.push("k", "1");
        assert!(b.finish(&[]).is_ok());
    }

    #[test]
    fn one_allocation_with_u16_offsets_then_u32_past_64_kib() {
        let mut d = SessionData::new();
        assert_eq!(d.buffer_len(), 0, "an empty map allocates nothing");
        d.insert("ab", raw("1"));
        d.insert("c", raw(r#""xyz""#));
        // Header, two offsets per entry (u16), then the payload.
        assert_eq!(d.buffer_len(), 2 + 2 * 2 * 2 + d.payload_len());
        let big = format!("\"{}\"", "x".repeat(70_000));
        d.insert("big", raw(&big));
        assert_eq!(d.buffer_len(), 4 + 3 * 2 * 4 + d.payload_len());
        assert_eq!(d.get("big").unwrap().as_str(), big);
        assert_eq!(d.get("c").unwrap().as_str(), r#""xyz""#);
        assert_eq!(d.keys().collect::<Vec<_>>(), ["ab", "big", "c"]);
        d.remove("big");
        assert_eq!(d.buffer_len(), 2 + 2 * 2 * 2 + d.payload_len());
        assert_eq!(d.to_json_object(), r#"{"ab":1,"c":"xyz"}"#);
    }

    #[test]
    fn the_extension_rides_along_and_is_not_a_value() {
        let mut d = SessionData::new();
        d.set_extension(&[1, 2, 3]).unwrap();
        assert_eq!(d.extension(), &[1, 2, 3]);
        assert!(d.is_empty());
        assert_eq!(d, SessionData::new());
        d.insert("b", raw("1"));
        d.insert("a", raw("[true]"));
        assert_eq!(d.extension(), &[1, 2, 3], "kept by changes to the values");
        let mut delta = Delta::default();
        delta.set("a", raw("[null]"));
        d.apply(&delta);
        assert_eq!(d.extension(), &[1, 2, 3], "kept by an in-place replacement");
        d.set_extension(&[9, 9, 9]).unwrap();
        assert_eq!(d.extension(), &[9, 9, 9]);
        d.apply_writes_with_extension([("c", Some(&*raw("2")))], &[4])
            .unwrap();
        assert_eq!(d.extension(), &[4]);
        assert_eq!(d.to_json_object(), r#"{"a":[null],"b":1,"c":2}"#);
        assert_eq!(d.payload_len(), "a[null]b1c2".len());
        let plain: SessionData = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(plain, d, "equality ignores the extension");
        assert!(
            plain.extension().is_empty(),
            "and serialization leaves it out"
        );
        assert_eq!(
            postcard::to_allocvec(&d).unwrap(),
            postcard::to_allocvec(&plain).unwrap()
        );
        d.set_extension(&[]).unwrap();
        assert_eq!(d.buffer_len(), plain.buffer_len());
        // A wide buffer keeps its extension too.
        let big = format!("\"{}\"", "y".repeat(70_000));
        d.apply_writes_with_extension([("big", Some(&*raw(&big)))], &[5, 6])
            .unwrap();
        assert_eq!(d.extension(), &[5, 6]);
        assert_eq!(d.get("big").unwrap().as_str(), big);
        assert_eq!(d.get("c").unwrap().as_str(), "2");
    }
}
