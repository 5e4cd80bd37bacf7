//! Property tests of the seal: whatever the session, any single-byte change of the sealed bytes
//! and any single-character change of the cookie fail to open; arbitrary input never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::sync::OnceLock;

use backend_cookie::{OVERHEAD, OpenError, Sealer, sealed_len};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use proptest::sample::Index;
use session_core::{
    ExpiryPolicy, KeyRing, RawJson, Secret, SessionData, SessionId, SessionRecord, TokenError,
};

fn keys() -> &'static KeyRing {
    static K: OnceLock<KeyRing> = OnceLock::new();
    K.get_or_init(|| {
        KeyRing::new([
            Secret::new(b"the current secret of the property tests".to_vec()).unwrap(),
            Secret::new(b"an older secret of the property tests....".to_vec()).unwrap(),
        ])
        .unwrap()
    })
}

fn sealer(compress: bool) -> Sealer {
    Sealer::new(keys(), "sid").with_compression(compress)
}

fn value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        any::<i64>().prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
        "[a-c]{0,300}".prop_map(serde_json::Value::from), // compressible
        proptest::collection::vec(any::<u16>(), 0..20).prop_map(|v| serde_json::json!(v)),
    ]
}

fn session() -> impl Strategy<Value = SessionRecord> {
    (
        any::<[u8; 16]>(),
        proptest::collection::vec((".{0,12}", value()), 0..8),
        0u64..4_000_000_000_000,
        1u64..1_000,
    )
        .prop_map(|(id, entries, now, version)| {
            let mut r = ExpiryPolicy::default().new_record(SessionId::from_bytes(id), now);
            r.version = version;
            r.data = entries
                .into_iter()
                .map(|(k, v)| (k, RawJson::from_value(&v).unwrap()))
                .collect::<SessionData>();
            r
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trips(r in session(), compress in any::<bool>(), epoch in any::<u32>()) {
        let s = sealer(compress);
        let sealed = s.seal(&r, epoch).unwrap();
        prop_assert!(sealed.token.len() <= sealed_len(sealed.payload_len));
        let o = s.open(&sealed.token).unwrap();
        prop_assert_eq!(o.payload.record, r);
        prop_assert_eq!(o.payload.epoch, epoch);
        prop_assert_eq!(o.key_index, 0);
        prop_assert_eq!(o.compressed, sealed.compressed);
    }

    #[test]
    fn any_single_byte_change_fails_to_open(
        r in session(),
        compress in any::<bool>(),
        pos in any::<Index>(),
        xor in 1u8..=255,
    ) {
        let s = sealer(compress);
        let token = s.seal(&r, 0).unwrap().token;
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        prop_assert!(raw.len() > OVERHEAD);
        let i = pos.index(raw.len());
        raw[i] ^= xor;
        let forged = URL_SAFE_NO_PAD.encode(&raw);
        match s.open(&forged) {
            Err(OpenError::Rejected(_)) => {}
            other => prop_assert!(false, "byte {} ^ {:#04x} gave {:?}", i, xor, other),
        }
    }

    #[test]
    fn any_single_character_change_fails_to_open(
        r in session(),
        compress in any::<bool>(),
        pos in any::<Index>(),
        ch in "[A-Za-z0-9_-]",
    ) {
        let s = sealer(compress);
        let token = s.seal(&r, 0).unwrap().token;
        let i = pos.index(token.len());
        let c = ch.chars().next().unwrap();
        prop_assume!(token.as_bytes()[i] as char != c);
        let mut forged = token.clone();
        forged.replace_range(i..i + 1, &c.to_string());
        match s.open(&forged) {
            Err(OpenError::Rejected(_)) => {}
            other => prop_assert!(false, "char {} -> {:?} gave {:?}", i, c, other),
        }
    }

    #[test]
    fn dropping_or_adding_bytes_fails_to_open(r in session(), cut in any::<Index>(), extra in proptest::collection::vec(any::<u8>(), 1..8)) {
        let s = sealer(false);
        let raw = URL_SAFE_NO_PAD.decode(s.seal(&r, 0).unwrap().token).unwrap();
        let n = cut.index(raw.len());
        prop_assert!(s.open(&URL_SAFE_NO_PAD.encode(&raw[..n])).is_err());
        let mut longer = raw.clone();
        longer.extend_from_slice(&extra);
        prop_assert!(s.open(&URL_SAFE_NO_PAD.encode(&longer)).is_err());
    }

    #[test]
    fn arbitrary_input_never_panics_and_never_opens(input in ".{0,600}") {
        prop_assert!(sealer(false).open(&input).is_err());
    }

    #[test]
    fn arbitrary_bytes_with_a_valid_header_never_open(body in proptest::collection::vec(any::<u8>(), 0..400), flags in 0u8..2) {
        let s = sealer(true);
        // Borrow a real header (version and key id) so the attempt reaches GCM.
        let real = URL_SAFE_NO_PAD.decode(s.seal(&session_core::ExpiryPolicy::default().new_record(SessionId::random(), 1), 0).unwrap().token).unwrap();
        let mut raw = vec![real[0], real[1], flags];
        raw.extend_from_slice(&body);
        let got = s.open(&URL_SAFE_NO_PAD.encode(&raw));
        prop_assert!(
            matches!(got, Err(OpenError::Rejected(TokenError::BadSignature | TokenError::Truncated))),
            "{:?}", got
        );
    }
}
