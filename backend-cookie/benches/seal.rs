//! Seal and open times, and cookie sizes, for 200 B, 1 KiB and 3 KiB sessions.
//!
//! Two kinds of content: realistic JSON session data (user, roles, CSRF token, preferences, a
//! cart) and high-entropy data (random base64url tokens, about as incompressible as JSON text
//! gets), each sealed without and with compression. The size table is printed first; a
//! combination whose cookie would exceed 4096 bytes is reported as TooLarge and not timed.
//!
//! ```sh
//! cargo bench -p backend-cookie --bench seal -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // benches: a panic is a failed run
#![allow(missing_docs)]

use std::hint::black_box;

use backend_cookie::Sealer;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use session_core::{
    ExpiryPolicy, KeyRing, RawJson, SessionData, SessionError, SessionId, SessionRecord,
    fill_random,
};

/// Builds session content of about the given size.
type Generator = fn(usize) -> SessionData;

const SIZES: [(usize, &str); 3] = [(200, "200B"), (1024, "1KiB"), (3072, "3KiB")];

fn random_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    fill_random(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// Realistic session content of about `target` bytes of keys and JSON values.
fn realistic(target: usize) -> SessionData {
    let mut d = SessionData::new();
    let put = |d: &mut SessionData, k: &str, v: serde_json::Value| {
        d.insert(k, RawJson::from_value(&v).unwrap());
    };
    put(&mut d, "user_id", json!(184_467));
    put(&mut d, "csrf", json!(random_token(24)));
    put(&mut d, "roles", json!(["customer", "newsletter"]));
    put(&mut d, "locale", json!("en-GB"));
    put(&mut d, "theme", json!("dark"));
    put(&mut d, "last_seen", json!("2026-03-14T09:26:53Z"));
    if d.payload_len() < target {
        put(&mut d, "email", json!("alice.example@example.com"));
    }
    let mut cart = Vec::new();
    while d.payload_len() < target {
        let i = cart.len();
        cart.push(json!({"sku": format!("SKU-{:05}", 10_000 + i * 37), "qty": i % 3 + 1, "price_cents": 1999 + i * 100}));
        put(&mut d, "cart", json!(cart));
        if d.payload_len() > target {
            // Trim with a note of the right length rather than overshoot by a whole item.
            cart.pop();
            put(&mut d, "cart", json!(cart));
            let room = target.saturating_sub(d.payload_len() + "flash".len() + 2);
            put(&mut d, "flash", json!("x".repeat(room)));
            break;
        }
    }
    d
}

/// High-entropy content of about `target` bytes: random base64url tokens.
fn random(target: usize) -> SessionData {
    let mut d = SessionData::new();
    let mut i = 0;
    while d.payload_len() < target {
        let key = format!("t{i}");
        let room = target - d.payload_len();
        let chars = room.saturating_sub(key.len() + 2).clamp(1, 64);
        let mut v = random_token(chars);
        v.truncate(chars);
        d.insert(key, RawJson::from_value(&v).unwrap());
        i += 1;
    }
    d
}

fn record(data: SessionData) -> SessionRecord {
    let mut r = ExpiryPolicy::default().new_record(SessionId::random(), 1_773_480_413_000);
    r.data = data;
    r
}

fn bench(c: &mut Criterion) {
    let keys = KeyRing::generate();
    let plain = Sealer::new(&keys, "sid");
    let deflate = Sealer::new(&keys, "sid").with_compression(true);
    let kinds: [(&str, Generator); 2] = [("json", realistic), ("random", random)];

    eprintln!("\ncookie sizes (bytes of cookie value; limit 4096):");
    eprintln!(
        "{:<8} {:<7} {:>8} {:>8} {:>10} {:>10}",
        "content", "session", "data", "payload", "plain", "deflate"
    );
    let mut cases = Vec::new();
    for (kind, make) in kinds {
        for (size, label) in SIZES {
            let r = record(make(size));
            let show = |res: &Result<backend_cookie::Sealed, SessionError>| match res {
                Ok(s) => s.token.len().to_string(),
                Err(SessionError::TooLarge { size, .. }) => format!("TooLarge({size})"),
                Err(e) => format!("error: {e}"),
            };
            let p = plain.seal(&r, 0);
            let d = deflate.seal(&r, 0);
            let payload = p
                .as_ref()
                .map(|s| s.payload_len)
                .or_else(|_| d.as_ref().map(|s| s.payload_len))
                .unwrap_or(0);
            eprintln!(
                "{:<8} {:<7} {:>8} {:>8} {:>10} {:>10}",
                kind,
                label,
                r.data.payload_len(),
                payload,
                show(&p),
                show(&d)
            );
            cases.push((kind, label, r, p.is_ok(), d.is_ok()));
        }
    }
    eprintln!();

    let mut seal = c.benchmark_group("seal");
    for (kind, label, r, plain_ok, deflate_ok) in &cases {
        seal.throughput(Throughput::Bytes(r.data.payload_len() as u64));
        for (mode, sealer, ok) in [
            ("plain", &plain, plain_ok),
            ("deflate", &deflate, deflate_ok),
        ] {
            if *ok {
                seal.bench_with_input(
                    BenchmarkId::new(format!("{kind}/{mode}"), label),
                    r,
                    |b, r| b.iter(|| sealer.seal(black_box(r), 0).unwrap()),
                );
            }
        }
    }
    seal.finish();

    let mut open = c.benchmark_group("open");
    for (kind, label, r, plain_ok, deflate_ok) in &cases {
        open.throughput(Throughput::Bytes(r.data.payload_len() as u64));
        for (mode, sealer, ok) in [
            ("plain", &plain, plain_ok),
            ("deflate", &deflate, deflate_ok),
        ] {
            if *ok {
                let token = sealer.seal(r, 0).unwrap().token;
                open.bench_with_input(
                    BenchmarkId::new(format!("{kind}/{mode}"), label),
                    &token,
                    |b, t| b.iter(|| sealer.open(black_box(t)).unwrap()),
                );
            }
        }
    }
    // A forged cookie of the largest size: the cost of rejecting garbage.
    let mut forged = plain
        .seal(&record(realistic(2_900)), 0)
        .unwrap()
        .token
        .into_bytes();
    let i = forged.len() / 2;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    open.bench_function("forged/plain/2.9KiB", |b| {
        b.iter(|| plain.open(black_box(&forged)).unwrap_err())
    });
    open.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
