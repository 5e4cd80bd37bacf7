//! Token parsing must never panic, whatever the client sends, and must only accept what the
//! signer produced.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use session_core::{KeyRing, Secret, SessionId, TokenSigner};

fn signer() -> &'static TokenSigner {
    static S: OnceLock<TokenSigner> = OnceLock::new();
    S.get_or_init(|| {
        let secret = Secret::new(b"fuzzing secret, at least thirty-two bytes".to_vec()).unwrap();
        TokenSigner::new(&KeyRing::new([secret]).unwrap())
    })
}

fuzz_target!(|data: &[u8]| {
    let s = signer();
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(v) = s.verify(text) {
            // Anything accepted must be exactly what the signer would produce for it.
            assert_eq!(s.sign(&v.id, &v.routing).unwrap(), text);
        }
        let _ = SessionId::parse(text);
    }
});
