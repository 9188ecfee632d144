//! Textual edits of the root `Cargo.toml` that keep its layout and comments.

use anyhow::{Context, Result, bail};

/// Add `member` to `[workspace] members`, keeping the list's order: it goes
/// before the first entry that sorts after it (or last). Returns `None` if it
/// is already a member.
pub fn add_workspace_member(manifest: &str, member: &str) -> Result<Option<String>> {
    let (open, close) = members_array(manifest)?;
    let body = &manifest[open + 1..close];
    let entries = string_entries(body);
    if entries.iter().any(|entry| entry.value == member) {
        return Ok(None);
    }
    let quoted = format!("\"{member}\"");
    let updated = if body.contains('\n') {
        insert_multiline(manifest, open, close, &entries, &quoted, member)
    } else {
        // `members = ["a", "b"]`: rebuild the one-line list.
        let mut values: Vec<String> = entries.iter().map(|e| e.value.clone()).collect();
        let position = values
            .iter()
            .position(|value| value.as_str() > member)
            .unwrap_or(values.len());
        values.insert(position, member.to_string());
        let list: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
        format!(
            "{}{}{}",
            &manifest[..open + 1],
            list.join(", "),
            &manifest[close..]
        )
    };
    // Make sure we produced valid TOML with the member in it.
    let parsed: toml::Table = toml::from_str(&updated)
        .context("internal error: editing Cargo.toml produced invalid TOML")?;
    let ok = parsed
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .is_some_and(|m| m.iter().any(|v| v.as_str() == Some(member)));
    if !ok {
        bail!("internal error: {member:?} missing from workspace.members after editing");
    }
    Ok(Some(updated))
}

fn insert_multiline(
    manifest: &str,
    open: usize,
    close: usize,
    entries: &[Entry],
    quoted: &str,
    member: &str,
) -> String {
    let indent = entries
        .first()
        .map(|entry| {
            let line_start = manifest[..open + 1 + entry.start]
                .rfind('\n')
                .map_or(0, |i| i + 1);
            manifest[line_start..open + 1 + entry.start].to_string()
        })
        .filter(|prefix| prefix.chars().all(|c| c == ' ' || c == '\t'))
        .unwrap_or_else(|| "    ".to_string());
    if let Some(next) = entries.iter().find(|entry| entry.value.as_str() > member) {
        // Insert a new line right before the line holding `next`.
        let absolute = open + 1 + next.start;
        let line_start = manifest[..absolute].rfind('\n').map_or(0, |i| i + 1);
        return format!(
            "{}{indent}{quoted},\n{}",
            &manifest[..line_start],
            &manifest[line_start..]
        );
    }
    match entries.last() {
        Some(last) => {
            // Insert after the last entry's line, adding its comma if needed.
            let after_value = open + 1 + last.end;
            let rest = &manifest[after_value..close];
            let has_comma = rest.trim_start().starts_with(',');
            let line_end = manifest[after_value..]
                .find('\n')
                .map_or(manifest.len(), |i| after_value + i);
            let (head, tail) = if has_comma {
                (manifest[..line_end].to_string(), &manifest[line_end..])
            } else {
                (
                    format!(
                        "{},{}",
                        &manifest[..after_value],
                        &manifest[after_value..line_end]
                    ),
                    &manifest[line_end..],
                )
            };
            if line_end >= close {
                // Closing bracket on the same line as the last entry.
                let bracket = head.rfind(']').unwrap_or(head.len());
                format!(
                    "{}\n{indent}{quoted},\n{}{}",
                    head[..bracket].trim_end(),
                    &head[bracket..],
                    tail
                )
            } else {
                format!("{head}\n{indent}{quoted},{tail}")
            }
        }
        None => {
            // Empty multi-line list: put the entry right after `[`.
            format!(
                "{}\n{indent}{quoted},{}",
                &manifest[..open + 1],
                &manifest[open + 1..]
            )
        }
    }
}

/// Byte offsets of the `[` and `]` of `members = [...]` inside `[workspace]`.
fn members_array(manifest: &str) -> Result<(usize, usize)> {
    let mut offset = 0;
    let mut in_workspace = false;
    for line in manifest.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') && !trimmed.starts_with("[[") {
            in_workspace = trimmed.starts_with("[workspace]");
        }
        if in_workspace
            && let Some(rest) = trimmed.strip_prefix("members")
            && let Some(rest) = rest.trim_start().strip_prefix('=')
            && rest.trim_start().starts_with('[')
        {
            let open = offset + line.find('[').context("unreachable: no '['")?;
            let close = matching_bracket(manifest, open)
                .context("Cargo.toml: the `members = [` list is not closed")?;
            return Ok((open, close));
        }
        offset += line.len();
    }
    bail!("Cargo.toml has no `members = [...]` list in its [workspace] section")
}

/// The `]` that closes the `[` at `open`, skipping strings and comments.
fn matching_bracket(text: &str, open: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut index = open + 1;
    let mut depth = 1;
    while index < bytes.len() {
        match bytes[index] {
            b'"' | b'\'' => {
                let quote = bytes[index];
                index += 1;
                while index < bytes.len() && bytes[index] != quote {
                    if bytes[index] == b'\\' && quote == b'"' {
                        index += 1;
                    }
                    index += 1;
                }
            }
            b'#' => {
                while index < bytes.len() && bytes[index] != b'\n' {
                    index += 1;
                }
            }
            b'[' => depth += 1,
            b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(index);
                }
            }
            _ => {}
        }
        index += 1;
    }
    None
}

struct Entry {
    value: String,
    /// Offsets within the array body of the opening quote and just past the closing one.
    start: usize,
    end: usize,
}

/// The quoted strings in an array body (comments skipped).
fn string_entries(body: &str) -> Vec<Entry> {
    let bytes = body.as_bytes();
    let mut entries = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'#' => {
                while index < bytes.len() && bytes[index] != b'\n' {
                    index += 1;
                }
            }
            quote @ (b'"' | b'\'') => {
                let start = index;
                index += 1;
                let value_start = index;
                while index < bytes.len() && bytes[index] != quote {
                    if bytes[index] == b'\\' && quote == b'"' {
                        index += 1;
                    }
                    index += 1;
                }
                let value_end = index.min(bytes.len());
                entries.push(Entry {
                    value: body[value_start..value_end].to_string(),
                    start,
                    end: (index + 1).min(bytes.len()),
                });
            }
            _ => {}
        }
        index += 1;
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = r#"[workspace]
resolver = "3"
members = [
    "crates/kit",
    # the platform's own crates
    "crates/populator",
    "template/service",
    "xtask", # tooling
]

[workspace.dependencies]
kit = { path = "crates/kit" }
"#;

    #[test]
    fn inserts_in_sorted_position_keeping_comments() {
        let updated = add_workspace_member(ROOT, "services/mail")
            .unwrap()
            .unwrap();
        assert_eq!(
            updated,
            r#"[workspace]
resolver = "3"
members = [
    "crates/kit",
    # the platform's own crates
    "crates/populator",
    "services/mail",
    "template/service",
    "xtask", # tooling
]

[workspace.dependencies]
kit = { path = "crates/kit" }
"#
        );
        let again = add_workspace_member(&updated, "services/auth")
            .unwrap()
            .unwrap();
        assert!(again.contains("    \"services/auth\",\n    \"services/mail\",\n"));
    }

    #[test]
    fn already_present_is_a_no_op() {
        assert!(add_workspace_member(ROOT, "xtask").unwrap().is_none());
    }

    #[test]
    fn appends_at_the_end_adding_a_missing_comma() {
        let manifest = "[workspace]\nmembers = [\n  \"a\",\n  \"b\"\n]\n";
        let updated = add_workspace_member(manifest, "z").unwrap().unwrap();
        assert_eq!(
            updated,
            "[workspace]\nmembers = [\n  \"a\",\n  \"b\",\n  \"z\",\n]\n"
        );
        let manifest = "[workspace]\nmembers = [\n  \"a\",\n  \"b\" ]\n";
        let updated = add_workspace_member(manifest, "z").unwrap().unwrap();
        assert_eq!(
            updated,
            "[workspace]\nmembers = [\n  \"a\",\n  \"b\",\n  \"z\",\n]\n"
        );
    }

    #[test]
    fn handles_one_line_and_empty_lists() {
        let manifest = "[workspace]\nmembers = [\"xtask\", \"crates/kit\"]\n";
        let updated = add_workspace_member(manifest, "services/a")
            .unwrap()
            .unwrap();
        assert_eq!(
            updated,
            "[workspace]\nmembers = [\"services/a\", \"xtask\", \"crates/kit\"]\n"
        );
        let manifest = "[workspace]\nmembers = []\n";
        let updated = add_workspace_member(manifest, "services/a")
            .unwrap()
            .unwrap();
        assert_eq!(updated, "[workspace]\nmembers = [\"services/a\"]\n");
    }

    #[test]
    fn ignores_members_outside_the_workspace_section() {
        let manifest = "[package]\nname = \"x\"\n[package.metadata]\nmembers = [\"no\"]\n\n[workspace]\nmembers = [\n    \"a\",\n]\n";
        let updated = add_workspace_member(manifest, "b").unwrap().unwrap();
        assert!(updated.ends_with("members = [\n    \"a\",\n    \"b\",\n]\n"));
        assert!(updated.contains("members = [\"no\"]"));
    }

    #[test]
    fn missing_members_is_a_clear_error() {
        let error = add_workspace_member("[package]\nname = \"x\"\n", "a").unwrap_err();
        assert!(
            error.to_string().contains("no `members = [...]`"),
            "{error}"
        );
        let error = add_workspace_member("[workspace]\nmembers = [\n \"a\",\n", "b").unwrap_err();
        assert!(error.to_string().contains("not closed"), "{error}");
    }
}
