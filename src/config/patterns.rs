//! Regular expressions of the file (`expect.body_regex`, `expect.header`), compiled within a
//! per-pattern and a per-file memory budget.

use std::sync::Arc;

use regex::Regex;
use serde_saphyr::Spanned;

use super::ConfigError;
use super::context::Ctx;
use super::diagnostics::{shorten, truncate_chars};

/// A regular expression (`expect.body_regex`, an `expect.header` pattern) longer than this is
/// refused before it is compiled: health-check patterns are short, and compiling a long one
/// costs memory in proportion to its length before any size limit applies.
pub const MAX_PATTERN_BYTES: usize = 4096;
/// The compiled size of one regular expression (regex's `size_limit`). Fits every realistic
/// health-check pattern (`\w{10}` needs half of it; ASCII classes such as `[0-9a-z]` or
/// `(?-u:\w)` are far smaller than Unicode `\w`).
pub const MAX_REGEX_BYTES: usize = 1 << 20;
/// The lazy DFA cache of one regular expression while it matches (regex's `dfa_size_limit`).
pub const MAX_REGEX_CACHE_BYTES: usize = 1 << 20;
/// All distinct patterns of one file together, compiled (identical patterns are compiled once
/// and shared). Each pattern is charged the smallest of [`REGEX_TIERS`] it fits in, plus
/// [`REGEX_OVERHEAD_BYTES`]: about 800 distinct simple patterns, 200 with a Unicode `\w+`, or
/// 16 at the per-pattern limit.
pub const MAX_REGEX_TOTAL_BYTES: usize = 16 << 20;
/// What a compiled pattern costs beyond its automaton (reverse automaton, prefilter, cache pool).
pub(super) const REGEX_OVERHEAD_BYTES: usize = 16 << 10;
/// Compiled-size steps a pattern is tried at; it is charged the first it fits in.
pub(super) const REGEX_TIERS: [usize; 5] =
    [4 << 10, 16 << 10, 64 << 10, 256 << 10, MAX_REGEX_BYTES];

impl Ctx<'_> {
    /// Compile a pattern of the file within [`MAX_PATTERN_BYTES`], [`MAX_REGEX_BYTES`] and
    /// what is left of [`MAX_REGEX_TOTAL_BYTES`]; an identical pattern compiled before is
    /// shared. `what` names the value in errors, which quote the pattern shortened.
    pub(super) fn regex(
        &self,
        s: &Spanned<String>,
        target: &str,
        what: &str,
    ) -> Result<Arc<Regex>, ConfigError> {
        let pattern = s.value.as_str();
        if let Some(re) = self.regexes.borrow().0.get(pattern) {
            return Ok(re.clone());
        }
        let shown = shorten(pattern);
        let scope = format!("target {target:?}: ");
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(self.err(
                s,
                format!(
                    "{scope}{what} {shown} is too long; a regular expression may be at most {MAX_PATTERN_BYTES} bytes"
                ),
            ));
        }
        let spent = self.regexes.borrow().1;
        let left = MAX_REGEX_TOTAL_BYTES.saturating_sub(spent);
        for tier in REGEX_TIERS {
            let charge = tier + REGEX_OVERHEAD_BYTES;
            if charge > left {
                return Err(self.err(
                    s,
                    format!(
                        "{scope}{what} {shown}: the file's regular expressions together compile to more than {} MiB; use fewer distinct patterns or simpler ones (ASCII classes such as [0-9a-z] or (?-u:\\w) instead of \\w)",
                        MAX_REGEX_TOTAL_BYTES >> 20
                    ),
                ));
            }
            let built = regex::RegexBuilder::new(pattern)
                .size_limit(tier)
                .dfa_size_limit(MAX_REGEX_CACHE_BYTES)
                .build();
            match built {
                Ok(re) => {
                    let re = Arc::new(re);
                    let mut cache = self.regexes.borrow_mut();
                    cache.1 += charge;
                    cache.0.insert(pattern.to_string(), re.clone());
                    return Ok(re);
                }
                Err(regex::Error::CompiledTooBig(_)) => continue,
                Err(err) => {
                    // The crate's message quotes the whole pattern; keep only its last line.
                    let why = err.to_string();
                    let why = why.lines().last().unwrap_or("").trim();
                    let why = why.strip_prefix("error: ").unwrap_or(why);
                    return Err(self.err(
                        s,
                        format!(
                            "{scope}invalid {what} {shown}: {}; expected a regular expression (Rust regex syntax)",
                            truncate_chars(why, 120)
                        ),
                    ));
                }
            }
        }
        Err(self.err(
            s,
            format!(
                "{scope}{what} {shown} compiles to more than {} MiB; a regular expression may compile to at most {} MiB (ASCII classes such as [0-9a-z] or (?-u:\\w) are far smaller than \\w, and repetitions such as {{100}} multiply the size)",
                MAX_REGEX_BYTES >> 20,
                MAX_REGEX_BYTES >> 20
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::config::testing::*;

    fn regex_route(pattern: &str) -> String {
        format!("      - {{ path: /a, expect: {{ body_regex: '{pattern}' }} }}\n")
    }

    #[test]
    fn a_long_pattern_is_refused_at_its_value_shortened_in_the_message() {
        let long = r"\w".repeat(MAX_PATTERN_BYTES);
        let got = err(&format!("{HEAD}    routes:\n{}", regex_route(&long)));
        assert!(
            got.starts_with("p.yaml:5:43: target \"a\": expect.body_regex \"\\\\w\\\\w"),
            "{got}"
        );
        assert!(
            got.contains(&format!("… (8192 bytes) is too long; a regular expression may be at most {MAX_PATTERN_BYTES} bytes")),
            "{got}"
        );
        assert!(got.len() < 300, "{got}");
        // At the limit it is only the compiled size that counts.
        let ascii = "a".repeat(MAX_PATTERN_BYTES);
        parse(
            &format!("{HEAD}    routes:\n{}", regex_route(&ascii)),
            "p.yaml",
            &|_| None,
        )
        .expect("a pattern of exactly the limit is fine");
    }

    #[test]
    fn a_pattern_that_compiles_too_big_is_refused_with_advice() {
        let yaml = format!(
            "{HEAD}    routes:\n      - {{ path: /a, expect: {{ header: {{ x-v: '\\w{{100}}' }} }} }}\n"
        );
        let got = err(&yaml);
        assert!(
            got.starts_with("p.yaml:5:46: target \"a\": expect.header pattern \"\\\\w{100}\" compiles to more than 1 MiB"),
            "{got}"
        );
        assert!(got.contains("(?-u:\\w)"), "{got}");
        // The ASCII class of the same pattern is small.
        parse(
            &format!("{HEAD}    routes:\n{}", regex_route(r"(?-u:\w){100}")),
            "p.yaml",
            &|_| None,
        )
        .expect("ASCII \\w{100} fits");
    }

    #[test]
    fn a_syntax_error_names_the_pattern_once_and_the_reason() {
        let got = err(&format!("{HEAD}    routes:\n{}", regex_route("(ab")));
        assert_eq!(
            got,
            "p.yaml:5:43: target \"a\": invalid expect.body_regex \"(ab\": unclosed group; expected a regular expression (Rust regex syntax)"
        );
    }

    #[test]
    fn identical_patterns_are_compiled_once_and_distinct_ones_share_a_budget() {
        let mut yaml = format!("{HEAD}    routes:\n");
        for _ in 0..2_000 {
            yaml.push_str(&regex_route(r"\w{10}x"));
        }
        let plan = parse(&yaml, "p.yaml", &|_| None).expect("one pattern 2000 times");
        let routes = &plan.targets[0].routes;
        let first = routes[0].expect.body_regex.as_ref().unwrap();
        assert!(
            routes
                .iter()
                .all(|r| Arc::ptr_eq(r.expect.body_regex.as_ref().unwrap(), first)),
            "one shared compiled pattern"
        );
        let mut yaml = format!("{HEAD}    routes:\n");
        for i in 0..40 {
            yaml.push_str(&regex_route(&format!(r"\w{{10}}{i}")));
        }
        let got = err(&yaml);
        assert!(
            got.contains("the file's regular expressions together compile to more than 16 MiB"),
            "{got}"
        );
        assert!(got.starts_with("p.yaml:"), "{got}");
    }
}
