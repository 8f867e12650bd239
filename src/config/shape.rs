//! A value of the wrong shape (a list where a mapping belongs, a mapping for a single value):
//! whose value it is, found from the text before it, and what that key accepts.

use std::borrow::Cow;

use super::diagnostics::truncate_chars;
use super::secrets::without_password;

/// What the YAML crate expected where it found something else.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Want {
    List,
    Mapping,
    Text,
}

impl Want {
    pub(super) fn accepted(self) -> &'static str {
        match self {
            Want::List => "a list (- item, or [a, b])",
            Want::Mapping => "a mapping (key: value, or { key: value })",
            Want::Text => "a single value",
        }
    }
}

/// Where a bad value sits, found from the text before it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Place {
    /// The top-level document.
    Root,
    /// The value of `key:`.
    Key(String),
    /// An entry of the list under `key:`.
    Item(String),
    Unknown,
}

pub(super) const DURATION: &str = "a duration such as 500ms, 10s or 2m";

/// How errors name `key`'s value, whether it is a list, a mapping or a single value, and what
/// it accepts.
pub(super) fn describe_key(key: &str) -> Option<(&'static str, Want, &'static str)> {
    Some(match key {
        "targets" => (
            "targets",
            Want::List,
            "a list of targets (- { name: web, base_url: http://127.0.0.1:8000, routes: [...] })",
        ),
        "routes" => (
            "routes",
            Want::List,
            "a list of routes (- { path: /x, class: core })",
        ),
        "on" => (
            "recovery.on",
            Want::List,
            "a list of outcomes, e.g. [timeout, empty_reply, reset]",
        ),
        "defaults" => (
            "defaults",
            Want::Mapping,
            "a mapping of timing keys, e.g. { timeout: 10s, retries: 2 }",
        ),
        "headers" => (
            "headers",
            Want::Mapping,
            "a mapping of header name to value, e.g. { Authorization: \"Bearer ${TOKEN}\" }",
        ),
        "recovery" => (
            "recovery",
            Want::Mapping,
            "a mapping, e.g. { action: kill, after_failed_runs: 1 }",
        ),
        "dump" => (
            "recovery.dump",
            Want::Mapping,
            "a mapping, e.g. { signal: SIGQUIT, wait: 5s }",
        ),
        "tls" => (
            "tls",
            Want::Mapping,
            "a mapping, e.g. { ca_file: ca.pem, insecure: false }",
        ),
        "expect" => (
            "expect",
            Want::Mapping,
            "a mapping of checks, e.g. { status: 200, body_contains: ok }",
        ),
        "json" => (
            "expect.json",
            Want::Mapping,
            "a mapping of dotted field path to expected value, e.g. { status: healthy, checks.db: ok }",
        ),
        "header" => (
            "expect.header",
            Want::Mapping,
            "a mapping of response header name to regular expression, e.g. { content-type: json }",
        ),
        "name" => ("name", Want::Text, "a name such as web"),
        "path" => ("path", Want::Text, "an absolute path such as /api/health"),
        "base_url" => (
            "base_url",
            Want::Text,
            "http://host[:port], https://… or unix:/path.sock",
        ),
        "tcp" => ("tcp", Want::Text, "host:port, e.g. 127.0.0.1:6379"),
        "unit" => ("unit", Want::Text, "a service name like app.service"),
        "method" => ("method", Want::Text, "GET, HEAD, POST, PUT, …"),
        "user_agent" => ("user_agent", Want::Text, "a single line of text"),
        "body" => ("body", Want::Text, "text"),
        "body_contains" => ("expect.body_contains", Want::Text, "text"),
        "body_regex" => ("expect.body_regex", Want::Text, "a regular expression"),
        "ca_file" => ("tls.ca_file", Want::Text, "a path to a PEM file"),
        "class" => ("class", Want::Text, "core or auxiliary"),
        "action" => ("recovery.action", Want::Text, "kill, restart or none"),
        "ip" => ("ip", Want::Text, "any, v4 or v6"),
        "timeout" => ("timeout", Want::Text, DURATION),
        "connect_timeout" => ("connect_timeout", Want::Text, DURATION),
        "backoff" => ("backoff", Want::Text, DURATION),
        "max_backoff" => ("max_backoff", Want::Text, DURATION),
        "run_timeout" => ("run_timeout", Want::Text, DURATION),
        "max_latency" => ("expect.max_latency", Want::Text, DURATION),
        "startup_grace" => ("recovery.startup_grace", Want::Text, DURATION),
        "cooldown" => ("recovery.cooldown", Want::Text, DURATION),
        "window" => ("recovery.window", Want::Text, DURATION),
        "verify_timeout" => ("recovery.verify_timeout", Want::Text, DURATION),
        "signal" => (
            "recovery.dump.signal",
            Want::Text,
            "a signal name such as SIGQUIT",
        ),
        "wait" => ("recovery.dump.wait", Want::Text, DURATION),
        "through" => (
            "recovery.through",
            Want::Text,
            "the proxy's service name like nginx.service",
        ),
        _ => return None,
    })
}

/// What an entry of the list under `key` must be.
pub(super) fn describe_item(key: &str) -> Option<(&'static str, Want, &'static str)> {
    Some(match key {
        "targets" => (
            "each entry under targets",
            Want::Mapping,
            "a target such as { name: web, base_url: http://127.0.0.1:8000, routes: [...] }",
        ),
        "routes" => (
            "each entry under routes",
            Want::Mapping,
            "a route such as { path: /health, class: core }",
        ),
        "on" => (
            "each entry under recovery.on",
            Want::Text,
            "an outcome such as timeout, empty_reply or reset",
        ),
        _ => return None,
    })
}

/// "what: expected …, found …" for a value of the wrong shape at byte `offset` of `text`.
pub(super) fn shape_message(text: &str, offset: usize, want: Want) -> String {
    let clean = without_comments(text);
    // An empty value is reported at the colon of its key.
    let empty = clean.get(offset..).is_some_and(|r| {
        r.strip_prefix(':')
            .is_some_and(|r| r.chars().next().is_none_or(char::is_whitespace))
    });
    let (place, found) = if empty {
        (
            key_before(&clean, offset).map_or(Place::Unknown, Place::Key),
            "nothing (an empty value)".to_string(),
        )
    } else {
        (place_at(&clean, offset), found_at(&clean, offset))
    };
    let described: Option<(Cow<'_, str>, Want, &str)> = match place {
        Place::Root => Some((
            "the probe file".into(),
            Want::Mapping,
            "a mapping with 'targets' (and optionally 'user_agent', 'defaults') at the top level",
        )),
        Place::Key(k) => match describe_key(&k) {
            Some((label, kind, accepted)) => Some((label.into(), kind, accepted)),
            // A key routewatch does not describe (a header name, a json path): name it.
            None => Some((truncate_chars(&k, 60).into(), want, want.accepted())),
        },
        Place::Item(k) => describe_item(&k).map(|(l, kind, a)| (l.into(), kind, a)),
        Place::Unknown => None,
    };
    match described {
        // Only trust the description when it agrees with what the parser wanted.
        Some((label, kind, accepted)) if kind == want => {
            format!("{label}: expected {accepted}, found {found}")
        }
        _ => format!("expected {}, found {found}", want.accepted()),
    }
}

/// `text` with every comment blanked out (same length, so offsets stay valid).
pub(super) fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let mut quote: Option<char> = None;
        let mut escaped = false;
        let mut prev: Option<char> = None;
        let mut cut = None;
        for (i, c) in line.char_indices() {
            match quote {
                Some('"') if escaped => escaped = false,
                Some('"') if c == '\\' => escaped = true,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => {
                    let at_token = prev.is_none_or(|p| p.is_whitespace() || "[{,".contains(p));
                    if c == '#' && prev.is_none_or(char::is_whitespace) {
                        cut = Some(i);
                        break;
                    }
                    if (c == '"' || c == '\'') && at_token {
                        quote = Some(c);
                    }
                }
            }
            prev = Some(c);
        }
        match cut {
            Some(i) => {
                out.push_str(&line[..i]);
                let rest = &line[i..];
                let newline = rest.ends_with('\n');
                let blank = rest.len() - usize::from(newline);
                out.extend(std::iter::repeat_n(' ', blank));
                if newline {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    out
}

/// Skip whitespace backwards from `i`; returns the new end.
pub(super) fn skip_back_ws(b: &[u8], mut i: usize) -> usize {
    while i > 0 && b[i - 1].is_ascii_whitespace() {
        i -= 1;
    }
    i
}

/// Where the value at byte `off` of comment-free `clean` sits: whose key's value, or which
/// list's entry.
pub(super) fn place_at(clean: &str, off: usize) -> Place {
    let b = clean.as_bytes();
    let mut i = skip_back_ws(b, off.min(b.len()));
    // An anchor (&a) or tag (!t) written before the value belongs to it.
    loop {
        let start = b[..i]
            .iter()
            .rposition(u8::is_ascii_whitespace)
            .map_or(0, |p| p + 1);
        if start < i && matches!(b[start], b'&' | b'!') {
            i = skip_back_ws(b, start);
        } else {
            break;
        }
    }
    if i == 0 || clean[..i].trim() == "---" {
        return Place::Root;
    }
    match b[i - 1] {
        b':' => key_before(clean, i - 1).map_or(Place::Unknown, Place::Key),
        b'-' if i == 1 || b[i - 2].is_ascii_whitespace() => {
            block_parent(clean, i - 1).map_or(Place::Unknown, Place::Item)
        }
        b'[' => list_key(clean, i - 1),
        b',' => match open_bracket(b, i - 1) {
            Some(j) if b[j] == b'[' => list_key(clean, j),
            _ => Place::Unknown,
        },
        _ => Place::Unknown,
    }
}

/// The key of the flow list that opens at `bracket`.
pub(super) fn list_key(clean: &str, bracket: usize) -> Place {
    match place_at(clean, bracket) {
        Place::Key(k) => Place::Item(k),
        _ => Place::Unknown,
    }
}

/// The innermost bracket still open before `pos`.
pub(super) fn open_bracket(b: &[u8], pos: usize) -> Option<usize> {
    let mut depth = 0usize;
    for j in (0..pos).rev() {
        match b[j] {
            b']' | b'}' => depth += 1,
            b'[' | b'{' if depth == 0 => return Some(j),
            b'[' | b'{' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The key written before the `:` at `colon`.
pub(super) fn key_before(clean: &str, colon: usize) -> Option<String> {
    let b = clean.as_bytes();
    let end = {
        let mut e = colon;
        while e > 0 && matches!(b[e - 1], b' ' | b'\t') {
            e -= 1;
        }
        e
    };
    if end == 0 {
        return None;
    }
    if let q @ (b'"' | b'\'') = b[end - 1] {
        let open = b[..end - 1].iter().rposition(|&c| c == q)?;
        return Some(clean[open + 1..end - 1].to_string());
    }
    let start = b[..end]
        .iter()
        .rposition(|c| c.is_ascii_whitespace() || b"{[,".contains(c))
        .map_or(0, |p| p + 1);
    (start < end).then(|| clean[start..end].to_string())
}

/// The key of the block list whose `- ` entry starts at `dash`.
pub(super) fn block_parent(clean: &str, dash: usize) -> Option<String> {
    let line_start = clean[..dash].rfind('\n').map_or(0, |p| p + 1);
    if !clean[line_start..dash].bytes().all(|c| c == b' ') {
        return None;
    }
    let dash_col = dash - line_start;
    for line in clean[..line_start].lines().rev() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent > dash_col || (indent == dash_col && t.starts_with('-')) {
            continue;
        }
        let t = t.strip_prefix("- ").unwrap_or(t).trim_start();
        return t
            .strip_suffix(':')
            .map(|k| k.trim().trim_matches(['"', '\'']).to_string())
            .filter(|k| !k.is_empty());
    }
    None
}

/// What is written at byte `off`: "a mapping", "a list", "nothing", or the value as written
/// (a URL's password masked).
pub(super) fn found_at(clean: &str, off: usize) -> String {
    let mut r = clean
        .get(off..)
        .unwrap_or("")
        .trim_start_matches([' ', '\t']);
    while r.starts_with(['&', '!']) {
        let end = r.find(char::is_whitespace).unwrap_or(r.len());
        r = r[end..].trim_start_matches([' ', '\t']);
    }
    let line = r.lines().next().unwrap_or("").trim_end();
    let Some(first) = line.chars().next() else {
        return "nothing (an empty value)".into();
    };
    match first {
        '{' => "a mapping".into(),
        '[' => "a list".into(),
        '-' if line == "-" || line.starts_with("- ") => "a list".into(),
        '|' | '>' => "a block of text".into(),
        '"' | '\'' => {
            let mut escaped = false;
            let close = line.char_indices().skip(1).find(|&(_, c)| {
                let hit = c == first && !escaped;
                escaped = first == '"' && c == '\\' && !escaped;
                hit
            });
            match close {
                Some((i, _)) if line[i + 1..].trim_start().starts_with(':') => "a mapping".into(),
                Some((i, _)) => truncate_chars(&without_password(&line[..=i]), 60),
                None => truncate_chars(&without_password(line), 60),
            }
        }
        _ => {
            let token = line
                .split([',', ']', '}'])
                .next()
                .unwrap_or(line)
                .trim_end();
            if token.contains(": ") || token.ends_with(':') {
                "a mapping".into()
            } else {
                format!("{:?}", truncate_chars(&without_password(token), 60))
            }
        }
    }
}

/// The key written at byte `off` (for a duplicate key the crate did not name).
pub(super) fn key_at(text: &str, off: usize) -> Option<String> {
    let line = text.get(off..)?.lines().next()?;
    let key = line.split(':').next()?.trim().trim_matches(['"', '\'']);
    (!key.is_empty()).then(|| truncate_chars(key, 60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::*;

    #[test]
    fn a_value_of_the_wrong_shape_names_the_field_and_what_it_accepts() {
        let cases = [
            (
                format!("{HEAD}    routes: {{ path: /ok }}\n"),
                "p.yaml:4:13: routes: expected a list of routes (- { path: /x, class: core }), found a mapping",
            ),
            (
                format!("{HEAD}    routes:   # the routes\n      path: /ok\n"),
                "p.yaml:5:7: routes: expected a list of routes (- { path: /x, class: core }), found a mapping",
            ),
            (
                format!("{HEAD}    routes: /ok\n"),
                "p.yaml:4:13: routes: expected a list of routes (- { path: /x, class: core }), found \"/ok\"",
            ),
            (
                format!("{HEAD}    routes:\n"),
                "p.yaml:4:11: routes: expected a list of routes (- { path: /x, class: core }), found nothing (an empty value)",
            ),
            (
                format!("{HEAD}    routes: [ {{ path: /ok, expect: {{ json: [1,2] }} }} ]\n"),
                "p.yaml:4:44: expect.json: expected a mapping of dotted field path to expected value, e.g. { status: healthy, checks.db: ok }, found a list",
            ),
            (
                format!("{HEAD}    routes: [ {{ path: /a }}, /ok ]\n"),
                "p.yaml:4:29: each entry under routes: expected a route such as { path: /health, class: core }, found \"/ok\"",
            ),
            (
                format!("{HEAD}    routes:\n    - /ok\n"),
                "p.yaml:5:7: each entry under routes: expected a route such as { path: /health, class: core }, found \"/ok\"",
            ),
            (
                "targets:\n  - web\n".to_string(),
                "p.yaml:2:5: each entry under targets: expected a target such as { name: web",
            ),
            (
                "targets: { web: 1 }\n".to_string(),
                "p.yaml:1:10: targets: expected a list of targets",
            ),
            (
                format!("defaults: [1]\n{TARGET}"),
                "p.yaml:1:11: defaults: expected a mapping of timing keys, e.g. { timeout: 10s, retries: 2 }, found a list",
            ),
            (
                format!("{HEAD}    tls: \"yes\"\n    routes: [ {{ path: /ok }} ]\n"),
                "p.yaml:4:10: tls: expected a mapping, e.g. { ca_file: ca.pem, insecure: false }, found \"yes\"",
            ),
            (
                format!(
                    "{HEAD}    unit: a.service\n    recovery: {{ on: timeout }}\n    routes: [ {{ path: /ok }} ]\n"
                ),
                "p.yaml:5:21: recovery.on: expected a list of outcomes, e.g. [timeout, empty_reply, reset], found \"timeout\"",
            ),
            (
                format!("{HEAD}    routes: [ {{ path: [1] }} ]\n"),
                "p.yaml:4:23: path: expected an absolute path such as /api/health, found a list",
            ),
            (
                "- targets\n".to_string(),
                "p.yaml:1:1: the probe file: expected a mapping with 'targets'",
            ),
        ];
        for (yaml, want) in cases {
            let got = err(&yaml);
            assert!(got.contains(want), "want {want:?} in\n{got}\nfor\n{yaml}");
            assert!(
                !got.contains("sequence start") && !got.contains("mapping start"),
                "{got}"
            );
        }
    }

    #[test]
    fn the_text_before_a_value_tells_whose_value_it_is() {
        let at = |text: &str, needle: &str| {
            place_at(&without_comments(text), text.find(needle).unwrap())
        };
        assert_eq!(at("a:\n  b: # c: d\n    x", "x"), Place::Key("b".into()));
        assert_eq!(at("a: { \"b c\": x }", "x"), Place::Key("b c".into()));
        assert_eq!(at("a: &anchor x", "x"), Place::Key("a".into()));
        assert_eq!(at("list: [ {}, [x], y ]", "y"), Place::Item("list".into()));
        assert_eq!(at("list:\n  - 1\n  - x", "x"), Place::Item("list".into()));
        assert_eq!(at("m: { a: 1, x: 2 }", "x"), Place::Unknown);
        assert_eq!(at("x", "x"), Place::Root);
        assert_eq!(found_at("a: 'q: r'", 3), "'q: r'");
        assert_eq!(found_at("a: q r, s", 3), "\"q r\"");
        assert_eq!(found_at("a: http://u:pw@h/", 3), "\"http://u:***@h/\"");
        assert_eq!(found_at("a: \"http://u:pw@h\"", 3), "\"http://u:***@h\"");
    }
}
