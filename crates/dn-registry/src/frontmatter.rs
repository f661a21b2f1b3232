/// Splits a markdown file into its YAML front matter (if it starts with a `---` line) and its body.
pub fn strip_front_matter(text: &str) -> (Option<&str>, &str) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some(rest) = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
    else {
        return (None, text);
    };
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end_matches(['\r', '\n']) == "---" {
            return (Some(&rest[..offset]), &rest[offset + line.len()..]);
        }
        offset += line.len();
    }
    // An opening fence with no closing one: not front matter.
    (None, text)
}

#[cfg(test)]
mod tests {
    use super::strip_front_matter;

    #[test]
    fn splits_front_matter() {
        let (fm, body) = strip_front_matter("---\nname: a\n---\n\nYou help.\n");
        assert_eq!(fm, Some("name: a\n"));
        assert_eq!(body.trim(), "You help.");
        assert_eq!(
            strip_front_matter("no front matter"),
            (None, "no front matter")
        );
        assert_eq!(strip_front_matter("---\nunclosed"), (None, "---\nunclosed"));
    }
}
