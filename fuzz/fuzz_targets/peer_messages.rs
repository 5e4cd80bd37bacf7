//! Whatever arrives on the cluster port must never panic a node: the postcard decoders of every
//! peer message, the seal that guards them, and the store that merges what decodes.
//!
//! The input is decoded as each message type; whatever decodes must re-encode to a message that
//! decodes back equal, and every state update is applied to a fresh `Store` (as received, and
//! once more with deadlines moved into the future so that adoption and merging happen rather
//! than "expired, ignored"). What the store then holds must survive a full-state round trip and
//! merging its own full state must change nothing. Real encoded messages with bytes overwritten
//! by the input go through the same checks, to reach the merge with nearly valid messages. The
//! input is also fed to the seal, as a request head (sender, time and head tag taken from the
//! input: none may verify), as a sealed request, and as a sealed response.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use backend_instantcopy::store::Store;
use backend_instantcopy::wire::{
    self, FetchRequest, FetchResponse, HelloAck, PATH_FETCH, PATH_PUSH, PeerSeal, Pong,
    PullResponse, PushAck, PushBatch, RequestHeaders, SyncRequest, Update,
};
use backend_instantcopy::internals::{Clock, Placement, SessionState, WireState};
use backend_instantcopy::{NodeId, Stamp};
use libfuzzer_sys::fuzz_target;
use session_core::{
    Delta, ExpiryPolicy, KeyRing, RawJson, Secret, SessionData, SessionId, now_millis,
};

fn seal() -> &'static PeerSeal {
    static S: OnceLock<PeerSeal> = OnceLock::new();
    S.get_or_init(|| {
        let secret = Secret::new(b"fuzzing the instant-copy cluster port".to_vec()).unwrap();
        PeerSeal::new(&KeyRing::new([secret]).unwrap())
    })
}

/// Decodes `bytes` as `T`; what decodes must round-trip through the encoder.
fn decode<T>(bytes: &[u8]) -> Option<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let msg: T = wire::decode(bytes).ok()?;
    let again = wire::encode(&msg).expect("a decoded message encodes");
    assert_eq!(
        wire::decode::<T>(&again).expect("re-encoded message decodes"),
        msg
    );
    Some(msg)
}

/// Applies a state update as the push handler does: the clock observes its stamps, then the
/// store merges it.
fn apply(store: &Store, clock: &Clock, w: &WireState) {
    let stamps = w
        .entries
        .iter()
        .map(|e| e.stamp)
        .chain([w.touched])
        .chain(w.placement.as_ref().map(|p| p.stamp));
    for s in stamps {
        let _ = clock.observe(s);
    }
    let _ = clock.now();
    let _ = store.apply(w);
    // The same update with live deadlines, so that it is adopted or merged, not ignored.
    let now = now_millis();
    let mut live = w.clone();
    live.idle_deadline = now + 60_000;
    live.absolute_deadline = live.absolute_deadline.max(now + 120_000);
    let _ = store.apply(&live);
    let _ = SessionState::from_wire(w);
    check_held(store, w);
}

/// What the store holds for the update's session is internally consistent.
fn check_held(store: &Store, w: &WireState) {
    store.read(&w.id, |s| {
        let full = s.to_wire_full();
        let bytes = wire::encode(&full).expect("a held state encodes");
        assert_eq!(
            wire::decode::<WireState>(&bytes).expect("and decodes"),
            full
        );
        let copy = SessionState::from_wire(&full).expect("a full state is adopted");
        assert_eq!(copy.fingerprint(), s.fingerprint(), "full-state round trip");
        let mut again = s.clone();
        let outcome = again.merge(&full);
        assert!(
            !outcome.changed,
            "merging a copy's own state changes nothing"
        );
        assert_eq!(outcome.conflicts, 0);
        assert!(s.record().idle_deadline <= s.record().absolute_deadline);
        let _ = s.heap_bytes();
    });
}

/// Real messages, encoded: a batch with a full state (three keys, a removed key, a placement
/// with backups), a one-key delta and a destroy; and a fetch answer.
fn real_messages() -> &'static [Vec<u8>] {
    static M: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    M.get_or_init(|| {
        let policy = ExpiryPolicy::default();
        let stamp = Stamp {
            time: 7_000,
            node: 1,
        };
        let mut data = SessionData::new();
        data.insert("user", RawJson::from_value(&"alice").unwrap());
        data.insert("roles", RawJson::from_json(r#"["customer"]"#).unwrap());
        data.insert(
            "cart",
            RawJson::from_json(r#"[{"sku":"A","qty":1}]"#).unwrap(),
        );
        let placement = Placement {
            stamp,
            owner: NodeId(1),
            backups: vec![NodeId(2), NodeId(3)],
        };
        let id = SessionId::from_bytes([9; 16]);
        let mut s = SessionState::create(id, data, &policy, now_millis(), stamp, placement);
        let mut d = Delta::default();
        d.remove("roles");
        d.set("csrf", RawJson::from_value(&"x1y2").unwrap());
        let delta = s.apply_local(
            &d,
            Stamp {
                time: 7_001,
                node: 2,
            },
            now_millis(),
            &policy,
        );
        let full = s.to_wire_full();
        let batch = PushBatch {
            updates: vec![
                Update::State(full.clone()),
                Update::State(delta),
                Update::Destroy {
                    id: SessionId::from_bytes([3; 16]),
                    until: now_millis() + 60_000,
                },
            ],
        };
        vec![
            wire::encode(&batch).unwrap(),
            wire::encode(&FetchResponse::Found(full)).unwrap(),
        ]
    })
}

/// Copies converge whatever the order: a full state adopts the same whatever the order of its
/// entries, and the batch's other updates for that session merge into it to the same state in
/// either order.
fn converges(batch: &PushBatch) {
    let states: Vec<&WireState> = batch
        .updates
        .iter()
        .filter_map(|u| match u {
            Update::State(w) => Some(w),
            Update::Destroy { .. } => None,
        })
        .collect();
    let Some((base, Some(adopted))) = states
        .iter()
        .find(|w| w.full)
        .map(|w| (w, SessionState::from_wire(w)))
    else {
        return;
    };
    let mut reversed = (*base).clone();
    reversed.entries.reverse();
    let other = SessionState::from_wire(&reversed).expect("still full");
    assert_eq!(
        adopted.fingerprint(),
        other.fingerprint(),
        "entry order mattered"
    );
    let same: Vec<&WireState> = states.iter().copied().filter(|w| w.id == base.id).collect();
    let (mut a, mut b) = (adopted.clone(), adopted);
    for w in &same {
        a.merge(w);
    }
    for w in same.iter().rev() {
        b.merge(w);
    }
    assert_eq!(a.fingerprint(), b.fingerprint(), "merge order mattered");
}

/// Every check for one candidate message.
fn check(data: &[u8]) {
    let store = Store::new();
    let clock = Clock::new(NodeId(1), Duration::from_secs(30));

    if let Some(batch) = decode::<PushBatch>(data) {
        converges(&batch);
        for u in &batch.updates {
            match u {
                Update::State(w) => apply(&store, &clock, w),
                Update::Destroy { id, until } => {
                    store.destroy(*id, *until);
                    assert!(store.read(id, |_| ()).is_none(), "destroyed means gone");
                }
            }
        }
        let _ = store.live_tombstones();
        let _ = store.sweep(now_millis());
        let _ = store.sweep(u64::MAX);
        assert_eq!(store.len(), 0, "everything expires at the end of time");
    }
    if let Some(FetchResponse::Found(w)) = decode::<FetchResponse>(data) {
        apply(&store, &clock, &w);
    }
    let _ = decode::<FetchRequest>(data);
    let _ = decode::<Pong>(data);
    let _ = decode::<PushAck>(data);
    let _ = decode::<HelloAck>(data);
    let _ = decode::<SyncRequest>(data);
    let _ = decode::<PullResponse>(data);
    let _ = decode::<()>(data);
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // A real message with bytes overwritten (`[position: u16 LE, value]` triples from the
    // input) and maybe cut short, to reach the merge with messages that are nearly valid.
    if let Some((&which, edits)) = data.split_first() {
        let messages = real_messages();
        let mut msg = messages[usize::from(which) % messages.len()].clone();
        let at = |e: &[u8]| usize::from(u16::from_le_bytes([e[0], e[1]])) % msg.len();
        let triples: Vec<(usize, u8)> = edits
            .chunks_exact(3)
            .take(16)
            .map(|e| (at(e), e[2]))
            .collect();
        for &(i, v) in &triples {
            msg[i] = v;
        }
        if which & 0x80 != 0 {
            if let Some(&(len, _)) = triples.first() {
                msg.truncate(len);
            }
        }
        check(&msg);
    }

    // The seal: headers and a time window from the first bytes, the rest as the body.
    if let [a, b, w, rest @ ..] = data {
        let (from, rest) = rest.split_at((*a as usize % 8).min(rest.len()));
        let (time, rest) = rest.split_at((*b as usize % 24).min(rest.len()));
        // The head tag (`x-ic-auth`) from the input too: 38 characters when well formed.
        let (auth, body) = rest.split_at((*w as usize % 48).min(rest.len()));
        let from = std::str::from_utf8(from).ok();
        let time = std::str::from_utf8(time).ok();
        let auth = std::str::from_utf8(auth).ok();
        let now = time.and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
        for path in [PATH_PUSH, PATH_FETCH] {
            let head = seal().check_head(
                "POST",
                path,
                RequestHeaders {
                    from,
                    to: Some("1"),
                    time,
                    auth,
                },
                body.len() as u64,
                now,
                u64::from(*w),
                NodeId(1),
                false,
            );
            assert!(head.is_err(), "only a head the seal produced verifies");
            let opened = seal().open_request(
                "POST",
                path,
                RequestHeaders {
                    from,
                    to: Some("1"),
                    time,
                    auth,
                },
                body,
                now,
                u64::from(*w),
                NodeId(1),
                false,
            );
            assert!(opened.is_err(), "only what the seal produced opens");
        }
        // Gossip datagrams: garbage never opens, a sealed one opens only unchanged.
        assert!(seal().open_datagram(data, now, u64::MAX).is_err());
        let d = seal().seal_datagram(NodeId(2), now, body);
        assert_eq!(
            seal()
                .open_datagram(&d, now, 0)
                .map(|(f, p)| (f, p == body)),
            Ok((NodeId(2), true))
        );
        let mut bad = d.clone();
        let at = (usize::from(*a) * 256 + usize::from(*b)) % bad.len();
        bad[at] ^= 1 << (*w % 8);
        assert!(
            seal().open_datagram(&bad, now, 0).is_err(),
            "a flipped datagram bit at {at} opened"
        );
        let nonce: [u8; 12] = std::array::from_fn(|i| data.get(i).copied().unwrap_or(0));
        assert!(seal().open_response(&nonce, body).is_err());
        // A real sealed body opens to itself, and with any byte changed does not.
        let r = seal().seal_request("POST", PATH_PUSH, NodeId(2), NodeId(1), now, body);
        let (n, sealed) = (r.nonce, r.body);
        let time = now.to_string();
        let open = |bytes: &[u8]| {
            seal().open_request(
                "POST",
                PATH_PUSH,
                RequestHeaders {
                    from: Some("2"),
                    to: Some("1"),
                    time: Some(&time),
                    auth: Some(&r.auth),
                },
                bytes,
                now,
                0,
                NodeId(1),
                false,
            )
        };
        let (ctx, plain) = open(&sealed).expect("a sealed request opens");
        assert_eq!(plain, body);
        assert_eq!(ctx.nonce, n);
        let i = usize::from(*a) * 256 + usize::from(*b);
        let mut tampered = sealed.clone();
        let at = i % tampered.len();
        tampered[at] ^= 1 << (*w % 8);
        assert!(
            open(&tampered).is_err(),
            "a flipped bit at {at} still opened"
        );
    }
});
