//! Property tests: hostile input never panics, and the verdict is monotone.

use proptest::prelude::*;
use routewatch::outcome::{ALL, Outcome};
use routewatch::plan::Class;
use routewatch::verdict::{Verdict, target_verdict};

fn outcome() -> impl Strategy<Value = Outcome> {
    (0..ALL.len()).prop_map(|i| ALL[i])
}

fn class() -> impl Strategy<Value = Class> {
    prop_oneof![Just(Class::Core), Just(Class::Auxiliary)]
}

/// YAML-shaped text built from the probe file's own vocabulary, so the parser gets deep into
/// the structure instead of failing on the first byte.
fn yamlish() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("targets"),
        Just("name"),
        Just("base_url"),
        Just("routes"),
        Just("path"),
        Just("class"),
        Just("expect"),
        Just("status"),
        Just("json"),
        Just("defaults"),
        Just("timeout"),
        Just("retries"),
        Just("unit"),
        Just("recovery"),
        Just("on"),
        Just("tcp"),
        Just("headers"),
        Just("max_body"),
        Just("body_regex"),
        Just("header"),
        Just("body_contains"),
    ];
    let scalar = prop_oneof![
        Just("core".to_string()),
        Just("http://127.0.0.1:1".to_string()),
        Just("/a".to_string()),
        Just("10s".to_string()),
        Just("-1".to_string()),
        Just("200-299".to_string()),
        Just("~".to_string()),
        Just("&a x".to_string()),
        Just("*a".to_string()),
        Just("[".to_string()),
        Just("${X}".to_string()),
        Just(r"'\w{100}'".to_string()),
        Just("'(a'".to_string()),
        Just(r"'[\w\W]{50}'".to_string()),
        "[ -~]{0,12}",
    ];
    let line = (0usize..6, key, prop::bool::ANY, scalar).prop_map(|(indent, k, dash, v)| {
        format!(
            "{}{}{k}: {v}",
            "  ".repeat(indent),
            if dash { "- " } else { "" }
        )
    });
    prop::collection::vec(line, 0..30).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_loader_returns_a_plan_or_a_located_error_for_any_text(text in "\\PC{0,200}") {
        if let Err(e) = routewatch::config::parse(&text, "p.yaml", &|_| None) {
            prop_assert!(!e.message.is_empty());
            prop_assert!(e.to_string().starts_with("p.yaml:"));
        }
    }

    #[test]
    fn the_loader_survives_yaml_shaped_garbage(text in yamlish()) {
        if let Err(e) = routewatch::config::parse(&text, "p.yaml", &|_| Some("v".into())) {
            prop_assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn the_loader_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, &bytes).unwrap();
        if let Err(e) = routewatch::config::load(&path, &|_| None) {
            prop_assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn the_parser_survives_arbitrary_bytes_read_as_text(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = routewatch::config::parse(&text, "p.yaml", &|_| None) {
            prop_assert!(!e.message.is_empty());
            prop_assert!(e.to_string().len() < 1_000);
        }
    }

    #[test]
    fn any_pattern_is_compiled_or_refused_with_a_short_located_error(pattern in "[\\\\wWdDsSpP{}()\\[\\]*+?|.^$0-9a-z,-]{0,60}") {
        let yaml = format!(
            "targets:\n  - name: a\n    base_url: http://x\n    routes: [ {{ path: /a, expect: {{ body_regex: {} }} }} ]\n",
            serde_json::to_string(&pattern).unwrap()
        );
        if let Err(e) = routewatch::config::parse(&yaml, "p.yaml", &|_| None) {
            prop_assert!(e.to_string().starts_with("p.yaml:"), "{e}");
            prop_assert!(e.to_string().len() < 500, "{e}");
        }
    }

    #[test]
    fn retry_after_parsing_accepts_any_string(s in "\\PC{0,40}") {
        let _ = routewatch::retry::parse_retry_after(&s, std::time::SystemTime::now());
    }

    #[test]
    fn status_specs_parse_or_fail_cleanly(spec in "[0-9 ,\\[\\]\"-]{0,20}") {
        let yaml = format!("targets:\n  - name: a\n    base_url: http://x\n    routes: [{{ path: /a, expect: {{ status: {spec} }} }}]\n");
        let _ = routewatch::config::parse(&yaml, "p.yaml", &|_| None);
    }

    #[test]
    fn a_failing_core_route_never_makes_a_target_healthier(
        routes in prop::collection::vec((class(), outcome()), 0..12),
        idx in any::<prop::sample::Index>(),
        worse in outcome().prop_filter("a failing outcome", |o| !o.is_pass()),
    ) {
        let before = target_verdict(routes.iter().copied());
        let mut after_routes = routes.clone();
        if after_routes.is_empty() {
            after_routes.push((Class::Core, worse));
        } else {
            let i = idx.index(after_routes.len());
            after_routes[i] = (Class::Core, worse);
        }
        let after = target_verdict(after_routes.iter().copied());
        prop_assert_eq!(after, Verdict::Unhealthy);
        prop_assert!(after >= before);
    }

    #[test]
    fn auxiliary_routes_never_make_a_target_unhealthy(routes in prop::collection::vec(outcome(), 0..12)) {
        let v = target_verdict(routes.iter().map(|&o| (Class::Auxiliary, o)));
        prop_assert!(v == Verdict::Healthy || v == Verdict::Degraded);
    }
}

/// Peak RSS (KiB) and exit code of `routewatch validate --config FILE`, measured on its own.
fn validate_measured(cfg: &std::path::Path) -> (i32, u64, String) {
    let mut m = crate::common::Measured::new(env!("CARGO_BIN_EXE_routewatch"));
    let o = m
        .cmd
        .args(["validate", "--config"])
        .arg(cfg)
        .env_remove("ROUTEWATCH_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    (o.status.code().unwrap_or(-1), m.peak_kib(), stderr)
}

/// Generated worst cases under the 4 MiB file limit stay under 64 MiB peak.
#[test]
fn generated_worst_cases_stay_small() {
    let dir = tempfile::tempdir().unwrap();
    let head = "targets:\n  - name: a\n    base_url: http://x\n    routes:\n";
    let cases: Vec<(&str, String)> = vec![
        (
            "regex",
            format!(
                "{head}      - {{ path: /a, expect: {{ body_regex: '{}' }} }}\n",
                r"\w".repeat(500_000)
            ),
        ),
        (
            "header-patterns",
            format!(
                "{head}      - {{ path: /a, expect: {{ header: {{ {} }} }} }}\n",
                (0..3_000)
                    .map(|i| format!("x-{i}: '\\w+{i}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        (
            "routes",
            format!("{head}{}", "      - {path: /a}\n".repeat(200_000)),
        ),
        (
            "targets",
            (0..120_000)
                .map(|i| format!("- {{name: t{i}, tcp: 'h:1'}}\n"))
                .collect::<String>()
                .lines()
                .fold(String::from("targets:\n"), |mut a, l| {
                    a.push_str("  ");
                    a.push_str(l);
                    a.push('\n');
                    a
                }),
        ),
        (
            "flow",
            format!(
                "targets: [{}]\n",
                "{name: a, base_url: 'http://x', routes: [{path: /a}]}, ".repeat(70_000)
            ),
        ),
    ];
    for (name, text) in cases {
        assert!(
            text.len() <= 4 * 1024 * 1024,
            "{name}: {} bytes",
            text.len()
        );
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        let (code, rss_kib, stderr) = validate_measured(&path);
        assert_eq!(code, 2, "{name}: {}", &stderr[..stderr.len().min(500)]);
        assert_eq!(stderr.lines().count(), 1, "{name}");
        assert!(
            rss_kib < 64 * 1024,
            "{name}: peak RSS {rss_kib} KiB: {stderr}"
        );
    }
}
