//! `benches/RESULTS.md`: one file, one section per command (`compare-peers`, `replication`,
//! `soak`), each replaced in place by the command's latest run so the file always holds the
//! newest numbers of everything.

use std::path::{Path, PathBuf};

use crate::error::{Context, Result};

/// The default results file: `benches/RESULTS.md` at the workspace root.
pub fn default_path() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .parent()
        .unwrap_or(crate_dir)
        .join("benches")
        .join("RESULTS.md")
}

const HEADER: &str = "# Benchmark results\n\nWritten by the `bench` crate (`cargo run --release -p bench -- <command>`); each section is replaced by its command's latest run.\n";

/// Replaces (or appends) section `name` of `text` with `body`.
pub fn replace_section(text: &str, name: &str, body: &str) -> String {
    let begin = format!("<!-- bench:{name} -->");
    let end = format!("<!-- /bench:{name} -->");
    let block = format!("{begin}\n{}\n{end}", body.trim_end());
    match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{block}{}", &text[..b], &text[e + end.len()..])
        }
        _ => {
            let base = if text.trim().is_empty() { HEADER } else { text };
            format!("{}\n\n{block}\n", base.trim_end())
        }
    }
}

/// Writes section `name` of the results file at `path`.
pub fn update(path: &Path, name: &str, body: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).context(format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, replace_section(&old, name, body))
        .context(format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_appended_then_replaced() {
        let a = replace_section("", "compare", "table 1");
        assert!(a.starts_with("# Benchmark results"));
        assert!(a.contains("<!-- bench:compare -->\ntable 1\n<!-- /bench:compare -->"));
        let b = replace_section(&a, "soak", "soak 1");
        let c = replace_section(&b, "compare", "table 2\n");
        assert!(c.contains("table 2") && !c.contains("table 1"), "{c}");
        assert!(c.contains("soak 1"));
        assert!(c.find("table 2") < c.find("soak 1"), "order kept: {c}");
        assert_eq!(c.matches("<!-- bench:compare -->").count(), 1);
    }
}
