//! The manual pages: what `routewatch man --dir` writes is what the package ships
//! (`packaging/man/`), and each page renders without a single warning from groff and man.

use std::path::Path;
use std::process::Command as Std;

use crate::common::{rw, skip_outside_ci};

fn written() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let o = rw()
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    (dir, names)
}

#[test]
fn man_dir_writes_a_page_per_subcommand_equal_to_the_shipped_ones() {
    let (dir, names) = written();
    let mut want = vec!["routewatch.1".to_string()];
    for sub in [
        "check",
        "validate",
        "demo",
        "status",
        "silence",
        "doctor",
        "schema",
        "completions",
        "man",
    ] {
        want.push(format!("routewatch-{sub}.1"));
    }
    want.sort();
    assert_eq!(names, want);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/man");
    let mut committed: Vec<String> = std::fs::read_dir(&shipped)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    committed.sort();
    assert_eq!(
        committed, names,
        "packaging/man is stale: run `routewatch man --dir packaging/man`"
    );
    for name in &names {
        // Not assert_eq: two whole pages would bury the message.
        assert!(
            std::fs::read(dir.path().join(name)).unwrap()
                == std::fs::read(shipped.join(name)).unwrap(),
            "packaging/man/{name} is stale: run `routewatch man --dir packaging/man`"
        );
    }
    // Without --dir: the top-level page, as written.
    let o = rw().arg("man").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        std::fs::read_to_string(dir.path().join("routewatch.1")).unwrap()
    );
    let o = rw()
        .args(["man", "--dir"])
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "a missing --dir is a usage error");
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a directory"));
}

#[test]
fn every_page_has_its_sections_and_renders_without_warnings() {
    let (dir, names) = written();
    for name in &names {
        let roff = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(roff.is_ascii(), "{name}: ASCII roff renders anywhere");
        for section in ["NAME", "SYNOPSIS", "OPTIONS", "EXIT STATUS", "EXAMPLES"] {
            assert!(
                roff.contains(&format!(".SH {section}\n"))
                    || roff.contains(&format!(".SH \"{section}\"\n")),
                "{name} has {section}"
            );
        }
    }
    for name in ["routewatch.1", "routewatch-check.1"] {
        let roff = std::fs::read_to_string(dir.path().join(name)).unwrap();
        for section in ["FILES", "ENVIRONMENT"] {
            assert!(
                roff.contains(&format!(".SH {section}\n")),
                "{name}: {section}"
            );
        }
        assert!(roff.contains("nagios"), "{name}: the plugin exit codes");
    }
    let tools = ["groff", "man"].map(|t| {
        Std::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if tools != [true, true] {
        skip_outside_ci("rendering the man pages needs groff and man (groff-base, man-db)");
        return;
    }
    for name in &names {
        let path = dir.path().join(name);
        let groff = Std::new("groff")
            .args(["-man", "-ww", "-z"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            groff.status.success() && groff.stderr.is_empty(),
            "groff on {name}: {}",
            String::from_utf8_lossy(&groff.stderr)
        );
        let man = Std::new("man")
            .args(["--warnings", "-l"])
            .arg(&path)
            .env("MANWIDTH", "80")
            .env_remove("MANPAGER")
            .env("PAGER", "cat")
            .output()
            .unwrap();
        assert!(
            man.status.success() && man.stderr.is_empty(),
            "man on {name}: {}",
            String::from_utf8_lossy(&man.stderr)
        );
        // Bold is overstruck (`E\bE`) on a pipe: keep the last of each pair.
        let mut text = String::new();
        for c in String::from_utf8_lossy(&man.stdout).chars() {
            if c == '\u{8}' {
                text.pop();
            } else {
                text.push(c);
            }
        }
        assert!(text.contains("EXIT STATUS"), "{name} rendered: {text}");
    }
}

#[test]
fn help_help_is_help() {
    let o = rw().args(["help", "--help"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("Usage: routewatch help [COMMAND]"), "{out}");
    let o = rw().args(["help", "check"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(
        String::from_utf8(o.stdout)
            .unwrap()
            .contains("Usage: routewatch check")
    );
    let o = rw().args(["help", "nope"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}
