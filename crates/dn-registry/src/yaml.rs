//! YAML metadata (`dataset.yaml`, `capability.yaml`, agents' front matter) read with bounds: a YAML parser
//! given deeply nested input is slow out of all proportion to its size (100k levels in 200 KB took 38 s),
//! so a file over [`MAX_YAML_BYTES`] or nested deeper than [`MAX_YAML_DEPTH`] is refused by a linear scan
//! before it is parsed.

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The largest metadata file (or front matter) accepted.
pub const MAX_YAML_BYTES: usize = 256 << 10;
/// The deepest nesting accepted (flow brackets plus block indentation levels).
pub const MAX_YAML_DEPTH: usize = 64;

/// Parses `text` (the file `path`) after checking its size and nesting.
pub fn parse_yaml<T: DeserializeOwned>(text: &str, path: &str, what: &str) -> Result<T> {
    if text.len() > MAX_YAML_BYTES {
        return Err(Error::invalid(
            path,
            format!("{what} is {} bytes (at most {MAX_YAML_BYTES})", text.len()),
        ));
    }
    let depth = nesting_depth(text);
    if depth > MAX_YAML_DEPTH {
        return Err(Error::invalid(
            path,
            format!("{what} nests {depth} levels deep (at most {MAX_YAML_DEPTH})"),
        ));
    }
    serde_yaml::from_str(text).map_err(|e| Error::invalid(path, format!("invalid {what}: {e}")))
}

/// An upper bound of the nesting: per line, the indentation levels (a distinct indentation width each)
/// and the `- ` sequence markers before the content, plus the flow brackets open at that point (outside
/// quotes and comments).
fn nesting_depth(text: &str) -> usize {
    let mut deepest = 0;
    let mut flow = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    for line in text.lines() {
        let content = line.trim_start_matches([' ', '\t']);
        let indent = line.len() - content.len();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        while indents.last().is_some_and(|&i| i >= indent) && indents.len() > 1 {
            indents.pop();
        }
        if indents.last() != Some(&indent) {
            indents.push(indent);
        }
        let mut rest = content;
        let mut dashes = 0;
        while let Some(r) = rest.strip_prefix("- ").or_else(|| rest.strip_prefix("-\t")) {
            dashes += 1;
            rest = r.trim_start();
        }
        let mut quote: Option<char> = None;
        for c in rest.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') => break,
                (None, '[' | '{') => {
                    flow += 1;
                    deepest = deepest.max(indents.len() + dashes + flow);
                }
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
        }
        deepest = deepest.max(indents.len() + dashes + flow);
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_or_large_yaml_is_refused_by_a_linear_scan() {
        let flow = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let started = std::time::Instant::now();
        let e = parse_yaml::<serde_yaml::Value>(&flow, "dataset.yaml", "YAML")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("dataset.yaml") && e.contains("levels deep"),
            "{e}"
        );
        // Small enough for the size limit: refused for their depth alone.
        let deep = |text: &str| {
            assert!(text.len() < MAX_YAML_BYTES);
            let e = parse_yaml::<serde_yaml::Value>(text, "x.yaml", "YAML").unwrap_err();
            assert!(e.to_string().contains("levels deep"), "{e}");
        };
        deep(
            &(0..100)
                .map(|i| format!("{}- \n", " ".repeat(i)))
                .collect::<String>(),
        );
        deep(&format!("{}x\n", "- ".repeat(1000)));
        let big = format!("a: '{}'\n", "x".repeat(MAX_YAML_BYTES));
        assert!(
            parse_yaml::<serde_yaml::Value>(&big, "x.yaml", "YAML")
                .unwrap_err()
                .to_string()
                .contains("bytes")
        );
        // Milliseconds of work; the parser this guards against took 38 s.
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        // Real metadata passes, brackets inside quotes and comments included.
        let ok = "name: d\nversion: 0.1.0\nformat: jsonl\nsplits:\n  train: a.jsonl  # [not [flow\n\
                  data_schema:\n  fields: [{name: \"a[\", type: string}]\n";
        parse_yaml::<serde_yaml::Value>(ok, "dataset.yaml", "YAML").unwrap();
    }
}
