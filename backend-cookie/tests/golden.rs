//! The sealed-cookie format (version 1), frozen: cookies sealed by an earlier build, kept in
//! `tests/golden/cookie_v1.txt`, must still open with the same key to the same session, plain
//! and deflated. A seal uses a fresh random nonce, so the file holds cookies sealed once (with
//! `GOLDEN_UPDATE=1`) and this test opens them; the session they hold is written out in the
//! file too and compared exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use backend_cookie::format::{FORMAT_VERSION, Payload, Sealer};
use session_core::testing::golden::{self, field, hex};
use session_core::{KeyRing, RawJson, Secret, SessionId, SessionRecord};

fn file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/cookie_v1.txt")
}

/// A fixed test secret (never used outside tests).
fn secret_bytes() -> Vec<u8> {
    (0..32u8)
        .map(|i| i.wrapping_mul(11).wrapping_add(3))
        .collect()
}

fn record() -> SessionRecord {
    let mut data = session_core::SessionData::default();
    data.insert("user", RawJson::from_value("alice").unwrap());
    data.insert("cart:sku-01", RawJson::from_value(&2).unwrap());
    // Long enough to be worth deflating.
    data.insert(
        "note",
        RawJson::from_value(&"a repeated note, ".repeat(20)).unwrap(),
    );
    SessionRecord {
        id: SessionId::from_bytes(std::array::from_fn(|i| 0xa0 + i as u8)),
        data,
        created_at: 1_700_000_000_000,
        last_access: 1_700_000_100_000,
        idle_deadline: 1_700_001_900_000,
        absolute_deadline: 1_700_086_400_000,
        version: 5,
    }
}

/// The session, as the file spells it out.
fn describe(p: &Payload) -> String {
    let r = &p.record;
    let mut s = format!(
        "epoch={}\nid={}\ncreated_at={}\nlast_access={}\nidle_deadline={}\nabsolute_deadline={}\nversion={}\n",
        p.epoch,
        hex(r.id.as_bytes()),
        r.created_at,
        r.last_access,
        r.idle_deadline,
        r.absolute_deadline,
        r.version
    );
    let mut keys: Vec<(&str, String)> = r
        .data
        .iter()
        .map(|(k, v)| (k, v.as_str().to_owned()))
        .collect();
    keys.sort();
    for (k, v) in keys {
        let _ = writeln!(s, "value {k}={v}");
    }
    s
}

#[test]
fn cookie_v1_known_answers_still_open() {
    let ring = KeyRing::new([Secret::new(secret_bytes()).unwrap()]).unwrap();
    let plain = Sealer::new(&ring, "sid");
    let deflating = Sealer::new(&ring, "sid").with_compression(true);
    let expected = Payload {
        record: record(),
        epoch: 7,
    };
    let header = format!(
        "format=cookie v{FORMAT_VERSION}\ncookie_name=sid\nsecret={}\n{}",
        hex(&secret_bytes()),
        describe(&expected)
    );
    if golden::updating() {
        let a = plain.seal(&expected.record, expected.epoch).unwrap().token;
        let b = deflating
            .seal(&expected.record, expected.epoch)
            .unwrap()
            .token;
        golden::write(
            &file(),
            &format!("{header}cookie={a}\ncookie_deflated={b}\n"),
        );
    }
    let g = golden::read(&file());
    assert!(
        g.starts_with(&header),
        "the session described in {} is not the one this test seals: re-create the file with \
         GOLDEN_UPDATE=1 only if the change is deliberate\n{g}",
        file().display()
    );
    for (name, compressed) in [("cookie", false), ("cookie_deflated", true)] {
        let token = field(&g, name).unwrap();
        // Either sealer opens either cookie: the flag travels in the header.
        let opened = plain.open(token).unwrap();
        assert_eq!(opened.compressed, compressed, "{name}");
        assert_eq!(opened.key_index, 0);
        assert_eq!(describe(&opened.payload), describe(&expected), "{name}");
        assert_eq!(opened.payload, expected, "{name}");
        assert_eq!(deflating.open(token).unwrap().payload, expected);
        // Bound to its cookie name and key.
        assert!(Sealer::new(&ring, "other").open(token).is_err());
        assert!(
            Sealer::new(&KeyRing::generate(), "sid")
                .open(token)
                .is_err()
        );
    }
    assert!(
        field(&g, "cookie_deflated").unwrap().len() < field(&g, "cookie").unwrap().len(),
        "the deflated cookie is the shorter"
    );
}
