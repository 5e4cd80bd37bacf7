//! Frozen formats of session-core: the id token (format version 1). A token a deployed node
//! issued must keep verifying after an upgrade, and the bytes a given key signs must not change
//! by accident; `tests/golden/token_v1.txt` holds the known answers (see
//! `session_core::testing::golden` for how to change them on purpose).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::path::{Path, PathBuf};

use session_core::testing::golden::{self, field, hex, unhex};
use session_core::{KeyRing, Secret, SessionId, TOKEN_VERSION, TokenError, TokenSigner};

fn file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// A fixed test secret (never used outside tests).
fn secret_bytes(n: u8) -> Vec<u8> {
    (0..32).map(|i| i * 7 + n).collect()
}

fn secret(n: u8) -> Secret {
    Secret::new(secret_bytes(n)).unwrap()
}

#[test]
fn token_v1_known_answers() {
    let current = KeyRing::new([secret(1)]).unwrap();
    let id = SessionId::from_bytes(std::array::from_fn(|i| i as u8));
    let routing = [0x01, 0x02, 0x03, 0xfe];
    let signer = TokenSigner::new(&current);
    let token = signer.sign(&id, &routing).unwrap();
    let bare = signer.sign(&id, &[]).unwrap();
    let old = TokenSigner::new(&KeyRing::new([secret(2)]).unwrap())
        .sign(&id, &routing)
        .unwrap();
    let text = format!(
        "format=token v{TOKEN_VERSION}\nsecret={}\nid={}\nrouting={}\ntoken={token}\ntoken_no_routing={bare}\nretired_secret={}\nsigned_by_retired_key={old}\n",
        hex(&secret_bytes(1)),
        hex(id.as_bytes()),
        hex(&routing),
        hex(&secret_bytes(2)),
    );
    golden::assert_matches(&file("token_v1.txt"), &text);

    // What the file holds verifies with today's code, and says what it said.
    let g = golden::read(&file("token_v1.txt"));
    let v = signer.verify(field(&g, "token").unwrap()).unwrap();
    assert_eq!(
        v.id.as_bytes().to_vec(),
        unhex(field(&g, "id").unwrap()).unwrap()
    );
    assert_eq!(v.routing, unhex(field(&g, "routing").unwrap()).unwrap());
    assert_eq!(v.key_index, 0);
    let v = signer
        .verify(field(&g, "token_no_routing").unwrap())
        .unwrap();
    assert!(v.routing.is_empty());
    // A rotated ring (new key first, the old one kept for verifying) still accepts the token the
    // retired key signed, and says so.
    let rotated = TokenSigner::new(&KeyRing::new([secret(1), secret(2)]).unwrap());
    let old_token = field(&g, "signed_by_retired_key").unwrap();
    assert_eq!(rotated.verify(old_token).unwrap().key_index, 1);
    assert_eq!(signer.verify(old_token), Err(TokenError::BadSignature));
}
