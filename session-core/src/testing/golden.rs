//! Known-answer files ("golden" vectors) that freeze a wire or storage format: a test renders
//! what the current code produces (or reads what an earlier version produced) and compares it
//! with a file committed next to the tests, so any change of format is a failing test and has
//! to be made on purpose.
//!
//! To accept a deliberate change, re-run the test with `GOLDEN_UPDATE=1`: it rewrites the file,
//! and the diff in review shows exactly what changed. A missing file fails the same way a
//! mismatch does (with that instruction), so a test can never pass by having nothing to check.
//!
//! ```no_run
//! use session_core::testing::golden;
//! let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/example.txt");
//! golden::assert_matches(&path, "version=1\n");
//! ```

use std::path::Path;

/// The environment variable that turns checks into rewrites.
pub const UPDATE_VAR: &str = "GOLDEN_UPDATE";

/// True when this run rewrites golden files instead of checking them.
pub fn updating() -> bool {
    std::env::var(UPDATE_VAR).is_ok_and(|v| v == "1")
}

/// Panics unless the file at `path` holds exactly `actual` (with `GOLDEN_UPDATE=1`, writes it).
pub fn assert_matches(path: &Path, actual: &str) {
    if updating() {
        write(path, actual);
        return;
    }
    let expected = read(path);
    assert!(
        expected == actual,
        "{} does not match what the code produces now. If the format change is deliberate, \
         re-run with {UPDATE_VAR}=1 and commit the file.\n--- expected (file)\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

/// The contents of the file at `path`; panics, saying how to create it, when it is missing.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "golden file {} cannot be read ({e}): create it by running this test with {UPDATE_VAR}=1",
            path.display()
        )
    })
}

/// Writes `contents` to `path`, creating its directory.
pub fn write(path: &Path, contents: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    }
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// `name=value` lines, as golden files here are written: the value of `name`, if present.
pub fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of lower- or upper-case hex; `None` for anything else.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_hex_round_trip() {
        let text = "a=1\nlong=x=y\n";
        assert_eq!(field(text, "a"), Some("1"));
        assert_eq!(field(text, "long"), Some("x=y"));
        assert_eq!(field(text, "lon"), None);
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])), Some(vec![0, 1, 254, 255]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn a_mismatch_or_a_missing_file_fails() {
        if updating() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("golden-{}", std::process::id()));
        let path = dir.join("x.txt");
        assert!(std::panic::catch_unwind(|| assert_matches(&path, "v=1\n")).is_err());
        write(&path, "v=1\n");
        assert_matches(&path, "v=1\n");
        assert!(std::panic::catch_unwind(|| assert_matches(&path, "v=2\n")).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
