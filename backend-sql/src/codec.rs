//! How session data is written to and read from the `data` column.
//!
//! * PostgreSQL keeps the session as a JSONB object (`{"key": value, ...}`), so it can be
//!   queried and the delta is applied with JSONB operators. JSONB prints with a space after `:`
//!   and `,`; [`minify`] removes whitespace outside strings so values come back as compact JSON
//!   text (the same text other backends return).
//! * SQLite keeps a JSON object whose values are **JSON strings holding each value's JSON text**
//!   (`{"user":"\"alice\"","n":"42"}`). The delta is applied by rebuilding the object with
//!   `json_each`/`json_group_object`; if the values were plain JSON, SQLite would re-encode them
//!   on the way through (booleans become `1`/`0`, large integers and long decimals lose
//!   precision). As strings they pass through byte for byte, and every key works (no JSON-path
//!   quoting of arbitrary keys is ever needed).

use session_core::{Delta, SessionData};
#[cfg(feature = "sqlite")]
use session_core::{RawJson, RawJsonStr};

/// Why stored data could not be decoded (the row is then treated as corrupt).
#[derive(Debug, thiserror::Error)]
#[error("stored session data is not a valid session object: {0}")]
pub(crate) struct CorruptData(String);

impl CorruptData {
    pub(crate) fn new(why: impl Into<String>) -> Self {
        CorruptData(why.into())
    }
}

#[cfg(feature = "postgres")]
/// Removes insignificant whitespace (outside strings) from JSON text.
pub(crate) fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else {
            match c {
                ' ' | '\n' | '\r' | '\t' => {}
                '"' => {
                    in_string = true;
                    out.push(c);
                }
                _ => out.push(c),
            }
        }
    }
    out
}

#[cfg(feature = "postgres")]
/// Decodes PostgreSQL's `data::text`.
pub(crate) fn decode_pg(text: &str) -> Result<SessionData, CorruptData> {
    SessionData::from_json_object(&minify(text)).map_err(|e| CorruptData(e.to_string()))
}

#[cfg(feature = "sqlite")]
/// Decodes SQLite's wrapped object.
pub(crate) fn decode_sqlite(text: &str) -> Result<SessionData, CorruptData> {
    let map: std::collections::BTreeMap<String, String> =
        serde_json::from_str(text).map_err(|e| CorruptData(e.to_string()))?;
    map.into_iter()
        .map(|(k, v)| {
            RawJson::from_json(v)
                .map(|v| (k.clone(), v))
                .map_err(|e| CorruptData(format!("value of key {k:?}: {e}")))
        })
        .collect()
}

#[cfg(feature = "sqlite")]
/// Encodes a map in SQLite's wrapped form.
pub(crate) fn encode_sqlite<'a>(
    entries: impl Iterator<Item = (&'a str, &'a RawJsonStr)>,
) -> String {
    let map: serde_json::Map<String, serde_json::Value> = entries
        .map(|(k, v)| {
            (
                k.to_owned(),
                serde_json::Value::String(v.as_str().to_owned()),
            )
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

#[cfg(feature = "sqlite")]
/// The keys a delta touches (set or removed) as a JSON array, for SQLite's rebuild.
pub(crate) fn touched_keys_json(delta: &Delta) -> String {
    let keys: Vec<&str> = delta
        .set
        .iter()
        .map(|(k, _)| &**k)
        .chain(delta.removed.iter().map(|k| &**k))
        .collect();
    serde_json::to_string(&keys).unwrap_or_else(|_| "[]".into())
}

#[cfg(feature = "postgres")]
/// The keys a delta removes, for PostgreSQL's `data - $keys::text[]`.
pub(crate) fn removed_keys(delta: &Delta) -> Vec<String> {
    delta.removed.iter().map(|k| k.to_string()).collect()
}

#[cfg(feature = "postgres")]
/// The keys a delta sets as one JSON object, for PostgreSQL's `|| $set::jsonb`.
pub(crate) fn set_object_pg(delta: &Delta) -> String {
    let mut d = SessionData::new();
    for (k, v) in &delta.set {
        d.insert(k.clone(), v.clone());
    }
    d.to_json_object()
}

#[cfg(test)]
#[cfg(all(feature = "postgres", feature = "sqlite"))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(x: serde_json::Value) -> RawJson {
        RawJson::from_value(&x).unwrap()
    }

    #[test]
    fn minify_keeps_strings_intact() {
        assert_eq!(
            minify(r#"{"a b": [1, 2], "c": {"x": "y \" z\\"}, "d" : "\t"}"#),
            r#"{"a b":[1,2],"c":{"x":"y \" z\\"},"d":"\t"}"#
        );
    }

    #[test]
    fn sqlite_wrapping_round_trips_every_kind_of_value_and_key() {
        let mut d = SessionData::new();
        d.insert("", v(serde_json::json!(true)));
        d.insert("\"quoted\"", v(serde_json::json!(null)));
        d.insert("a.b", v(serde_json::json!({"x": [1.5, false]})));
        d.insert("big", RawJson::from_json("18446744073709551615").unwrap());
        d.insert("f", RawJson::from_json("0.30000000000000004").unwrap());
        let text = encode_sqlite(d.iter());
        assert_eq!(decode_sqlite(&text).unwrap(), d);
    }

    #[test]
    fn corrupt_data_is_reported() {
        assert!(decode_sqlite("not json").is_err());
        assert!(decode_sqlite(r#"{"a": 1}"#).is_err(), "unwrapped value");
        assert!(
            decode_sqlite(r#"{"a": "{broken"}"#).is_err(),
            "bad inner JSON"
        );
        assert!(decode_pg("[1, 2]").is_err());
        assert!(decode_pg(r#""text""#).is_err());
        assert_eq!(
            decode_pg(r#"{"a": [1, 2]}"#).unwrap().to_json_object(),
            r#"{"a":[1,2]}"#
        );
    }

    #[test]
    fn delta_parameters() {
        let mut delta = Delta::default();
        delta.set("b", v(serde_json::json!(1)));
        delta.remove("a\"");
        assert_eq!(touched_keys_json(&delta), r#"["b","a\""]"#);
        assert_eq!(removed_keys(&delta), vec!["a\"".to_string()]);
        assert_eq!(set_object_pg(&delta), r#"{"b":1}"#);
    }

    proptest! {
        #[test]
        fn minify_matches_serde_compact_output(value in arb_json()) {
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            prop_assert_eq!(minify(&pretty), serde_json::to_string(&value).unwrap());
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            ".{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
