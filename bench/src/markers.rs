//! Generated blocks in hand-written Markdown: the text between a begin and an end marker line,
//! replaced by a tool's output while everything around it stays as written (the README's
//! Table 1 and simulation sections).
//!
//! Owns the one splicing rule both generators use: each marker exactly once, begin first.

/// `doc` with the text between `begin` and `end` replaced by `generated` (the markers stay);
/// `None` when a marker is missing, repeated or out of order.
pub fn splice_between(doc: &str, begin: &str, end: &str, generated: &str) -> Option<String> {
    let find = |m: &str| {
        let mut at = doc.match_indices(m).map(|(i, _)| i);
        match (at.next(), at.next()) {
            (Some(i), None) => Some(i),
            _ => None,
        }
    };
    let (b, e) = (find(begin)?, find(end)?);
    if e < b {
        return None;
    }
    let body_start = b + begin.len();
    let mut out = String::with_capacity(doc.len() + generated.len());
    out.push_str(&doc[..body_start]);
    out.push_str("\n\n");
    out.push_str(generated.trim_end());
    out.push_str("\n\n");
    out.push_str(&doc[e..]);
    Some(out)
}

/// The text of `doc` between `begin` and `end` (trimmed), if it has such a block.
pub fn block_between<'a>(doc: &'a str, begin: &str, end: &str) -> Option<&'a str> {
    let b = doc.find(begin)? + begin.len();
    let e = doc[b..].find(end)? + b;
    Some(doc[b..e].trim())
}
