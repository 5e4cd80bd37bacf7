//! How a session is laid out in Redis: one hash per session, data fields and metadata fields
//! in separate namespaces.
//!
//! ```text
//! key   {prefix}{<22-char id>}           the id is the hash tag: one cluster slot per session
//! field d:<session key>  -> JSON text    one field per session value
//! field m:v              -> version      bumped by every change (not by a touch)
//! field m:c              -> created at   ms since the epoch, Redis server clock
//! field m:a              -> last access  when the idle deadline last moved
//! field m:i              -> idle deadline
//! field m:x              -> absolute deadline
//! field m:w              -> write nonce  random per create/cycle; makes a retried write idempotent
//! field m:moved          -> new id       set while a cluster cycle moves the session; the old
//!                                        key then counts as gone
//! ```
//!
//! Every data field starts with `d:` and every metadata field with `m:`, so no session key
//! (including `""`, `"m:v"` or one with a newline) can collide with metadata. The key's TTL
//! (`PEXPIREAT`) is the earlier deadline, so Redis evicts dead sessions by itself.

use session_core::{RawJson, SessionData, SessionId, SessionRecord};

/// Prefix of data fields.
pub(crate) const DATA: &[u8] = b"d:";
/// Prefix of metadata fields.
pub(crate) const META: &[u8] = b"m:";
/// The mark a cluster id cycle sets on the old key while it moves the session.
pub(crate) const MOVED: &[u8] = b"m:moved";

/// The Redis key of a session.
pub(crate) fn session_key(prefix: &str, id: &SessionId) -> String {
    format!("{prefix}{{{id}}}")
}

/// The hash field holding a session value.
pub(crate) fn data_field(key: &str) -> Vec<u8> {
    let mut f = Vec::with_capacity(DATA.len() + key.len());
    f.extend_from_slice(DATA);
    f.extend_from_slice(key.as_bytes());
    f
}

/// Why a stored hash is not a readable session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Corrupt(pub(crate) String);

fn meta_int(name: &str, value: Option<&[u8]>) -> Result<u64, Corrupt> {
    let v = value.ok_or_else(|| Corrupt(format!("metadata field m:{name} is missing")))?;
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Corrupt(format!("metadata field m:{name} is not an integer")))
}

/// Rebuilds a record from a hash's field/value pairs.
pub(crate) fn decode(
    id: SessionId,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<SessionRecord, Corrupt> {
    let (mut v, mut c, mut a, mut i, mut x) = (None, None, None, None, None);
    let mut data = Vec::new();
    for (field, value) in pairs {
        if let Some(key) = field.strip_prefix(DATA) {
            let key = String::from_utf8(key.to_vec())
                .map_err(|_| Corrupt("a data field name is not UTF-8".into()))?;
            let text = String::from_utf8(value)
                .map_err(|_| Corrupt(format!("the value of {key:?} is not UTF-8")))?;
            let json = RawJson::from_json(text)
                .map_err(|e| Corrupt(format!("the value of {key:?} is not JSON: {e}")))?;
            data.push((key, json));
        } else if let Some(name) = field.strip_prefix(META) {
            match name {
                b"v" => v = Some(value),
                b"c" => c = Some(value),
                b"a" => a = Some(value),
                b"i" => i = Some(value),
                b"x" => x = Some(value),
                // m:w, m:moved, and metadata a newer release may add.
                _ => {}
            }
        }
        // Fields outside both namespaces are not ours; ignore them.
    }
    Ok(SessionRecord {
        id,
        data: data.into_iter().collect::<SessionData>(),
        created_at: meta_int("c", c.as_deref())?,
        last_access: meta_int("a", a.as_deref())?,
        idle_deadline: meta_int("i", i.as_deref())?,
        absolute_deadline: meta_int("x", x.as_deref())?,
        version: meta_int("v", v.as_deref())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(f: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
        (f.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    fn meta() -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            pair("m:v", "3"),
            pair("m:c", "100"),
            pair("m:a", "150"),
            pair("m:i", "200"),
            pair("m:x", "900"),
            pair("m:w", "abc"),
        ]
    }

    #[test]
    fn keys_carry_the_id_as_hash_tag() {
        let id = SessionId::random();
        let k = session_key("app:s:", &id);
        assert_eq!(k, format!("app:s:{{{id}}}"));
        assert_eq!(data_field(""), b"d:".to_vec());
        assert_eq!(data_field("m:v"), b"d:m:v".to_vec());
    }

    #[test]
    fn decodes_data_and_metadata_without_collisions() {
        let id = SessionId::random();
        let mut p = meta();
        p.push(pair("d:", "1"));
        p.push(pair("d:m:v", "\"not metadata\""));
        p.push(pair("d:new\nline", "[1,2]"));
        p.push(pair("foreign", "ignored"));
        let r = decode(id, p).unwrap();
        assert_eq!(r.version, 3);
        assert_eq!((r.created_at, r.last_access), (100, 150));
        assert_eq!((r.idle_deadline, r.absolute_deadline), (200, 900));
        assert_eq!(r.data.len(), 3);
        assert_eq!(r.data.get_as::<u32>("").unwrap(), Some(1));
        assert_eq!(
            r.data.get_as::<String>("m:v").unwrap().as_deref(),
            Some("not metadata")
        );
    }

    #[test]
    fn reports_corruption() {
        let id = SessionId::random();
        let mut p = meta();
        p.retain(|(f, _)| f != b"m:x");
        assert!(decode(id, p).unwrap_err().0.contains("m:x"));
        let mut p = meta();
        p.push(pair("d:k", "{not json"));
        assert!(decode(id, p).unwrap_err().0.contains("not JSON"));
        let mut p = meta();
        p[0] = pair("m:v", "-1");
        assert!(decode(id, p).is_err());
        let mut p = meta();
        p.push((b"d:\xff".to_vec(), b"1".to_vec()));
        assert!(decode(id, p).is_err());
    }
}
