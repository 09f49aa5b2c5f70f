//! Taking a snapshot out of a VM directory, where a jailed monitor writes
//! it, into the starter's own place (`snapshots/<id>`), trusting nothing
//! the monitor left: the directory is first moved out of its reach, then
//! made root's, and refused unless it holds only the snapshot's regular
//! files (a symlink there would have a later restore, which reads the
//! snapshot before it confines itself, open a host file for the guest).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{DISK_FILE, MANIFEST_FILE, MEMORY_FILE, VMSTATE_FILE};
use crate::control::check_snapshot_name;

/// Moves snapshot `name` out of `vm_dir` to `dest` (which must not exist,
/// on the same file system). On failure nothing is left at `dest` and the
/// snapshot is removed.
pub fn adopt(vm_dir: &Path, name: &str, dest: &Path) -> io::Result<()> {
    check_snapshot_name(name).map_err(io::Error::other)?;
    let src = vm_dir.join(name);
    let meta = fs::symlink_metadata(&src)?;
    if !meta.is_dir() {
        return Err(refused(name, "not a directory"));
    }
    if dest.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists", dest.display()),
        ));
    }
    let staging = staging_path(dest)?;
    fs::rename(&src, &staging)?;
    let outcome = make_ours(&staging, name).and_then(|()| fs::rename(&staging, dest));
    if outcome.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    outcome
}

/// `.<name>.adopt` beside `dest`: out of the monitor's reach, not yet a
/// snapshot anyone would read.
fn staging_path(dest: &Path) -> io::Result<PathBuf> {
    let name = dest
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{}: no file name", dest.display())))?;
    let mut staged = std::ffi::OsString::from(".");
    staged.push(name);
    staged.push(".adopt");
    Ok(dest.with_file_name(staged))
}

fn refused(name: &str, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("snapshot {name} refused: {why}"),
    )
}

/// Owner root (when we are root) and private modes first, so the monitor
/// can no longer add to it; then every entry checked.
fn make_ours(dir: &Path, name: &str) -> io::Result<()> {
    // SAFETY: geteuid has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        std::os::unix::fs::lchown(dir, Some(0), Some(0))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name();
        let known = [MANIFEST_FILE, VMSTATE_FILE, MEMORY_FILE, DISK_FILE]
            .iter()
            .any(|k| file.as_encoded_bytes() == k.as_bytes());
        if !known {
            return Err(refused(name, &format!("unexpected entry {file:?}")));
        }
        let path = entry.path();
        let meta = fs::symlink_metadata(&path)?;
        if !meta.file_type().is_file() {
            return Err(refused(name, &format!("{file:?} is not a regular file")));
        }
        if meta.nlink() != 1 {
            return Err(refused(name, &format!("{file:?} has other links")));
        }
        if root {
            std::os::unix::fs::lchown(&path, Some(0), Some(0))?;
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_in(vm_dir: &Path, name: &str) -> PathBuf {
        let dir = vm_dir.join(name);
        fs::create_dir(&dir).unwrap();
        for f in [MANIFEST_FILE, VMSTATE_FILE, MEMORY_FILE] {
            fs::write(dir.join(f), f).unwrap();
        }
        dir
    }

    #[test]
    fn moves_a_plain_snapshot_and_makes_it_private() {
        let tmp = tempfile::tempdir().unwrap();
        snapshot_in(tmp.path(), "s1");
        let dest = tmp.path().join("out");
        adopt(tmp.path(), "s1", &dest).unwrap();
        assert!(!tmp.path().join("s1").exists());
        assert_eq!(fs::read(dest.join(MEMORY_FILE)).unwrap(), b"memory");
        let mode = fs::metadata(dest.join(VMSTATE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn refuses_symlinks_links_strangers_and_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("secret");
        fs::write(&outside, "host file").unwrap();
        type Plant = fn(&Path, &Path);
        let plants: [(&str, Plant); 4] = [
            ("symlink", |dir, outside| {
                fs::remove_file(dir.join(MEMORY_FILE)).unwrap();
                std::os::unix::fs::symlink(outside, dir.join(MEMORY_FILE)).unwrap();
            }),
            ("hard link", |dir, outside| {
                fs::remove_file(dir.join(MEMORY_FILE)).unwrap();
                fs::hard_link(outside, dir.join(MEMORY_FILE)).unwrap();
            }),
            ("unexpected entry", |dir, _| {
                fs::write(dir.join("extra"), "x").unwrap()
            }),
            ("not a regular file", |dir, _| {
                fs::create_dir(dir.join(DISK_FILE)).unwrap()
            }),
        ];
        for (i, (what, plant)) in plants.into_iter().enumerate() {
            let name = format!("s{i}");
            let dir = snapshot_in(tmp.path(), &name);
            plant(&dir, &outside);
            let dest = tmp.path().join(format!("out{i}"));
            let err = adopt(tmp.path(), &name, &dest).unwrap_err().to_string();
            assert!(err.contains("refused"), "{what}: {err}");
            assert!(!dest.exists(), "{what}");
        }
        assert_eq!(fs::read_to_string(&outside).unwrap(), "host file");
        for bad in ["../x", "/etc", "", ".hidden", "a/b"] {
            let err = adopt(tmp.path(), bad, &tmp.path().join("x")).unwrap_err();
            assert!(
                err.to_string().contains("bad snapshot name"),
                "{bad}: {err}"
            );
        }
        std::os::unix::fs::symlink(tmp.path(), tmp.path().join("link")).unwrap();
        let err = adopt(tmp.path(), "link", &tmp.path().join("y")).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}
