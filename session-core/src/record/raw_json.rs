//! One session value as JSON text, owned ([`RawJson`]) and borrowed ([`RawJsonStr`]): validated
//! once when built, never re-encoded while a session is loaded, replicated or stored.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use ref_cast::{RefCastCustom, ref_cast_custom};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// One session value: valid JSON text, kept encoded.
///
/// Values stay as JSON text from the moment they are inserted until a handler asks for a typed
/// value, so loading, replicating and storing a session never re-encodes values it does not
/// touch. The text is validated when the value is built.
///
/// `RawJson` owns its text; [`RawJsonStr`] is the borrowed form that [`SessionData`](crate::SessionData) hands out
/// (`RawJson` dereferences to it, as `String` does to `str`).
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
        validate_json(&text)?;
        Ok(RawJson(text.into_boxed_str()))
    }

    /// Decodes the value into `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        self.as_raw_json_str().parse()
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The borrowed form of this value.
    pub fn as_raw_json_str(&self) -> &RawJsonStr {
        RawJsonStr::from_valid(&self.0)
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

impl fmt::Display for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Deref for RawJson {
    type Target = RawJsonStr;

    fn deref(&self) -> &RawJsonStr {
        self.as_raw_json_str()
    }
}

impl AsRef<RawJsonStr> for RawJson {
    fn as_ref(&self) -> &RawJsonStr {
        self.as_raw_json_str()
    }
}

impl Borrow<RawJsonStr> for RawJson {
    fn borrow(&self) -> &RawJsonStr {
        self.as_raw_json_str()
    }
}

impl PartialEq<RawJsonStr> for RawJson {
    fn eq(&self, other: &RawJsonStr) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<&RawJsonStr> for RawJson {
    fn eq(&self, other: &&RawJsonStr) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_raw_json_str().serialize(s)
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

/// Checks that `text` is exactly one valid JSON value.
pub(super) fn validate_json(text: &str) -> Result<(), serde_json::Error> {
    serde_json::from_str::<serde::de::IgnoredAny>(text).map(|_| ())
}

/// A borrowed session value: valid JSON text, as [`SessionData::get`](crate::SessionData::get) and
/// [`SessionData::iter`](crate::SessionData::iter) hand it out (the values live in the map's one buffer, so there is no
/// [`RawJson`] to borrow). It is to [`RawJson`] what `str` is to `String`.
///
/// ```
/// use session_core::{RawJson, RawJsonStr};
/// let v = RawJsonStr::from_json(r#"{"n":1}"#).unwrap();
/// assert_eq!(v.len(), 7);
/// let owned: RawJson = v.to_owned();
/// assert_eq!(owned, v);
/// assert!(RawJsonStr::from_json("{").is_err());
/// ```
#[derive(RefCastCustom, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct RawJsonStr(str);

impl RawJsonStr {
    /// Wraps text already known to be one valid JSON value.
    #[ref_cast_custom]
    pub(super) fn from_valid(text: &str) -> &RawJsonStr;

    /// Borrows JSON text after checking that it is exactly one valid JSON value.
    pub fn from_json(text: &str) -> Result<&RawJsonStr, serde_json::Error> {
        validate_json(text)?;
        Ok(RawJsonStr::from_valid(text))
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

    /// Decodes the value into `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

impl ToOwned for RawJsonStr {
    type Owned = RawJson;

    fn to_owned(&self) -> RawJson {
        RawJson(Box::from(&self.0))
    }
}

impl fmt::Debug for RawJsonStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for RawJsonStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<RawJson> for RawJsonStr {
    fn eq(&self, other: &RawJson) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<RawJson> for &RawJsonStr {
    fn eq(&self, other: &RawJson) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for RawJsonStr {
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
