//! The YAML layer's limits and errors in our words: `file:line:column`, the limit that was
//! hit, and every quoted value kept short.

use super::ConfigError;
use super::shape::{Want, key_at, shape_message};

/// YAML processing limits. Generous for any real probe file, small enough that a hostile one
/// fails fast; README "Security" quotes them and every breach names the one that was hit.
pub(super) const MAX_ALIASES: usize = 1_000;
pub(super) const MAX_ANCHORS: usize = 1_000;
pub(super) const MAX_DEPTH: usize = 64;
pub(super) const MAX_NODES: usize = 500_000;
pub(super) const MAX_EVENTS: usize = 2_000_000;
pub(super) const MAX_SCALAR_BYTES: usize = 16 * 1024 * 1024;
pub(super) const MAX_REPLAYED_EVENTS: usize = 50_000;
pub(super) const MAX_EXPANSIONS_PER_ANCHOR: usize = 1_000;

pub(super) fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_aliases = MAX_ALIASES;
    budget.max_anchors = MAX_ANCHORS;
    budget.max_depth = MAX_DEPTH;
    budget.max_nodes = MAX_NODES;
    budget.max_events = MAX_EVENTS;
    budget.max_total_scalar_bytes = MAX_SCALAR_BYTES;
    budget.max_documents = 1;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    // An alias bomb expands through replays: cap them well below what hurts.
    options.alias_limits.max_total_replayed_events = MAX_REPLAYED_EVENTS;
    options.alias_limits.max_alias_expansions_per_anchor = MAX_EXPANSIONS_PER_ANCHOR;
    options
}

/// The message for nesting beyond [`MAX_DEPTH`], whichever layer notices it first (the
/// budget, or the scanner's own "recursion limit exceeded" on very deep flow collections).
pub(super) fn depth_message() -> String {
    format!(
        "nesting deeper than {MAX_DEPTH} levels (recursion limit exceeded); a probe file may nest lists and mappings at most {MAX_DEPTH} levels deep"
    )
}

/// Every budget breach as one sentence that names the limit hit. Alias and size breaches keep
/// the words "too large or too deeply aliased", which scripts and tests look for.
pub(super) fn budget_message(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    const BIG: &str = "the document is too large or too deeply aliased";
    match breach {
        B::Depth { .. } => depth_message(),
        B::Aliases { .. } => format!(
            "{BIG}: more than {MAX_ALIASES} aliases (*name); a probe file may use at most {MAX_ALIASES}"
        ),
        B::Anchors { .. } => format!(
            "{BIG}: more than {MAX_ANCHORS} anchors (&name); a probe file may define at most {MAX_ANCHORS}"
        ),
        B::AliasAnchorRatio { aliases, anchors } => format!(
            "{BIG}: {aliases} aliases for {anchors} anchors; a probe file may not reuse anchors that heavily"
        ),
        B::Nodes { .. } => format!(
            "{BIG}: more than {MAX_NODES} values, lists and mappings; a probe file may hold at most {MAX_NODES}"
        ),
        B::Events { .. } => format!(
            "{BIG}: more than {MAX_EVENTS} YAML events; a probe file may produce at most {MAX_EVENTS}"
        ),
        B::ScalarBytes { .. } => format!(
            "{BIG}: more than {} MiB of text in values; a probe file may hold at most {} MiB",
            MAX_SCALAR_BYTES >> 20,
            MAX_SCALAR_BYTES >> 20
        ),
        B::Documents { .. } => {
            "more than one YAML document ('---'); a probe file is a single document".to_string()
        }
        other => {
            // Limits routewatch leaves at the crate's defaults; name them without a Debug dump.
            let name = format!("{other:?}");
            let name = name
                .split(|c: char| !c.is_ascii_alphanumeric())
                .next()
                .unwrap_or("")
                .to_string();
            format!("{BIG}: a YAML processing limit was exceeded ({name})")
        }
    }
}

pub(super) fn yaml_error(file: &str, text: &str, e: &serde_saphyr::Error) -> ConfigError {
    use serde_saphyr::Error as E;
    let at = e
        .location()
        .map(|l| (l.line(), l.column()))
        .filter(|&(l, _)| l > 0);
    // Byte offset of the error in `text`, for naming the field and echoing the bad value.
    let offset = e.location().and_then(|l| {
        l.span()
            .byte_offset()
            .and_then(|o| usize::try_from(o).ok())
            .filter(|&o| o <= text.len() && text.is_char_boundary(o))
            .or_else(|| at.and_then(|(line, col)| offset_of(text, line, col)))
    });
    let mut inner = e.without_snippet();
    while let E::AliasError { error, .. } = inner {
        inner = error.without_snippet();
    }
    let shape = |want: Want| match offset {
        Some(o) => shape_message(text, o, want),
        None => format!("expected {}", want.accepted()),
    };
    let message = match inner {
        E::Budget { breach, .. } => budget_message(breach),
        E::AliasReplayLimitExceeded { .. } => format!(
            "the document is too large or too deeply aliased: aliases expand to more than {MAX_REPLAYED_EVENTS} replayed events (a \"billion laughs\"); a probe file may expand at most {MAX_REPLAYED_EVENTS}"
        ),
        E::AliasExpansionLimitExceeded { .. } => format!(
            "the document is too large or too deeply aliased: one anchor is used more than {MAX_EXPANSIONS_PER_ANCHOR} times; a probe file may expand each anchor at most {MAX_EXPANSIONS_PER_ANCHOR} times"
        ),
        E::AliasReplayStackDepthExceeded { max_depth, .. } => format!(
            "the document is too large or too deeply aliased: aliases nested more than {max_depth} deep; a probe file may nest aliases at most {max_depth} deep"
        ),
        E::AliasReplayCounterOverflow { .. } => {
            "the document is too large or too deeply aliased: alias expansion overflowed".into()
        }
        E::DuplicateMappingKey { key, .. } => {
            let key = key.clone().or_else(|| offset.and_then(|o| key_at(text, o)));
            match key {
                Some(k) => format!("duplicate key {k:?}; each key may appear once in a mapping"),
                None => "duplicate key; each key may appear once in a mapping".into(),
            }
        }
        E::Unexpected { expected, .. } => match *expected {
            "sequence start" => shape(Want::List),
            "mapping start" | "empty mapping start" => shape(Want::Mapping),
            "string scalar" | "scalar" | "str expected" => shape(Want::Text),
            other => format!("expected {other}"),
        },
        E::NullIntoString { .. } => shape(Want::Text),
        E::ExternallyTaggedEnumExpectedScalarOrMapping { .. }
        | E::ExpectedStringKeyForExternallyTaggedEnum { .. } => shape(Want::Text),
        _ => {
            let plain = e.without_snippet().to_string();
            // The crate appends " at line L, column C"; we put the location in front instead.
            let message = match plain.rfind(" at line ") {
                Some(i) if at.is_some() => plain[..i].to_string(),
                _ => plain,
            };
            let message = message.replace('`', "'");
            if message.contains("recursion limit exceeded") {
                depth_message()
            } else if message.starts_with("missing field") {
                format!("{message} (required)")
            } else {
                message
            }
        }
    };
    ConfigError {
        file: file.into(),
        at,
        message: clip_message(message),
    }
}

/// Byte offset of 1-based `line`, `col` (in characters) in `text`.
pub(super) fn offset_of(text: &str, line: u64, col: u64) -> Option<usize> {
    let start = if line <= 1 {
        0
    } else {
        let skip = usize::try_from(line - 2).ok()?;
        text.match_indices('\n').nth(skip)?.0 + 1
    };
    let col = usize::try_from(col.max(1) - 1).ok()?;
    let rest = &text[start..];
    Some(start + rest.char_indices().nth(col).map_or(rest.len(), |(i, _)| i))
}

/// An error message of one short line whatever the file holds: every quoted value longer than
/// 80 characters cut to its first 60 and its length, and the whole at most 400 characters.
pub(super) fn clip_message(message: String) -> String {
    const LONG: usize = 80;
    const MAX: usize = 400;
    let mut out = String::with_capacity(message.len().min(MAX + 8));
    let mut rest = message.as_str();
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..open]);
        let quoted = &rest[open + 1..];
        // The closing quote of a Debug-quoted string: the first one not escaped.
        let mut escaped = false;
        let close = quoted.char_indices().find_map(|(i, c)| {
            let hit = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            hit.then_some(i)
        });
        let Some(close) = close else {
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let inner = &quoted[..close];
        let n = inner.chars().count();
        if n > LONG {
            let head: String = inner.chars().take(60).collect();
            out.push_str(&format!("\"{head}\"… ({n} characters)"));
        } else {
            out.push('"');
            out.push_str(inner);
            out.push('"');
        }
        rest = &quoted[close + 1..];
    }
    out.push_str(rest);
    match out.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}… (message cut)", &out[..i]),
        None => out,
    }
}

/// A value for an error message: quoted, and when long (over 60 characters as quoted) its
/// beginning and its size.
pub(super) fn shorten(s: &str) -> String {
    let mut head = String::new();
    let mut width = 0;
    for c in s.chars() {
        width += c.escape_debug().count();
        if width > 60 {
            return format!("{head:?}… ({} bytes)", s.len());
        }
        head.push(c);
    }
    format!("{s:?}")
}

pub(super) fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::config::testing::*;

    #[test]
    fn a_duplicate_key_is_named_without_the_libraries_advice() {
        let got = err(&format!(
            "defaults: {{ timeout: 1s, timeout: 2s }}\n{TARGET}"
        ));
        assert_eq!(
            got,
            "p.yaml:1:26: duplicate key \"timeout\"; each key may appear once in a mapping"
        );
        assert_err(
            &format!(
                "{HEAD}    routes: [ {{ path: /ok, expect: {{ json: {{ a: 1, a: 2 }} }} }} ]\n"
            ),
            "p.yaml:4:52: duplicate key \"a\"; each key may appear once in a mapping",
        );
    }

    #[test]
    fn every_budget_breach_is_one_sentence_that_states_its_limit() {
        let deep = |n: usize| {
            format!(
                "{HEAD}    routes: [ {{ path: /ok, expect: {{ json: {{ a: {}{} }} }} }} ]\n",
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        let depth = "nesting deeper than 64 levels (recursion limit exceeded); a probe file may nest lists and mappings at most 64 levels deep";
        // The budget notices at depth 65, the YAML scanner on very deep flow collections:
        // one message either way.
        for n in [58, 300, 10_000] {
            let got = err(&deep(n));
            assert!(got.ends_with(depth), "depth {n}: {got}");
            assert!(got.starts_with("p.yaml:4:"), "depth {n}: {got}");
        }
        assert!(
            parse(&deep(57), "p.yaml", &|_| None).is_ok(),
            "64 levels are fine"
        );

        let aliases = format!(
            "{HEAD}    routes: [&r {{path: /a}}, {}]\n",
            vec!["*r"; 1_001].join(",")
        );
        assert_err(
            &aliases,
            "the document is too large or too deeply aliased: more than 1000 aliases (*name); a probe file may use at most 1000",
        );
        let mut bomb = format!(
            "{HEAD}    routes:\n      - path: /a\n        expect:\n          json:\n            a: &a [x,x,x,x,x,x,x,x,x]\n"
        );
        for i in 0..8u8 {
            let (prev, cur) = ((b'a' + i) as char, (b'b' + i) as char);
            bomb.push_str(&format!(
                "            {cur}: &{cur} [{}]\n",
                vec![format!("*{prev}"); 9].join(",")
            ));
        }
        assert_err(
            &bomb,
            "the document is too large or too deeply aliased: aliases expand to more than 50000 replayed events",
        );
        for got in [err(&deep(300)), err(&aliases), err(&bomb)] {
            assert!(
                !got.contains("budget breached") && !got.contains('{') && !got.contains("500000"),
                "no Debug dump, no unrelated limit: {got}"
            );
        }
        assert_err(
            &format!("{TARGET}---\n{TARGET}"),
            "p.yaml:5:1: more than one YAML document ('---'); a probe file is a single document",
        );
    }

    #[test]
    fn the_readme_quotes_the_limits_the_loader_enforces() {
        let readme = include_str!("../../README.md");
        let spaced = |n: usize| {
            let digits = n.to_string();
            let mut out = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i).is_multiple_of(3) {
                    out.push(' ');
                }
                out.push(c);
            }
            out
        };
        let sentence = format!(
            "more than {} YAML aliases or {} alias-replayed events (a \"billion laughs\" bomb), nesting deeper than {}",
            spaced(MAX_ALIASES),
            spaced(MAX_REPLAYED_EVENTS),
            MAX_DEPTH
        );
        let flat = readme.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains(&sentence),
            "README Security must say: {sentence}"
        );
    }

    #[test]
    fn a_huge_value_is_quoted_short_in_any_error() {
        let name = "n".repeat(100_000);
        let got = err(&format!(
            "targets:\n  - name: {name}\n    routes: [ {{ path: /a }} ]\n"
        ));
        assert!(got.contains("… (100000 characters)"), "{got}");
        assert!(got.len() < 300, "{got}");
        let got = err(&format!(
            "{TARGET}user_agent: \"{}\\n\"\n",
            "u".repeat(100_000)
        ));
        assert!(got.len() < 500, "{}", &got[..500.min(got.len())]);
        let got = err(&format!(
            "{HEAD}    routes: [ {{ path: /a, class: {} }} ]\n",
            "c".repeat(100_000)
        ));
        assert!(got.len() < 500, "{}", &got[..500.min(got.len())]);
    }
}
