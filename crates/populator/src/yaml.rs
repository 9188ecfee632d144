//! serde-saphyr settings and the translation of its errors.

use std::borrow::Cow;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_saphyr::{DuplicateKeyPolicy, MessageFormatter, Options, UserMessageFormatter};

use crate::Error;

/// Parser settings for seed data: strict where a typo would otherwise pass silently, bounded
/// where a hostile or runaway file could blow up (aliases, nesting, sizes).
fn options() -> Options {
    let mut options = Options::default();
    // `id: a` followed by `id: b` is a mistake, never an override.
    options.duplicate_keys = DuplicateKeyPolicy::Error;
    // Only `true` / `false` are booleans; `yes`, `on`, … are rejected for bool fields.
    options.strict_booleans = true;
    // `!ago created_at: 3d` (tag on the key instead of the value) is an error, not ignored.
    options.reject_tagged_field_names = true;
    // Errors are reported as `file:line: reason`; no source snippets.
    options.with_snippet = false;
    // Anchors and aliases are fine for sharing a block or two, not for expansion bombs.
    options.alias_limits = serde_saphyr::alias_limits! {
        max_total_replayed_events: 100_000,
        max_replay_stack_depth: 16,
        max_alias_expansions_per_anchor: 1_000,
    };
    options.budget = serde_saphyr::budget! {
        max_depth: 32,
        max_aliases: 10_000,
    };
    options
}

/// Parses one seed file. An empty document (nothing, only comments, or `~`) gives `D::default()`.
pub(crate) fn parse<D: DeserializeOwned + Default>(path: &Path, text: &str) -> Result<D, Error> {
    serde_saphyr::from_str_with_options::<Option<D>>(text, options())
        .map(Option::unwrap_or_default)
        .map_err(|err| error(path, &err))
}

/// Translates a serde-saphyr error into ours: the line of its primary location (for aliases,
/// where the alias is used) and a message without location suffix.
fn error(path: &Path, err: &serde_saphyr::Error) -> Error {
    let line = err.location().map_or(0, |location| location.line());
    let mut inner = err;
    let mut defined_at = None;
    loop {
        match inner {
            serde_saphyr::Error::WithSnippet { error, .. } => inner = error,
            serde_saphyr::Error::AliasError {
                error, locations, ..
            } => {
                let defined = locations.defined_location.line();
                if defined != 0 && defined != line {
                    defined_at = Some(defined);
                }
                inner = error;
            }
            _ => break,
        }
    }
    let mut reason = sanitize(&message(inner));
    if let Some(defined) = defined_at {
        reason.push_str(&format!(" (in the value anchored at line {defined})"));
    }
    Error::at(path, usize::try_from(line).unwrap_or(0), reason)
}

fn message(err: &serde_saphyr::Error) -> Cow<'_, str> {
    match err {
        serde_saphyr::Error::SerdeUnknownField {
            field, expected, ..
        } => format!("unknown field `{field}`, {}", one_of(expected, "fields")).into(),
        serde_saphyr::Error::SerdeUnknownVariant {
            variant, expected, ..
        } => format!(
            "unknown variant `{variant}`, {}",
            one_of(expected, "variants")
        )
        .into(),
        serde_saphyr::Error::InvalidScalar { ty, .. } => {
            format!("invalid value, expected {ty}").into()
        }
        serde_saphyr::Error::Unexpected { expected, .. } => match *expected {
            "string scalar" => "expected a single value, not a list or mapping".into(),
            "sequence start" => "expected a list (`- item` lines or `[a, b]`)".into(),
            "mapping start" => "expected a mapping (`key: value` lines or `{k: v}`)".into(),
            other => format!("expected {other}").into(),
        },
        _ => UserMessageFormatter.format_message(err),
    }
}

/// serde's own wording: "expected `a`", "expected `a` or `b`", "expected one of `a`, `b`, `c`".
fn one_of(names: &[&str], what: &str) -> String {
    match names {
        [] => format!("there are no {what}"),
        [one] => format!("expected `{one}`"),
        [a, b] => format!("expected `{a}` or `{b}`"),
        _ => {
            let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
            format!("expected one of {}", quoted.join(", "))
        }
    }
}

/// Keeps a message on one line: control characters (e.g. from a YAML scalar) are escaped.
fn sanitize(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
