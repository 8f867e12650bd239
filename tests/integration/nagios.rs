//! `check --format nagios` read as a monitoring core reads a plugin (the Nagios plugin
//! development guidelines): the first line is `ROUTEWATCH <STATE> - <text>[ | <perfdata>]`,
//! perfdata items are `'label'=value[UOM];[warn];[crit];[min];[max]`, long output follows, and
//! the exit code is the state.

use std::path::{Path, PathBuf};

use crate::common::rw;
use crate::ecosystem::server;

#[derive(Debug)]
struct Perf {
    label: String,
    value: f64,
    uom: String,
}

#[derive(Debug)]
struct Plugin {
    code: i32,
    state: String,
    text: String,
    perf: Vec<Perf>,
    long: Vec<String>,
}

const STATES: [&str; 4] = ["OK", "WARNING", "CRITICAL", "UNKNOWN"];

/// One perfdata item, per the guidelines; panics on anything they do not allow.
fn perf_item(item: &str) -> (String, &str) {
    let (label, rest) = if let Some(quoted) = item.strip_prefix('\'') {
        // A quote inside a quoted label is written twice.
        let mut label = String::new();
        let mut chars = quoted.char_indices().peekable();
        let end = loop {
            let (i, c) = chars
                .next()
                .unwrap_or_else(|| panic!("unclosed label in {item:?}"));
            if c == '\'' {
                if chars.peek().map(|&(_, c)| c) == Some('\'') {
                    chars.next();
                    label.push('\'');
                    continue;
                }
                break i + 1;
            }
            label.push(c);
        };
        (label, &quoted[end..])
    } else {
        let eq = item
            .find('=')
            .unwrap_or_else(|| panic!("no '=' in {item:?}"));
        assert!(
            !item[..eq].contains(' '),
            "a label with spaces is quoted: {item:?}"
        );
        (item[..eq].to_string(), &item[eq..])
    };
    assert!(!label.is_empty(), "empty label in {item:?}");
    assert!(!label.contains('='), "'=' in label {label:?}");
    let rest = rest
        .strip_prefix('=')
        .unwrap_or_else(|| panic!("no '=' after the label in {item:?}"));
    (label, rest)
}

/// The plugin output and exit code of a run, checked against the guidelines' grammar.
fn plugin(o: &std::process::Output) -> Plugin {
    let stdout = String::from_utf8(o.stdout.clone()).unwrap();
    let code = o.status.code().unwrap();
    assert!((0..=3).contains(&code), "exit {code}: {stdout}");
    let mut lines = stdout.lines();
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no output; stderr: {o:?}"));
    let rest = first
        .strip_prefix("ROUTEWATCH ")
        .unwrap_or_else(|| panic!("{first}"));
    let (state, rest) = rest.split_once(" - ").unwrap_or_else(|| panic!("{first}"));
    assert!(STATES.contains(&state), "{first}");
    assert_eq!(
        STATES[code as usize], state,
        "the exit code is the state: {first}"
    );
    assert!(rest.matches('|').count() <= 1, "one '|' at most: {first}");
    let (text, perfdata) = match rest.split_once(" | ") {
        Some((t, p)) => (t, p),
        None => (rest, ""),
    };
    assert!(!text.is_empty() && !text.contains('|'), "{first}");
    let mut perf = Vec::new();
    let mut left = perfdata;
    while !left.is_empty() {
        let (label, after) = perf_item(left);
        let (data, next) = after.split_once(' ').unwrap_or((after, ""));
        let mut fields = data.split(';');
        let value = fields.next().unwrap();
        let num_end = value
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
            .unwrap_or(value.len());
        let (number, uom) = value.split_at(num_end);
        let value: f64 = number
            .parse()
            .unwrap_or_else(|_| panic!("value {number:?} of {label}"));
        assert!(
            ["", "s", "ms", "us", "%", "B", "KB", "MB", "TB", "c"].contains(&uom),
            "UOM {uom:?} of {label}"
        );
        let thresholds: Vec<&str> = fields.collect();
        assert!(thresholds.len() <= 4, "{data}");
        for t in thresholds {
            assert!(
                t.is_empty() || t.parse::<f64>().is_ok(),
                "threshold {t:?} of {label}"
            );
        }
        perf.push(Perf {
            label,
            value,
            uom: uom.to_string(),
        });
        left = next;
    }
    let long: Vec<String> = lines.map(str::to_string).collect();
    for l in &long {
        assert!(!l.contains('|'), "long output without perfdata: {l}");
    }
    Plugin {
        code,
        state: state.to_string(),
        text: text.to_string(),
        perf,
        long,
    }
}

fn probe_file(dir: &Path, port: u16, routes: &str) -> PathBuf {
    let p = dir.join("probes.yaml");
    std::fs::write(
        &p,
        format!(
            "defaults: {{ timeout: 2s, retries: 1, backoff: 5ms }}\ntargets:\n  - name: \"web 'one'\"\n    base_url: http://127.0.0.1:{port}\n    routes:\n{routes}"
        ),
    )
    .unwrap();
    p
}

fn nagios(dir: &Path, cfg: &Path) -> Plugin {
    let o = rw()
        .args(["check", "--format", "nagios", "--config"])
        .arg(cfg)
        .arg("--state-dir")
        .arg(dir.join("st"))
        .output()
        .unwrap();
    plugin(&o)
}

fn perf<'a>(p: &'a Plugin, label: &str) -> &'a Perf {
    p.perf
        .iter()
        .find(|x| x.label == label)
        .unwrap_or_else(|| panic!("no perfdata {label} in {p:?}"))
}

#[test]
fn healthy_is_ok_with_perfdata_for_the_run_and_each_route() {
    let port = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = probe_file(
        dir.path(),
        port,
        "      - { path: /ok, class: core }\n      - { path: /ok, class: core }\n",
    );
    let p = nagios(dir.path(), &cfg);
    assert_eq!((p.code, p.state.as_str()), (0, "OK"), "{p:?}");
    assert!(p.text.contains("1 target healthy"), "{}", p.text);
    assert_eq!(perf(&p, "routes").value, 2.0);
    assert_eq!(perf(&p, "ok").value, 2.0);
    assert_eq!(perf(&p, "core_failed").value, 0.0);
    assert_eq!(perf(&p, "time").uom, "s");
    // Quoted (a space), the quote in the target's name doubled; the same path twice is two
    // labels.
    assert_eq!(perf(&p, "web 'one' /ok").uom, "s");
    assert!(perf(&p, "web 'one' /ok#2").value >= 0.0);
    assert!(p.long.is_empty(), "{p:?}");
}

#[test]
fn degraded_and_unknown_are_warning() {
    let port = server();
    let dir = tempfile::tempdir().unwrap();
    let degraded = probe_file(
        dir.path(),
        port,
        "      - { path: /ok, class: core }\n      - { path: /down, class: auxiliary }\n",
    );
    let p = nagios(dir.path(), &degraded);
    assert_eq!((p.code, p.state.as_str()), (1, "WARNING"), "{p:?}");
    assert!(
        p.text.contains("degraded or unknown: web 'one'"),
        "{}",
        p.text
    );
    assert!(
        p.long
            .iter()
            .any(|l| l.starts_with("web 'one' /down (auxiliary): http_error")),
        "{p:?}"
    );
    let unknown = probe_file(dir.path(), port, "      - { path: /busy, class: core }\n");
    let p = nagios(dir.path(), &unknown);
    assert_eq!((p.code, p.state.as_str()), (1, "WARNING"), "{p:?}");
    assert_eq!(perf(&p, "rate_limited").value, 1.0);
}

#[test]
fn unhealthy_is_critical_with_a_long_output_line_per_failing_route() {
    let port = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = probe_file(
        dir.path(),
        port,
        "      - { path: /ok, class: core }\n      - { path: \"/down?x=|\", class: core }\n",
    );
    let p = nagios(dir.path(), &cfg);
    assert_eq!((p.code, p.state.as_str()), (2, "CRITICAL"), "{p:?}");
    assert!(p.text.starts_with("unhealthy: web 'one'; "), "{}", p.text);
    assert_eq!(perf(&p, "core_failed").value, 1.0);
    // '=' (never allowed in a label) and '|' (the perfdata separator) replaced.
    assert_eq!(perf(&p, "web 'one' /down?x__").uom, "s");
    assert_eq!(p.long.len(), 1, "one line for the one failing route: {p:?}");
    assert!(
        p.long[0]
            .starts_with("web 'one' /down?x=/ (core): http_error after 2 attempts, status 503"),
        "{p:?}"
    );
}

#[test]
fn could_not_run_and_usage_errors_are_unknown_with_the_reason() {
    let port = server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = probe_file(dir.path(), port, "      - { path: /ok, class: core }\n");
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let o = rw()
        .args(["check", "--format", "nagios", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(&not_a_dir)
        .output()
        .unwrap();
    let p = plugin(&o);
    assert_eq!((p.code, p.state.as_str()), (3, "UNKNOWN"), "{p:?}");
    assert!(p.text.contains("not a directory"), "{}", p.text);

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "targets:\n  - name: x\n    timout: 1s\n").unwrap();
    let o = rw()
        .args(["check", "--format", "nagios", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let p = plugin(&o);
    assert_eq!((p.code, p.state.as_str()), (3, "UNKNOWN"), "{p:?}");
    assert!(
        p.text.contains("bad.yaml:3:5") && p.text.contains("timout"),
        "the position of the error: {}",
        p.text
    );

    for args in [
        &["check", "--format", "nagios", "--no-such-flag"][..],
        &["check", "--format=nagios", "--url"][..],
    ] {
        let o = rw().args(args).output().unwrap();
        let p = plugin(&o);
        assert_eq!(
            (p.code, p.state.as_str()),
            (3, "UNKNOWN"),
            "{args:?}: {p:?}"
        );
        assert!(p.text.starts_with("usage: "), "{}", p.text);
    }

    // Other formats keep their own exit table.
    let o = rw().args(["check", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = rw()
        .args(["check", "--format", "text", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
}
