//! Where a held session's replication metadata lives: packed into the extension bytes of its
//! [`SessionData`](session_core::SessionData) (see `SessionData::extension`), so a session a
//! node holds is its shared record and that record's one data buffer, nothing else
//! (`examples/memory.rs` measures it).
//!
//! The metadata is the write stamp of every live key, the removed keys with the stamps of their
//! removal, the stamp of the last touch, and the placement. Stamps repeat (a session's keys
//! are mostly written together, its first touch and placement carry its creation stamp), so
//! each distinct stamp is written once, in a sorted table, and everything else refers to it by
//! position:
//!
//! ```text
//! varint n, n × stamp          the distinct stamps, sorted (a stamp: time u64 LE, node u16 LE)
//! u16 LE                       the placement's owner
//! varint k, k × u16 LE         its backups
//! refs                         positions in the table of: the touch stamp, the placement's
//!                              stamp, then each live key's stamp in key order. None at all
//!                              when n = 1 (everything has the one stamp), two to a byte
//!                              (low nibble first) when n ≤ 16, else one varint each
//! [varint m, m × (varint length, key, varint)]   removed keys, sorted, with the positions of
//!                              their stamps; absent when there are none
//! ```
//!
//! (varint: LEB128.) A four-key session written in one go takes 14 bytes, against 40 for its
//! key stamps alone at 10 bytes each (and 16 more for a touch and a placement stamp); one
//! whose keys, touch and placement carry up to 16 stamps takes 4 bytes more plus 10 per
//! stamp. The layout never leaves the node (peers exchange [`WireState`](super::WireState)s),
//! so it may change with any build.

use crate::config::NodeId;

use super::{PackedStamp, Placement, Stamp};

/// The metadata of one session, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Meta {
    /// Stamp of the last touch.
    pub(super) touched: Stamp,
    /// Stamps of the data's entries, in the same (key) order.
    pub(super) stamps: Vec<Stamp>,
    /// Removed keys and the stamp of their removal, sorted by key.
    pub(super) tombstones: Vec<(Box<str>, Stamp)>,
}

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// How the refs are written, by the table's length.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Refs {
    None,
    Nibbles,
    Varints,
}

impl Refs {
    fn of(table: usize) -> Self {
        match table {
            0 | 1 => Refs::None,
            2..=16 => Refs::Nibbles,
            _ => Refs::Varints,
        }
    }
}

/// Encodes `meta` and `placement`.
pub(super) fn encode(meta: &Meta, placement: &Placement) -> Vec<u8> {
    let mut table: Vec<Stamp> = Vec::with_capacity(meta.stamps.len() + 2);
    table.push(meta.touched);
    table.push(placement.stamp);
    table.extend_from_slice(&meta.stamps);
    table.extend(meta.tombstones.iter().map(|(_, s)| *s));
    table.sort_unstable();
    table.dedup();
    // Every stamp looked up is in the table, so the search always finds it.
    let at = |s: Stamp| table.binary_search(&s).unwrap_or_default();
    let keys: usize = meta.tombstones.iter().map(|(k, _)| k.len() + 3).sum();
    let mut out = Vec::with_capacity(
        10 * table.len() + 8 + 2 * placement.backups.len() + meta.stamps.len() + keys,
    );
    put_varint(&mut out, table.len());
    for s in &table {
        out.extend_from_slice(&PackedStamp::from(*s).0);
    }
    out.extend_from_slice(&placement.owner.0.to_le_bytes());
    put_varint(&mut out, placement.backups.len());
    for b in &placement.backups {
        out.extend_from_slice(&b.0.to_le_bytes());
    }
    let refs = [meta.touched, placement.stamp]
        .into_iter()
        .chain(meta.stamps.iter().copied())
        .map(at);
    match Refs::of(table.len()) {
        Refs::None => {}
        Refs::Nibbles => {
            let refs: Vec<usize> = refs.collect();
            for pair in refs.chunks(2) {
                let hi = pair.get(1).copied().unwrap_or(0);
                out.push((pair[0] | hi << 4) as u8);
            }
        }
        Refs::Varints => refs.for_each(|r| put_varint(&mut out, r)),
    }
    if !meta.tombstones.is_empty() {
        put_varint(&mut out, meta.tombstones.len());
        for (k, s) in &meta.tombstones {
            put_varint(&mut out, k.len());
            out.extend_from_slice(k.as_bytes());
            put_varint(&mut out, at(*s));
        }
    }
    out
}

/// Reads the layout front to back. Every read is checked (the bytes are this node's own, but
/// a bad read gives `None`, never a panic).
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// The stamp table.
    table: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Option<Self> {
        let mut r = Reader {
            bytes,
            pos: 0,
            table: &[],
        };
        let n = r.varint()?;
        r.table = r.take(n.checked_mul(10)?)?;
        Some(r)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(b)
    }

    fn varint(&mut self) -> Option<usize> {
        let mut v = 0usize;
        for shift in (0..usize::BITS).step_by(7) {
            let b = *self.take(1)?.first()?;
            v |= usize::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn u16(&mut self) -> Option<u16> {
        match *self.take(2)? {
            [a, b] => Some(u16::from_le_bytes([a, b])),
            _ => None,
        }
    }

    /// The stamp at position `i` of the table.
    fn at(&self, i: usize) -> Option<Stamp> {
        let b: [u8; 10] = self.table.get(i * 10..i * 10 + 10)?.try_into().ok()?;
        Some(PackedStamp(b).get())
    }

    /// A stamp referred to by a varint.
    fn stamp(&mut self) -> Option<Stamp> {
        let i = self.varint()?;
        self.at(i)
    }

    /// The placement's owner and backups.
    fn placement(&mut self) -> Option<(NodeId, Vec<NodeId>)> {
        let owner = NodeId(self.u16()?);
        let k = self.varint()?;
        let mut backups = Vec::with_capacity(k.min(self.bytes.len() / 2));
        for _ in 0..k {
            backups.push(NodeId(self.u16()?));
        }
        Some((owner, backups))
    }

    /// The next `count` refs, as stamps, handed to `f` one by one.
    fn refs(&mut self, count: usize, mut f: impl FnMut(Stamp)) -> Option<()> {
        match Refs::of(self.table.len() / 10) {
            Refs::None => {
                let only = self.at(0)?;
                (0..count).for_each(|_| f(only));
            }
            Refs::Nibbles => {
                let bytes = self.take(count.div_ceil(2))?;
                for i in 0..count {
                    let b = bytes.get(i / 2)?;
                    let r = if i % 2 == 0 { b & 0x0f } else { b >> 4 };
                    f(self.at(usize::from(r))?);
                }
            }
            Refs::Varints => {
                for _ in 0..count {
                    f(self.stamp()?);
                }
            }
        }
        Some(())
    }
}

/// The placement alone (what a read needs), without decoding the key stamps.
pub(super) fn decode_placement(bytes: &[u8]) -> Option<Placement> {
    let mut r = Reader::new(bytes)?;
    let (owner, backups) = r.placement()?;
    let mut head = [Stamp::default(); 2];
    let mut i = 0;
    r.refs(2, |s| {
        head[i] = s;
        i += 1;
    })?;
    Some(Placement {
        stamp: head[1],
        owner,
        backups,
    })
}

/// Everything, for a session of `keys` live keys.
pub(super) fn decode(bytes: &[u8], keys: usize) -> Option<(Meta, Placement)> {
    let mut r = Reader::new(bytes)?;
    let (owner, backups) = r.placement()?;
    let mut refs = Vec::with_capacity(keys.min(bytes.len()) + 2);
    r.refs(keys.checked_add(2)?, |s| refs.push(s))?;
    let (touched, stamp) = (refs[0], refs[1]);
    refs.drain(..2);
    let mut tombstones = Vec::new();
    if r.pos < bytes.len() {
        let m = r.varint()?;
        tombstones.reserve(m.min(bytes.len()));
        for _ in 0..m {
            let len = r.varint()?;
            let key = std::str::from_utf8(r.take(len)?).ok()?;
            tombstones.push((Box::from(key), r.stamp()?));
        }
    }
    (r.pos == bytes.len()).then_some((
        Meta {
            touched,
            stamps: refs,
            tombstones,
        },
        Placement {
            stamp,
            owner,
            backups,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(time: u64, node: u16) -> Stamp {
        Stamp { time, node }
    }

    #[test]
    fn round_trips_and_shares_repeated_stamps() {
        let s = st(0x0102_0304_0506_0708, 3);
        let fresh = Meta {
            touched: s,
            stamps: vec![s; 4],
            tombstones: vec![],
        };
        let p = Placement {
            stamp: s,
            owner: NodeId(1),
            backups: vec![],
        };
        let bytes = encode(&fresh, &p);
        assert_eq!(
            bytes.len(),
            14,
            "one stamp for the keys, the touch and the placement"
        );
        assert_eq!(decode(&bytes, 4), Some((fresh, p.clone())));
        assert_eq!(decode_placement(&bytes), Some(p.clone()));

        let few = Meta {
            touched: st(9, 1),
            stamps: vec![st(1, 1), st(2, 2), st(1, 1)],
            tombstones: vec![("x".into(), st(3, 1))],
        };
        let bytes = encode(&few, &p);
        assert_eq!(bytes.len(), 1 + 5 * 10 + 2 + 1 + 3 + 4, "nibble refs");
        assert_eq!(decode(&bytes, 3), Some((few, p.clone())));
        assert_eq!(decode_placement(&bytes), Some(p.clone()));

        let varied = Meta {
            touched: st(u64::MAX, u16::MAX),
            stamps: (0..300).map(|i| st(i, (i % 7) as u16)).collect(),
            tombstones: vec![("gone".into(), st(5, 1)), ("ключ".into(), st(9, 9))],
        };
        let p = Placement {
            stamp: st(0, 0),
            owner: NodeId(7),
            backups: vec![NodeId(2), NodeId(65535)],
        };
        let bytes = encode(&varied, &p);
        let full = Some((varied, p.clone()));
        assert_eq!(decode(&bytes, 300), full);
        assert_eq!(decode_placement(&bytes), Some(p));
        // A wrong key count or cut bytes never decode to the state, nor panic.
        assert_ne!(decode(&bytes, 299), full);
        for cut in 0..bytes.len() {
            assert_ne!(decode(&bytes[..cut], 300), full);
        }
    }
}
