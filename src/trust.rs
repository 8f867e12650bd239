//! Trust checks for running as root: like sshd's StrictModes, the probe file and the state
//! directory (and every directory above them) must be owned by root and not writable by group
//! or others — otherwise whoever can edit them could make root kill things. A sticky
//! world-writable directory such as /tmp is accepted: nobody else can replace entries in it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The facts about one path that the check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub uid: u32,
    pub mode: u32,
    pub is_dir: bool,
}

const STICKY: u32 = 0o1000;

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

/// Check a path and every directory above it (after resolving symlinks).
pub fn check_chain(path: &Path) -> Result<(), String> {
    let real: PathBuf = std::fs::canonicalize(path)
        .map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
    let mut cur: Option<&Path> = Some(&real);
    while let Some(p) = cur {
        let m = std::fs::metadata(p).map_err(|e| format!("cannot stat {}: {e}", p.display()))?;
        judge(
            p,
            Facts {
                uid: m.uid(),
                mode: m.mode(),
                is_dir: m.is_dir(),
            },
        )?;
        cur = p.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
