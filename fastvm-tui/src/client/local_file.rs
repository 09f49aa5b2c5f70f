//! The local side of a file copy: files read and written on tokio's
//! blocking pool (so a slow disk never stalls the client's connections),
//! and a download's partial file, written beside its destination, renamed
//! into place once whole and removed if the copy ends any other way.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// A local file used from async code; each operation runs on the blocking
/// pool.
pub(super) struct LocalFile(Option<File>);

impl LocalFile {
    /// Opens `path` for reading.
    pub(super) async fn open(path: &Path) -> io::Result<LocalFile> {
        let path = path.to_path_buf();
        blocking(move || File::open(path))
            .await
            .map(|f| LocalFile(Some(f)))
    }

    /// Runs `f` on the file on the blocking pool.
    async fn with<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut File) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let mut file = self
            .0
            .take()
            .ok_or_else(|| io::Error::other("an earlier operation on the file did not end"))?;
        let (file, out) = blocking(move || {
            let out = f(&mut file);
            Ok((file, out))
        })
        .await?;
        self.0 = Some(file);
        out
    }

    /// The file's metadata.
    pub(super) async fn metadata(&mut self) -> io::Result<std::fs::Metadata> {
        self.with(|f| f.metadata()).await
    }

    /// Up to `max` bytes from the current position (empty at the end).
    pub(super) async fn read_chunk(&mut self, max: usize) -> io::Result<Vec<u8>> {
        self.with(move |f| {
            let mut buf = vec![0u8; max];
            let n = f.read(&mut buf)?;
            buf.truncate(n);
            Ok(buf)
        })
        .await
    }

    async fn write_all(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        self.with(move |f| f.write_all(&bytes)).await
    }

    async fn sync_all(&mut self) -> io::Result<()> {
        self.with(|f| f.sync_all()).await
    }
}

/// A download being written: removed when dropped unless placed.
pub(super) struct Partial {
    path: PathBuf,
    file: LocalFile,
    placed: bool,
}

impl Partial {
    /// Creates (or empties) the partial file beside `target`. Created in
    /// place, not on the blocking pool: no cancel can come between the
    /// file's creation and the guard that removes it.
    pub(super) fn create(target: &Path) -> Result<Partial, String> {
        let path = partial_name(target);
        let file = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Partial {
            path,
            file: LocalFile(Some(file)),
            placed: false,
        })
    }

    /// Appends `bytes`.
    pub(super) async fn write(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        self.file
            .write_all(bytes)
            .await
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }

    /// Syncs it, gives it `mode` and renames it to `target`.
    pub(super) async fn place(mut self, target: &Path, mode: u32) -> Result<(), String> {
        let partial = self.path.clone();
        let at = |e: io::Error| format!("{}: {e}", partial.display());
        self.file.sync_all().await.map_err(at)?;
        let (from, to) = (self.path.clone(), target.to_path_buf());
        blocking(move || std::fs::set_permissions(&from, std::fs::Permissions::from_mode(mode)))
            .await
            .map_err(at)?;
        let from = self.path.clone();
        blocking(move || std::fs::rename(from, to))
            .await
            .map_err(|e| format!("{}: {e}", target.display()))?;
        self.placed = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where a download to `target` is written until it is whole.
pub fn partial_name(target: &Path) -> PathBuf {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    target.with_file_name(format!(".{name}.fastvm-partial"))
}

/// Where a download of `guest_path` to `local` goes: `local`, or the guest
/// file's base name in it when `local` is a directory.
pub fn destination(local: &Path, guest_path: &str) -> PathBuf {
    if local.is_dir() {
        let name = Path::new(guest_path).file_name().unwrap_or_default();
        return local.join(name);
    }
    local.to_path_buf()
}
