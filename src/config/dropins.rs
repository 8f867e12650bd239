//! Drop-in files: `<name>.d/*.yaml` beside the probe file `<name>.yaml` (so `probes.d/` beside
//! `probes.yaml`), and the files of a top-level `include:` list (paths or file-name globs,
//! relative to the probe file). Each holds only `targets:`, appended to the probe file's in
//! order: the `include:` entries as listed (a glob's matches by name), then the directory by
//! name. Each file is opened once, resolving links as the probe file is, and, as root, judged
//! like it (a drop-in others can write blocks recovery as the probe file would); its errors
//! carry its own `path:line:col`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

use super::ConfigError;
use super::diagnostics::yaml_error;
use super::route_count::RawTargets;

/// At most this many drop-in files besides the probe file.
pub const MAX_DROPINS: usize = 256;
/// The probe file and its drop-ins together, at most (the text is held while resolving).
pub const MAX_TOTAL_BYTES: u64 = super::MAX_FILE_BYTES;

/// A drop-in as written: `targets:` only. The probe file's other top-level keys are read to be
/// refused where they are written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDropIn {
    #[serde(default)]
    pub(super) targets: Option<Spanned<RawTargets>>,
    user_agent: Option<Spanned<IgnoredAny>>,
    defaults: Option<Spanned<IgnoredAny>>,
    max_in_flight: Option<Spanned<IgnoredAny>>,
    ping: Option<Spanned<IgnoredAny>>,
    notify: Option<Spanned<IgnoredAny>>,
    include: Option<Spanned<IgnoredAny>>,
}

/// One drop-in, read and parsed.
pub(super) struct DropIn {
    /// The path as it names the file in messages.
    pub(super) file: String,
    pub(super) text: String,
    /// Where its relative paths are resolved: its own directory.
    pub(super) dir: PathBuf,
    pub(super) targets: Option<Spanned<RawTargets>>,
    /// As root: the file, or a directory or link on its way, is not root's alone.
    pub(super) untrusted: bool,
}

/// What reading the drop-ins found besides their content.
#[derive(Default)]
pub(super) struct Found {
    pub(super) files: Vec<DropIn>,
    /// As root: why a file read (or the drop-in directory) cannot be trusted.
    pub(super) untrusted: Vec<String>,
}

/// The drop-in directory of a probe file: `probes.yaml` → `probes.d`.
pub fn dropin_dir(probe_file: &Path) -> Option<PathBuf> {
    let stem = probe_file.file_stem()?;
    let mut name = stem.to_os_string();
    name.push(".d");
    Some(probe_file.with_file_name(name))
}

/// Whether `name` matches a file-name glob of `*` (any run) and `?` (one character). Pure.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative matching with one backtrack point: linear in practice, never exponential.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// The entries of `dir` whose names match `pattern`, by name; hidden files never.
fn listed(dir: &Path, pattern: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') || !glob_matches(pattern, &name) {
            continue;
        }
        // Subdirectories are not drop-ins (a link to one is refused when opened).
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        names.push(name);
        if names.len() > MAX_DROPINS {
            break;
        }
    }
    names.sort();
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// Find, open, judge and parse the drop-ins of a probe file: its `include:` entries
/// (`includes`, positions in `main_file`) relative to `base_dir`, then `dropin_dir`'s
/// `*.yaml`. `budget` is what is left of [`MAX_TOTAL_BYTES`]; `root` judges each file.
pub(super) fn gather(
    main_file: &str,
    includes: &[Spanned<String>],
    base_dir: &Path,
    main_path: Option<&Path>,
    dropin_dir: Option<&Path>,
    mut budget: u64,
    root: bool,
) -> Result<Found, ConfigError> {
    let at = |s: &Spanned<String>, message: String| ConfigError {
        file: main_file.to_string(),
        at: (s.referenced.line() > 0).then(|| (s.referenced.line(), s.referenced.column())),
        message,
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for inc in includes {
        let raw = inc.value.trim();
        if raw.is_empty() {
            return Err(at(
                inc,
                "include: an empty entry; expected a file or a file-name glob such as conf.d/*.yaml".into(),
            ));
        }
        let path = base_dir.join(raw);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let parent = path.parent().unwrap_or(base_dir).to_path_buf();
        if is_glob(&parent.to_string_lossy()) {
            return Err(at(
                inc,
                format!(
                    "include {raw:?}: wildcards are allowed in the file name only, e.g. conf.d/*.yaml"
                ),
            ));
        }
        if is_glob(&name) {
            match listed(&parent, &name) {
                Ok(found) => paths.extend(found),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(at(
                        inc,
                        format!(
                            "include {raw:?}: the directory {} does not exist",
                            parent.display()
                        ),
                    ));
                }
                Err(e) => {
                    return Err(at(
                        inc,
                        format!("include {raw:?}: cannot list {}: {e}", parent.display()),
                    ));
                }
            }
        } else {
            if !path.exists() && std::fs::symlink_metadata(&path).is_err() {
                return Err(at(
                    inc,
                    format!("include {raw:?}: {} does not exist", path.display()),
                ));
            }
            paths.push(path);
        }
        if paths.len() > MAX_DROPINS {
            return Err(at(inc, too_many()));
        }
    }
    let mut found = Found::default();
    if let Some(dir) = dropin_dir {
        match std::fs::symlink_metadata(dir) {
            Err(_) => {}
            Ok(_) => {
                if root {
                    match crate::trust::walk(dir) {
                        Ok(w) => {
                            if let Some(p) = w.problem {
                                found.untrusted.push(format!("drop-in directory: {p}"));
                            }
                        }
                        Err(e) => found
                            .untrusted
                            .push(format!("cannot resolve {}: {e}", dir.display())),
                    }
                }
                let listed = listed(dir, "*.yaml").map_err(|e| ConfigError {
                    file: dir.display().to_string(),
                    at: None,
                    message: format!("cannot list the drop-in directory: {e}"),
                })?;
                paths.extend(listed);
            }
        }
    }
    if paths.len() > MAX_DROPINS {
        return Err(ConfigError {
            file: main_file.to_string(),
            at: None,
            message: too_many(),
        });
    }
    // A file named twice (by include and by the directory) is read once; the probe file
    // itself (a glob that matches it) is not a drop-in of itself.
    let mut seen: Vec<PathBuf> = main_path
        .and_then(|p| std::fs::canonicalize(p).ok())
        .into_iter()
        .collect();
    for path in paths {
        let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let (d, used) = read_one(&path, budget, root, &mut found.untrusted)?;
        budget -= used;
        found.files.push(d);
    }
    Ok(found)
}

fn too_many() -> String {
    format!(
        "more than {MAX_DROPINS} drop-in files; merge some (at most {MAX_DROPINS} besides the probe file)"
    )
}

/// Open (links resolved, as root judged), read within `budget` and parse one drop-in.
fn read_one(
    path: &Path,
    budget: u64,
    root: bool,
    untrusted: &mut Vec<String>,
) -> Result<(DropIn, u64), ConfigError> {
    let file = path.display().to_string();
    let err = |at: Option<(u64, u64)>, message: String| ConfigError {
        file: file.clone(),
        at,
        message,
    };
    let opened = crate::trust::open(path)
        .map_err(|e| err(None, format!("cannot read: {}", crate::words::io_error(&e))))?;
    let problem = opened.problem.filter(|_| root);
    let distrusted = problem.is_some();
    if let Some(p) = &problem {
        untrusted.push(format!("drop-in {file}: {p}"));
    }
    let (bytes, over) = crate::trust::read_limited(&opened.file, budget)
        .map_err(|e| err(None, format!("cannot read: {e}")))?;
    if over {
        return Err(err(
            None,
            format!(
                "the probe file and its drop-ins are over {MAX_TOTAL_BYTES} bytes together; at most {MAX_TOTAL_BYTES} are read"
            ),
        ));
    }
    let used = bytes.len() as u64;
    let text = String::from_utf8(bytes).map_err(|e| {
        let (line, col) = super::utf8_position(e.as_bytes(), e.utf8_error().valid_up_to());
        err(
            Some((line, col)),
            "invalid UTF-8; a probe file must be UTF-8 text".into(),
        )
    })?;
    let raw: RawDropIn = if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        // An empty drop-in adds nothing (a placeholder, a target commented out).
        RawDropIn {
            targets: None,
            user_agent: None,
            defaults: None,
            max_in_flight: None,
            ping: None,
            notify: None,
            include: None,
        }
    } else {
        super::plain::from_str(&text).map_err(|e| {
            let e = yaml_error(&file, &text, &e);
            match &problem {
                // Whoever can write it may have linked it to a file only root can read: its
                // text is not quoted (the place still is).
                Some(p) => ConfigError {
                    message: format!("not a drop-in of targets (its text is not shown: {p})"),
                    ..e
                },
                None => e,
            }
        })?
    };
    let settings = [
        ("user_agent", &raw.user_agent),
        ("defaults", &raw.defaults),
        ("max_in_flight", &raw.max_in_flight),
        ("ping", &raw.ping),
        ("notify", &raw.notify),
        ("include", &raw.include),
    ];
    if let Some((key, Some(s))) = settings.iter().find(|(_, v)| v.is_some()) {
        let l = s.referenced;
        return Err(err(
            (l.line() > 0).then(|| (l.line(), l.column())),
            format!(
                "{key} is a top-level setting: it belongs in the probe file itself; a drop-in holds only targets:"
            ),
        ));
    }
    Ok((
        DropIn {
            file,
            text,
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            targets: raw.targets,
            untrusted: distrusted,
        },
        used,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_file_names() {
        for (p, n, want) in [
            ("*.yaml", "10-api.yaml", true),
            ("*.yaml", "api.yml", false),
            ("*.yaml", ".yaml", true),
            ("api-?.yaml", "api-1.yaml", true),
            ("api-?.yaml", "api-12.yaml", false),
            ("*", "x", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("exact.yaml", "exact.yaml", true),
        ] {
            assert_eq!(glob_matches(p, n), want, "{p} {n}");
        }
        // No exponential blow-up on a hostile pattern.
        let long = "a".repeat(5000);
        assert!(!glob_matches("*a*a*a*a*a*a*a*a*b", &long));
    }

    #[test]
    fn the_dropin_directory_is_named_after_the_probe_file() {
        assert_eq!(
            dropin_dir(Path::new("/etc/routewatch/probes.yaml")).unwrap(),
            Path::new("/etc/routewatch/probes.d")
        );
        assert_eq!(
            dropin_dir(Path::new("web.yml")).unwrap(),
            Path::new("web.d")
        );
    }
}
