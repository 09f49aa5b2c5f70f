//! The snapshot directory as a whole: [`SnapshotWriter`] builds it in a
//! hidden temporary sibling and renames it into place on commit (so it
//! appears whole or not at all); [`SnapshotReader`] opens and validates one
//! for restore, cheaply (manifest, `stat`s, `vmstate` only).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use serde::de::DeserializeOwned;

use super::{
    DISK_FILE, MANIFEST_FILE, MEMORY_FILE, Manifest, SnapshotError, VMSTATE_FILE, cpu_fingerprint,
    decode_state, read_vmstate,
};

/// Builds a snapshot directory atomically.
///
/// [`begin`](Self::begin) creates `.<name>.tmp-<pid>` next to the final
/// directory; the caller writes the files at [`memory_path`](Self::memory_path),
/// [`vmstate_path`](Self::vmstate_path) and optionally
/// [`disk_path`](Self::disk_path); [`commit`](Self::commit) records their
/// sizes in the manifest, fsyncs everything and renames the directory into
/// place. Dropping the writer without committing removes the temporary
/// directory.
#[derive(Debug)]
pub struct SnapshotWriter {
    final_dir: PathBuf,
    temp_dir: PathBuf,
    committed: bool,
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn fsync_path(path: &Path) -> Result<(), SnapshotError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| SnapshotError::io("fsync", path, e))
}

impl SnapshotWriter {
    /// Starts a snapshot that will appear at `final_dir`. Refuses with
    /// [`SnapshotError::Exists`] if it (or the temporary directory) exists.
    pub fn begin(final_dir: &Path) -> Result<Self, SnapshotError> {
        let name = match final_dir.components().next_back() {
            Some(Component::Normal(name)) => name,
            _ => {
                return Err(SnapshotError::BadTarget {
                    path: final_dir.to_owned(),
                });
            }
        };
        if fs::symlink_metadata(final_dir).is_ok() {
            return Err(SnapshotError::Exists {
                path: final_dir.to_owned(),
            });
        }
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".tmp-{}", std::process::id()));
        let temp_dir = parent_of(final_dir).join(temp_name);
        fs::create_dir(&temp_dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                SnapshotError::Exists {
                    path: temp_dir.clone(),
                }
            } else {
                SnapshotError::io("create", &temp_dir, e)
            }
        })?;
        Ok(SnapshotWriter {
            final_dir: final_dir.to_owned(),
            temp_dir,
            committed: false,
        })
    }

    /// The temporary directory the files are written into.
    pub fn temp_dir(&self) -> &Path {
        &self.temp_dir
    }

    /// Where the snapshot will appear on commit.
    pub fn final_dir(&self) -> &Path {
        &self.final_dir
    }

    /// Path of `name` inside the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.temp_dir.join(name)
    }

    /// Where to write the guest memory ([`super::write_memory`]).
    pub fn memory_path(&self) -> PathBuf {
        self.path(MEMORY_FILE)
    }

    /// Where to write the state ([`super::write_vmstate`]).
    pub fn vmstate_path(&self) -> PathBuf {
        self.path(VMSTATE_FILE)
    }

    /// Where to put the disk copy ([`super::clone_disk`]), if any.
    pub fn disk_path(&self) -> PathBuf {
        self.path(DISK_FILE)
    }

    /// Finishes the snapshot: sets `manifest.files` to the size of every
    /// file written (memory and vmstate are required), writes
    /// `manifest.json`, fsyncs every file and the directory, renames it to
    /// the final name (never replacing anything) and fsyncs the parent.
    /// Returns the final path. On error the temporary directory is removed.
    pub fn commit(mut self, mut manifest: Manifest) -> Result<PathBuf, SnapshotError> {
        let mut files = BTreeMap::new();
        let entries = fs::read_dir(&self.temp_dir)
            .map_err(|e| SnapshotError::io("list", &self.temp_dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| SnapshotError::io("list", &self.temp_dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == MANIFEST_FILE {
                continue;
            }
            let path = entry.path();
            let meta = fs::metadata(&path).map_err(|e| SnapshotError::io("stat", &path, e))?;
            if meta.is_file() {
                fsync_path(&path)?;
                files.insert(name, meta.len());
            }
        }
        for required in [MEMORY_FILE, VMSTATE_FILE] {
            if !files.contains_key(required) {
                return Err(SnapshotError::MissingFile {
                    name: required.to_owned(),
                    path: self.path(required),
                });
            }
        }
        manifest.files = files;
        let mpath = self.path(MANIFEST_FILE);
        let mut f = File::create(&mpath).map_err(|e| SnapshotError::io("create", &mpath, e))?;
        f.write_all(&manifest.to_json())
            .and_then(|()| f.sync_all())
            .map_err(|e| SnapshotError::io("write", &mpath, e))?;
        fsync_path(&self.temp_dir)?;
        rename_noreplace(&self.temp_dir, &self.final_dir)?;
        self.committed = true;
        fsync_path(parent_of(&self.final_dir))?;
        Ok(self.final_dir.clone())
    }
}

/// `renameat2(RENAME_NOREPLACE)`: a directory rename that fails if the
/// target appeared meanwhile (plain rename would replace an empty dir).
fn rename_noreplace(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (cfrom, cto) = c(from)
        .and_then(|f| Ok((f, c(to)?)))
        .map_err(|e| SnapshotError::io("rename", from, e))?;
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cfrom.as_ptr(),
            libc::AT_FDCWD,
            cto.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => Err(SnapshotError::Exists {
            path: to.to_owned(),
        }),
        // File systems without RENAME_NOREPLACE: check, then rename.
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(SnapshotError::Exists {
                    path: to.to_owned(),
                });
            }
            fs::rename(from, to).map_err(|e| SnapshotError::io("rename", from, e))
        }
        _ => Err(SnapshotError::io("rename", from, err)),
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.temp_dir);
        }
    }
}

/// A validated snapshot directory, ready for restore.
#[derive(Debug)]
pub struct SnapshotReader {
    dir: PathBuf,
    manifest: Manifest,
    state: Vec<u8>,
}

impl SnapshotReader {
    /// Opens `dir` for restore on this host: see [`open_for`](Self::open_for)
    /// with this host's [`cpu_fingerprint`].
    pub fn open(dir: &Path) -> Result<Self, SnapshotError> {
        Self::open_for(dir, &cpu_fingerprint())
    }

    /// Opens `dir` and validates it against the CPU fingerprint `host`:
    /// the manifest parses and has the supported format version
    /// ([`SnapshotError::ManifestParse`], [`SnapshotError::ManifestVersion`]),
    /// its fingerprint equals `host` ([`SnapshotError::CpuMismatch`]), it
    /// lists `memory` and `vmstate` ([`SnapshotError::Unlisted`]), every
    /// listed file is a plain name ([`SnapshotError::BadFileName`]), exists
    /// ([`SnapshotError::MissingFile`]) and has the listed size
    /// ([`SnapshotError::FileSize`]), and `vmstate` passes its checks. Guest
    /// memory is only `stat`ed, never read.
    pub fn open_for(dir: &Path, host: &str) -> Result<Self, SnapshotError> {
        let mpath = dir.join(MANIFEST_FILE);
        let text = fs::read(&mpath).map_err(|e| SnapshotError::ManifestParse {
            path: mpath.clone(),
            reason: e.to_string(),
        })?;
        let manifest = Manifest::parse(&mpath, &text)?;
        if manifest.cpu_fingerprint != host {
            return Err(SnapshotError::CpuMismatch {
                snapshot: manifest.cpu_fingerprint.clone(),
                host: host.to_owned(),
            });
        }
        for required in [MEMORY_FILE, VMSTATE_FILE] {
            if !manifest.files.contains_key(required) {
                return Err(SnapshotError::Unlisted {
                    name: required.to_owned(),
                });
            }
        }
        for (name, &expected) in &manifest.files {
            let plain = matches!(
                Path::new(name).components().collect::<Vec<_>>().as_slice(),
                [Component::Normal(n)] if *n == name.as_str()
            );
            if !plain || name == MANIFEST_FILE {
                return Err(SnapshotError::BadFileName { name: name.clone() });
            }
            let path = dir.join(name);
            let meta = match fs::metadata(&path) {
                Ok(m) if m.is_file() => m,
                Ok(_) => {
                    return Err(SnapshotError::MissingFile {
                        name: name.clone(),
                        path,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(SnapshotError::MissingFile {
                        name: name.clone(),
                        path,
                    });
                }
                Err(e) => return Err(SnapshotError::io("stat", &path, e)),
            };
            if meta.len() != expected {
                return Err(SnapshotError::FileSize {
                    name: name.clone(),
                    actual: meta.len(),
                    expected,
                });
            }
        }
        let state = read_vmstate(&dir.join(VMSTATE_FILE))?;
        Ok(SnapshotReader {
            dir: dir.to_owned(),
            manifest,
            state,
        })
    }

    /// The snapshot directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The validated manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The `memory` file (map it with [`super::map_memory`]).
    pub fn memory_path(&self) -> PathBuf {
        self.dir.join(MEMORY_FILE)
    }

    /// The `vmstate` file.
    pub fn vmstate_path(&self) -> PathBuf {
        self.dir.join(VMSTATE_FILE)
    }

    /// The disk image, if the snapshot has one (clone it with
    /// [`super::clone_disk`]).
    pub fn disk_path(&self) -> Option<PathBuf> {
        self.manifest
            .files
            .contains_key(DISK_FILE)
            .then(|| self.dir.join(DISK_FILE))
    }

    /// The verified `vmstate` payload.
    pub fn state(&self) -> &[u8] {
        &self.state
    }

    /// Decodes the payload with [`super::decode_state`].
    pub fn decode_state<T: DeserializeOwned>(&self) -> Result<T, SnapshotError> {
        decode_state(&self.state)
    }
}
