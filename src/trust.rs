//! Trust checks for running as root: like sshd's StrictModes, the probe file and the state
//! directory (and every directory above them) must be owned by root and not writable by group
//! or others — otherwise whoever can edit them could make root kill things. A sticky
//! world-writable directory such as /tmp is accepted: nobody else can replace entries in it.
//!
//! The path is checked *as written*: every directory on the way, every symlink met on the way
//! (its owner; its own directory is already on the way) and every directory on the way to the
//! link's target. The file is then opened once, the *opened* file is checked (fstat), and the
//! caller reads from that same descriptor, so nobody can swap the file between the check and
//! the read.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// The facts about one path that the check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub uid: u32,
    pub mode: u32,
    pub is_dir: bool,
}

impl Facts {
    fn of(m: &std::fs::Metadata) -> Facts {
        Facts {
            uid: m.uid(),
            mode: m.mode(),
            is_dir: m.is_dir(),
        }
    }
}

const STICKY: u32 = 0o1000;
/// As the kernel's own path walk: more links than this on one path is a loop.
const MAX_LINKS: usize = 40;

/// Judge one path. Pure.
pub fn judge(path: &Path, f: Facts) -> Result<(), String> {
    if f.uid != 0 {
        return Err(format!(
            "{} is owned by uid {}, not root",
            path.display(),
            f.uid
        ));
    }
    let writable_by_others = f.mode & 0o022 != 0;
    let sticky_dir = f.is_dir && f.mode & STICKY != 0;
    if writable_by_others && !sticky_dir {
        return Err(format!(
            "{} is writable by group or others (mode {:04o})",
            path.display(),
            f.mode & 0o7777
        ));
    }
    Ok(())
}

/// The state directory itself: root's, and writable by root alone. The sticky exception of
/// [`judge`] lets a path pass *through* a directory such as /tmp, where nobody can replace
/// root's entries; but anyone may create new ones there, and the state directory's entries
/// (`state.json`, `lock`) are read and trusted by name. Pure.
pub fn judge_state_dir(path: &Path, f: Facts) -> Result<(), String> {
    judge(path, f)?;
    if f.mode & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (mode {:04o}); the state directory itself must not be, even sticky: anyone could plant its state.json or hold its lock",
            path.display(),
            f.mode & 0o7777
        ));
    }
    Ok(())
}

/// The trust verdict on a state directory as root: every directory and link on its path as
/// written ([`walk`]), and the directory itself when it exists ([`judge_state_dir`]).
/// `Some(reason)` when root must not use it.
pub fn state_dir_problem(dir: &Path) -> Option<String> {
    let w = match walk(dir) {
        Ok(w) => w,
        Err(e) => return Some(format!("cannot resolve {}: {e}", dir.display())),
    };
    if w.problem.is_some() || !w.exists {
        return w.problem;
    }
    match std::fs::metadata(&w.resolved) {
        Ok(m) => judge_state_dir(dir, Facts::of(&m)).err(),
        Err(e) => Some(format!("cannot stat {}: {e}", dir.display())),
    }
}

/// A symlink's mode means nothing; only who owns it (in a sticky directory anyone may plant
/// one). Pure.
pub fn judge_link(path: &Path, uid: u32) -> Result<(), String> {
    if uid != 0 {
        return Err(format!(
            "{} is a symlink owned by uid {uid}, not root",
            path.display()
        ));
    }
    Ok(())
}

/// What walking a path found: where it really leads, and the first reason not to trust it.
#[derive(Debug)]
pub struct Walk {
    /// The path with every symlink resolved (as far as it exists).
    pub resolved: PathBuf,
    /// Whether the whole path exists.
    pub exists: bool,
    /// The first problem met, if any.
    pub problem: Option<String>,
}

/// Walk `path` as written, component by component, judging every directory on the way, every
/// symlink met and every directory on the way to each link's target; the last component is
/// judged too when it exists. A missing component ends the walk (`exists: false`): what
/// exists up to there has been judged, so whatever is created below it is ours.
pub fn walk(path: &Path) -> std::io::Result<Walk> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let mut problem: Option<String> = None;
    let mut note = |r: Result<(), String>| {
        if let Err(e) = r
            && problem.is_none()
        {
            problem = Some(e);
        }
    };
    // Components still to visit, next first (reversed stack).
    let mut todo: Vec<OsString> = components(&absolute);
    todo.reverse();
    let mut cur = PathBuf::from("/");
    note(judge(&cur, Facts::of(&std::fs::symlink_metadata(&cur)?)));
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&name);
        let meta = match std::fs::symlink_metadata(&next) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut resolved = next;
                while let Some(rest) = todo.pop() {
                    resolved.push(rest);
                }
                return Ok(Walk {
                    resolved,
                    exists: false,
                    problem,
                });
            }
            Err(e) => return Err(e),
        };
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(std::io::Error::other(format!(
                    "{}: too many levels of symbolic links",
                    path.display()
                )));
            }
            note(judge_link(&next, meta.uid()));
            let target = std::fs::read_link(&next)?;
            if target.is_absolute() {
                cur = PathBuf::from("/");
            }
            let mut parts = components(&target);
            parts.reverse();
            todo.extend(parts);
            continue;
        }
        note(judge(&next, Facts::of(&meta)));
        cur = next;
    }
    Ok(Walk {
        resolved: cur,
        exists: true,
        problem,
    })
}

/// The normal and `..` components of a path (`.` and the root dropped).
fn components(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Check a path and every directory above it, as written (symlinks included). `Ok` when
/// root can trust it; a missing path is an error.
pub fn check_chain(path: &Path) -> Result<(), String> {
    let w = walk(path).map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
    if !w.exists {
        return Err(format!("{} does not exist", path.display()));
    }
    w.problem.map_or(Ok(()), Err)
}

/// A file opened once for reading, with the trust verdict on that very file.
pub struct Opened {
    pub file: File,
    /// `Some(reason)` when root should not act on what the file says.
    pub problem: Option<String>,
}

/// Open `path` for reading, judging the path as written and then the opened file itself.
/// The open never blocks (a FIFO in its place is an error, not a hang) and never follows a
/// link at the last step: the walk already resolved every link.
pub fn open(path: &Path) -> std::io::Result<Opened> {
    let w = walk(path)?;
    if !w.exists {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "does not exist",
        ));
    }
    let file = open_regular(&w.resolved)?;
    let meta = file.metadata()?;
    let problem = w
        .problem
        .or_else(|| judge(&w.resolved, Facts::of(&meta)).err());
    Ok(Opened { file, problem })
}

/// Open a regular file for reading: `O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC`, then fstat. Anything
/// else (a FIFO, a device, a socket, a directory, a symlink) is refused without blocking.
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    use rustix::fs::OFlags;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("is a {}, not a regular file", describe(kind)),
        ));
    }
    Ok(file)
}

/// A PEM file (`tls.ca_file`, `cert_file`, `key_file`) is at most this big: a system's whole
/// CA bundle is a few hundred KiB.
pub const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;

/// The content of a small regular file named by the probe file, links followed: opened
/// without blocking (a FIFO is an error, not a hang), anything but a regular file refused, at
/// most [`MAX_PEM_BYTES`] read (a bigger one, or `/dev/zero` behind a link, is an error, not
/// root's memory filled).
pub fn read_pem(path: &Path) -> std::io::Result<Vec<u8>> {
    use rustix::fs::OFlags;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("is a {}, not a regular file", describe(kind)),
        ));
    }
    let (bytes, over) = read_limited(&file, MAX_PEM_BYTES)?;
    if over {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("is over {MAX_PEM_BYTES} bytes, too big for a PEM file"),
        ));
    }
    Ok(bytes)
}

/// At most `limit` bytes of `file`, and whether there was more.
pub fn read_limited(file: &File, limit: u64) -> std::io::Result<(Vec<u8>, bool)> {
    let mut buf = Vec::new();
    file.take(limit + 1).read_to_end(&mut buf)?;
    let over = buf.len() as u64 > limit;
    buf.truncate(limit as usize);
    Ok((buf, over))
}

/// Plain words for a file type.
pub fn describe(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "directory"
    } else if kind.is_symlink() {
        "symlink"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else {
        "regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_directory_itself_is_never_taken_sticky() {
        let p = Path::new("/var/tmp/rw-state");
        let f = |uid, mode| Facts {
            uid,
            mode,
            is_dir: true,
        };
        assert_eq!(judge_state_dir(p, f(0, 0o040700)), Ok(()));
        assert_eq!(judge_state_dir(p, f(0, 0o040755)), Ok(()));
        // Fine to pass through (`judge`), not to keep state in: anyone may create its entries.
        assert_eq!(judge(p, f(0, 0o041777)), Ok(()));
        let e = judge_state_dir(p, f(0, 0o041777)).unwrap_err();
        assert!(e.contains("mode 1777") && e.contains("even sticky"), "{e}");
        assert!(judge_state_dir(p, f(0, 0o041770)).is_err());
        assert!(
            judge_state_dir(p, f(65534, 0o040700))
                .unwrap_err()
                .contains("uid 65534")
        );
    }

    #[test]
    fn ownership_and_mode_table() {
        let p = Path::new("/etc/routewatch/probes.yaml");
        let f = |uid, mode, is_dir| Facts { uid, mode, is_dir };
        assert_eq!(judge(p, f(0, 0o100644, false)), Ok(()));
        assert_eq!(judge(p, f(0, 0o100600, false)), Ok(()));
        assert!(
            judge(p, f(1000, 0o100644, false))
                .unwrap_err()
                .contains("uid 1000")
        );
        assert!(
            judge(p, f(0, 0o100666, false))
                .unwrap_err()
                .contains("mode 0666")
        );
        assert!(
            judge(p, f(0, 0o100664, false))
                .unwrap_err()
                .contains("group or others")
        );
        assert!(
            judge(p, f(0, 0o040777, true)).is_err(),
            "world-writable directory"
        );
        assert_eq!(
            judge(Path::new("/tmp"), f(0, 0o041777, true)),
            Ok(()),
            "sticky /tmp"
        );
        assert!(
            judge(p, f(0, 0o101666, false)).is_err(),
            "a sticky bit does not excuse a file"
        );
        assert!(judge_link(p, 1000).unwrap_err().contains("symlink owned"));
        assert_eq!(judge_link(p, 0), Ok(()));
    }

    #[test]
    fn walk_resolves_links_and_dotdot_and_reports_a_missing_tail() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        let w = walk(&dir.path().join("link/../link/f")).unwrap();
        assert!(w.exists);
        assert_eq!(w.resolved, real.canonicalize().unwrap().join("f"));
        let w = walk(&dir.path().join("link/new/deeper")).unwrap();
        assert!(!w.exists);
        assert_eq!(w.resolved, real.canonicalize().unwrap().join("new/deeper"));
        std::os::unix::fs::symlink("loop", dir.path().join("loop")).unwrap();
        assert!(walk(&dir.path().join("loop")).is_err());
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let e = open_regular(&fifo).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
    }
}
