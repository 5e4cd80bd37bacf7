//! Opening sealed cookies must never panic, whatever the client sends; nothing but a cookie the
//! sealer produced may open; the post-authentication decoder must survive any bytes; and any
//! session content must survive a seal/open round trip.
#![no_main]

use std::sync::OnceLock;

use backend_cookie::{Sealer, decode_payload};
use libfuzzer_sys::fuzz_target;
use session_core::{ExpiryPolicy, KeyRing, RawJson, Secret, SessionId, SessionRecord};

fn keys() -> &'static KeyRing {
    static K: OnceLock<KeyRing> = OnceLock::new();
    K.get_or_init(|| {
        let secret = Secret::new(b"fuzzing secret for the sealed cookie".to_vec()).unwrap();
        KeyRing::new([secret]).unwrap()
    })
}

fn sealers() -> &'static (Sealer, Sealer) {
    static S: OnceLock<(Sealer, Sealer)> = OnceLock::new();
    S.get_or_init(|| {
        (
            Sealer::new(keys(), "sid"),
            Sealer::new(keys(), "sid").with_compression(true),
        )
    })
}

/// A session whose keys and values come from the input (values as JSON strings).
fn record_from(bytes: &[u8]) -> SessionRecord {
    let mut r =
        ExpiryPolicy::default().new_record(SessionId::from_bytes([7; 16]), 1_700_000_000_000);
    for chunk in bytes.chunks(24).take(64) {
        let (k, v) = chunk.split_at(chunk.len().min(4));
        let value = RawJson::from_value(&String::from_utf8_lossy(v)).unwrap();
        r.data
            .insert(String::from_utf8_lossy(k).into_owned(), value);
    }
    r
}

fuzz_target!(|data: &[u8]| {
    let (plain, deflate) = sealers();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        // Arbitrary text as a cookie: never a panic, never a session.
        0 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                assert!(plain.open(text).is_err());
                assert!(deflate.open(text).is_err());
            }
        }
        // The decoder behind authentication, on arbitrary bytes, raw or "deflated".
        1 => {
            if let Ok(p) = decode_payload(rest, false) {
                // Whatever decodes must seal and open back to itself.
                if let Ok(s) = plain.seal(&p.record, p.epoch) {
                    assert_eq!(plain.open(&s.token).unwrap().payload, p);
                }
            }
            let _ = decode_payload(rest, true);
        }
        // Any content round-trips, compressed or not (or is refused as too large).
        2 => {
            let r = record_from(rest);
            for s in [plain, deflate] {
                if let Ok(sealed) = s.seal(&r, 3) {
                    assert!(sealed.token.len() <= 4096);
                    let o = s.open(&sealed.token).unwrap();
                    assert_eq!(o.payload.record, r);
                    assert_eq!(o.payload.epoch, 3);
                }
            }
        }
        // A real cookie with the input XOR-ed over it opens only if nothing changed.
        _ => {
            let r = record_from(b"user=alice role=admin   cart=[1,2,3]");
            let token = deflate.seal(&r, 0).unwrap().token;
            let mut bytes = token.clone().into_bytes();
            for (b, m) in bytes.iter_mut().zip(rest) {
                *b ^= m;
            }
            if let Ok(text) = String::from_utf8(bytes) {
                if text != token {
                    assert!(deflate.open(&text).is_err(), "a modified cookie opened");
                }
            }
        }
    }
});
