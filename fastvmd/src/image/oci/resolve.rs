//! Paths inside an image's root, resolved as the guest will see them:
//! symbolic links are followed within the root (an absolute target starts
//! again at the image's root, never the host's), and a path whose `..`
//! would climb above the root is refused, whether it is written so or
//! reached through a link. (The guest's kernel would stop such a `..` at
//! its root; an image that needs one to place its files is taken for the
//! attempt it most likely is.)

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Links followed in one resolution before it is refused as a loop.
const MAX_LINKS: usize = 40;

/// Why a path does not resolve inside the root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Its `..` components, or a link's, climb above the image's root.
    #[error("{0} escapes the image root")]
    Escapes(String),
    /// More than [`MAX_LINKS`] links on the way.
    #[error("{0}: too many levels of symbolic links")]
    Loop(String),
}

/// The components of an archive entry's name: `./` and leading `/` dropped;
/// `None` when a `..` is among them.
pub fn entry_components(name: &Path) -> Option<Vec<OsString>> {
    let mut out = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(part) => out.push(part.to_os_string()),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => return None,
        }
    }
    Some(out)
}

/// Resolves `components` under `root` (a host directory holding the
/// image's tree): each link met is followed inside the root; the last
/// component is followed too when `follow_last`. Returns the path relative
/// to `root` with no link in it (its last component may not exist yet).
pub fn resolve(
    root: &Path,
    components: &[OsString],
    follow_last: bool,
) -> Result<PathBuf, ResolveError> {
    let shown = || format!("/{}", PathBuf::from_iter(components).display());
    let mut resolved: Vec<OsString> = Vec::new();
    let mut queue: std::collections::VecDeque<OsString> = components.iter().cloned().collect();
    let mut links = 0;
    while let Some(part) = queue.pop_front() {
        if part == "." || part.is_empty() {
            continue;
        }
        if part == ".." {
            if resolved.pop().is_none() {
                return Err(ResolveError::Escapes(shown()));
            }
            continue;
        }
        let here = root.join(PathBuf::from_iter(&resolved)).join(&part);
        let is_last = queue.is_empty();
        let link = match std::fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() && (!is_last || follow_last) => {
                std::fs::read_link(&here).ok()
            }
            _ => None,
        };
        let Some(target) = link else {
            resolved.push(part);
            continue;
        };
        links += 1;
        if links > MAX_LINKS {
            return Err(ResolveError::Loop(shown()));
        }
        if target.is_absolute() {
            resolved.clear();
        }
        let mut next: Vec<OsString> = Vec::new();
        for c in target.components() {
            match c {
                Component::Normal(p) => next.push(p.to_os_string()),
                Component::ParentDir => next.push("..".into()),
                _ => {}
            }
        }
        for c in next.into_iter().rev() {
            queue.push_front(c);
        }
    }
    Ok(PathBuf::from_iter(resolved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn parts(p: &str) -> Vec<OsString> {
        entry_components(Path::new(p)).unwrap()
    }

    #[test]
    fn names_with_dot_dot_are_not_entries() {
        assert_eq!(entry_components(Path::new("a/../b")), None);
        assert_eq!(parts("./usr//bin/"), ["usr", "bin"]);
        assert_eq!(parts("/etc/passwd"), ["etc", "passwd"]);
    }

    #[test]
    fn links_are_followed_inside_the_root_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        symlink("/usr/bin", root.join("bin")).unwrap();
        symlink("usr/bin", root.join("sbin")).unwrap();
        symlink("../bin", root.join("usr/sbin")).unwrap();
        symlink("../../../..", root.join("up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let r = |p: &str, last| resolve(root, &parts(p), last);
        assert_eq!(r("bin/sh", false).unwrap(), Path::new("usr/bin/sh"));
        assert_eq!(r("sbin/ip", false).unwrap(), Path::new("usr/bin/ip"));
        assert_eq!(r("usr/sbin/ip", false).unwrap(), Path::new("usr/bin/ip"));
        assert_eq!(r("bin", false).unwrap(), Path::new("bin"));
        assert_eq!(r("bin", true).unwrap(), Path::new("usr/bin"));
        assert!(matches!(
            r("up/etc/passwd", false),
            Err(ResolveError::Escapes(_))
        ));
        assert!(matches!(r("loop/x", false), Err(ResolveError::Loop(_))));
    }
}
