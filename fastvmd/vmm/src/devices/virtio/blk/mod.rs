//! virtio-blk over a raw (sparse) disk file.
//!
//! [`Block`] serves one request queue synchronously: every QueueNotify pops
//! the available chains, executes them with positioned reads and writes on
//! the backing file (`request`), completes them in the used ring and raises
//! the VRING interrupt. Bad requests complete with an error status; nothing
//! the guest puts in a queue can make the monitor panic. Snapshot support
//! ([`BlockState`], [`Block::restore`]) is in `persist`.

mod device;
mod persist;
mod request;
#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;

pub use device::Block;
pub use persist::BlockState;

/// Size of a virtio-blk sector, the unit of capacity and request offsets.
pub const SECTOR_SIZE: u64 = 512;
/// Largest (and default) size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Length of the device ID returned by VIRTIO_BLK_T_GET_ID.
pub const ID_LEN: usize = 20;

/// Why a block device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The disk file could not be opened.
    #[error("opening {path}: {source}")]
    Open {
        /// The file that was opened.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The disk file's size could not be read.
    #[error("reading the size of {path}: {source}")]
    Metadata {
        /// The file that was inspected.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The path is not a regular file (block devices are not supported).
    #[error("{0} is not a regular file")]
    NotAFile(PathBuf),
    /// Restoring a snapshot onto a disk smaller than the one saved: the
    /// guest's filesystem may use sectors past the new end.
    #[error("disk {path} has {sectors} sectors, the snapshot needs at least {needed}")]
    TooSmall {
        /// The disk file given to restore.
        path: PathBuf,
        /// Its capacity in sectors.
        sectors: u64,
        /// The capacity saved in the snapshot, in sectors.
        needed: u64,
    },
}
