//! Snapshot files: everything a snapshot directory holds, and how it is
//! written and read back. No KVM here: the monitor pauses the VM and
//! collects vCPU/device state; this module stores it.
//!
//! A snapshot is ONE directory, written atomically by [`SnapshotWriter`]
//! (it appears whole under its final name, or not at all):
//!
//! | file            | content                                                  |
//! |-----------------|----------------------------------------------------------|
//! | `memory`        | guest RAM, sparse (see [`memory`]); region *i* is stored at the file offset equal to the summed sizes of regions `0..i` |
//! | `vmstate`       | the monitor's serialized state in a checked container ([`vmstate`]) |
//! | `disk`          | optional: a reflink or sparse copy of the VM's disk ([`disk`]) |
//! | `manifest.json` | [`Manifest`]: versions, host CPU fingerprint, sizes of the files above |
//!
//! Restore opens it with [`SnapshotReader::open`], which only reads the
//! manifest, `stat`s the files and reads/verifies `vmstate`; guest memory
//! is then mapped copy-on-write with [`map_memory`] (no copy, no read).

pub mod adopt;
pub mod dir;
pub mod disk;
pub mod manifest;
pub mod memory;
pub mod vmstate;

#[cfg(test)]
mod tests_dir;
#[cfg(test)]
mod tests_memory;

use std::io;
use std::path::PathBuf;

pub use dir::{SnapshotReader, SnapshotWriter};
pub use disk::{CloneKind, clone_disk, clone_disk_from, grow_disk, sparse_copy};
pub use manifest::{MANIFEST_FORMAT_VERSION, Manifest, cpu_fingerprint};
pub use memory::{MemoryWriteStats, map_memory, warm_page_cache, write_memory};
pub use vmstate::{
    VMSTATE_FORMAT_VERSION, decode_state, encode_state, read_vmstate, unwrap_vmstate, wrap_vmstate,
    write_vmstate,
};

/// Name of the guest memory file inside a snapshot directory.
pub const MEMORY_FILE: &str = "memory";
/// Name of the device/vCPU state file inside a snapshot directory.
pub const VMSTATE_FILE: &str = "vmstate";
/// Name of the (optional) disk image inside a snapshot directory.
pub const DISK_FILE: &str = "disk";
/// Name of the manifest inside a snapshot directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Why a snapshot could not be written, or why one is refused on restore.
///
/// Every message names the file (or path) and, for size problems, both
/// numbers, so the operator can see what is wrong without a debugger.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file-system operation failed (`op` says which, on which path).
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("create", "write", "fsync", ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The snapshot target directory already exists; snapshots never
    /// overwrite anything.
    #[error("snapshot directory {} already exists", path.display())]
    Exists {
        /// The existing path.
        path: PathBuf,
    },
    /// The snapshot target has no usable final component (e.g. `/` or `..`).
    #[error("snapshot directory {} has no usable name", path.display())]
    BadTarget {
        /// The refused path.
        path: PathBuf,
    },
    /// `manifest.json` is missing or not valid JSON of the expected shape.
    #[error("manifest {}: {reason}", path.display())]
    ManifestParse {
        /// Path of the manifest.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
    /// The manifest's format version is not the one this build writes.
    #[error("manifest format version {found} is not supported (this build reads {supported})")]
    ManifestVersion {
        /// Version in the file.
        found: u32,
        /// Version this build understands.
        supported: u32,
    },
    /// The snapshot was taken on a host whose CPU differs from this one;
    /// vCPU state would not be valid here.
    #[error("snapshot CPU fingerprint {snapshot} does not match this host ({host})")]
    CpuMismatch {
        /// Fingerprint recorded in the manifest.
        snapshot: String,
        /// This host's fingerprint.
        host: String,
    },
    /// A file the snapshot needs is not listed in the manifest.
    #[error("manifest does not list the required file {name}")]
    Unlisted {
        /// The required file name.
        name: String,
    },
    /// The manifest lists a file name that is not a plain name in the
    /// snapshot directory (e.g. contains `/` or is `..`).
    #[error("manifest lists an invalid file name {name:?}")]
    BadFileName {
        /// The refused name.
        name: String,
    },
    /// A file listed in the manifest does not exist.
    #[error("{name} is missing from the snapshot ({})", path.display())]
    MissingFile {
        /// The file name in the manifest.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A file's size differs from the manifest (truncated, or wrong file).
    #[error("{name} is {actual} bytes, manifest says {expected}")]
    FileSize {
        /// The file name in the manifest.
        name: String,
        /// Its size on disk.
        actual: u64,
        /// The size the manifest records.
        expected: u64,
    },
    /// The memory file does not match the memory layout asked for.
    #[error("memory file {} is {actual} bytes, the memory ranges need {expected}", path.display())]
    MemoryLayout {
        /// Path of the memory file.
        path: PathBuf,
        /// Its size on disk.
        actual: u64,
        /// Total size of the requested ranges.
        expected: u64,
    },
    /// Guest memory could not be mapped (mmap or region setup failed).
    #[error("cannot map {}: {reason}", path.display())]
    Map {
        /// Path of the memory file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// `vmstate` does not start with the `FVMSTATE` magic.
    #[error("{} is not a vmstate file (bad magic)", path.display())]
    StateMagic {
        /// Path of the state file.
        path: PathBuf,
    },
    /// `vmstate` was written by a format version this build cannot read.
    #[error("{} has vmstate format version {found}; this build reads version {supported}", path.display())]
    StateVersion {
        /// Path of the state file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Version this build understands.
        supported: u32,
    },
    /// `vmstate` is shorter (truncated) or longer than its header says.
    #[error("{} is {actual} bytes, its header says {expected}", path.display())]
    StateLength {
        /// Path of the state file.
        path: PathBuf,
        /// Actual size.
        actual: u64,
        /// Header size plus the payload length recorded in the header.
        expected: u64,
    },
    /// The `vmstate` payload does not match its CRC32 (corruption).
    #[error("{} checksum mismatch: header says {stored:#010x}, payload has {computed:#010x}", path.display())]
    StateChecksum {
        /// Path of the state file.
        path: PathBuf,
        /// CRC32 in the header.
        stored: u32,
        /// CRC32 of the payload as read.
        computed: u32,
    },
    /// The state could not be serialized or deserialized.
    #[error("vmstate payload: {0}")]
    StateCodec(String),
    /// Growing the disk was asked to make it smaller; data is never cut.
    #[error("disk {} is {size} bytes; refusing to shrink it to {requested} bytes", path.display())]
    DiskShrink {
        /// Path of the disk image.
        path: PathBuf,
        /// Its current size.
        size: u64,
        /// The requested size.
        requested: u64,
    },
}

impl SnapshotError {
    /// Wraps an I/O error with the operation and path it came from.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SnapshotError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
