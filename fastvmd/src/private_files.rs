//! Files nobody but the daemon's user may read: the daemon and its
//! monitors run with `umask 077`, and the data directory and the
//! directories under it are made `0700` even when an older version left
//! them open (guest disks, snapshot memory and the store hold what the
//! guests and API callers put there).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The mode of every directory the daemon keeps state in.
pub const DIR_MODE: u32 = 0o700;
/// The mode of the files it keeps there (what [`set_umask`] gives).
pub const FILE_MODE: u32 = 0o600;

/// `umask 077` for this process and every process it starts.
pub fn set_umask() {
    crate::vmm::cli::set_private_umask();
}

/// Creates `dir` (and its parents) and makes it [`DIR_MODE`].
pub fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
}

/// Makes an existing `file` [`FILE_MODE`] (one an older version made).
pub fn private_file(file: &Path) -> io::Result<()> {
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(FILE_MODE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_directories_and_files_are_closed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data/vms");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("fastvm.db");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        private_dir(&tmp.path().join("new/deep")).unwrap();
        assert_eq!(mode(&tmp.path().join("new/deep")), 0o700);
    }
}
