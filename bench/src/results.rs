//! The sections of `bench/RESULTS.md`. Each lies between
//! `<!-- NAME:begin -->` and `<!-- NAME:end -->` and is rewritten whole by
//! the tool that measured it, which the block names; nothing inside the
//! markers is written by hand.

use std::path::{Path, PathBuf};

/// What a new `RESULTS.md` starts with.
pub const INTRO: &str = "# Benchmark results\n\n\
Numbers measured on the project's machines. Every section below is written by the tool named in \
it, with the commit, date, machine and load of its run; rerun everything with \
`./scripts/bench.sh` (as root), or check a change quickly with `./scripts/bench.sh --quick`.\n\n";

/// `bench/RESULTS.md` of the source tree the benchmarks were built from.
pub fn results_md() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("RESULTS.md")
}

/// `text` with section `name` replaced by `body`, or `body` appended as a
/// new section if `text` has none. `tool` says what wrote it.
pub fn splice(text: &str, name: &str, tool: &str, body: &str) -> String {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let block = format!(
        "{begin}\n<!-- written by {tool}; edits inside these markers are overwritten -->\n\n{}\n{end}",
        body.trim_end()
    );
    match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{block}{}", &text[..b], &text[e + end.len()..])
        }
        _ => {
            let sep = if text.is_empty() || text.ends_with("\n\n") {
                ""
            } else if text.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            format!("{text}{sep}{block}\n")
        }
    }
}

/// Rewrites section `name` of the file at `path` (created with [`INTRO`]
/// if missing).
pub fn write_section(path: &Path, name: &str, tool: &str, body: &str) -> std::io::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => INTRO.to_string(),
        Err(e) => return Err(e),
    };
    std::fs::write(path, splice(&old, name, tool, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_replaced_in_place() {
        let text = "# R\n\nintro\n\n<!-- a:begin -->\nold\n<!-- a:end -->\n\ntail\n";
        let out = splice(text, "a", "tool-a", "new\n");
        assert_eq!(
            out,
            "# R\n\nintro\n\n<!-- a:begin -->\n<!-- written by tool-a; edits inside these markers \
             are overwritten -->\n\nnew\n<!-- a:end -->\n\ntail\n"
        );
        assert_eq!(splice(&out, "a", "tool-a", "new\n"), out, "idempotent");
    }

    #[test]
    fn a_missing_section_is_appended_after_a_blank_line() {
        let out = splice("# R\nintro\n", "b", "t", "body");
        assert!(out.starts_with("# R\nintro\n\n<!-- b:begin -->\n"));
        assert!(out.ends_with("body\n<!-- b:end -->\n"));
        // Another section's markers do not count.
        let both = splice(&out, "c", "t", "other");
        assert_eq!(both.matches("<!-- b:begin -->").count(), 1);
        assert!(both.contains("other\n<!-- c:end -->"));
    }
}
