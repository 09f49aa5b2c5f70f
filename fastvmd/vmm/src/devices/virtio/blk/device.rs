//! The virtio-blk device: configuration, features and queue processing.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Arc;

use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::{Queue, QueueState, QueueT};

use super::request::{Disk, process};
use super::{BlockError, ID_LEN, QUEUE_SIZE, SECTOR_SIZE};
use crate::devices::virtio::{
    ActivateError, GuestMemory, Interrupt, VirtioDevice, VirtioDeviceState, read_config_bytes,
    take_queues,
};

/// Length of the configuration space served: capacity, size_max, seg_max.
const CONFIG_LEN: usize = 16;
/// Prefix of the device ID.
const ID_PREFIX: &str = "fastvm-";

/// The queue and memory of an activated device.
struct Active {
    mem: GuestMemory,
    queue: Queue,
    interrupt: Arc<Interrupt>,
}

/// A virtio-blk device over a raw disk file.
pub struct Block {
    pub(super) disk: Disk,
    config: [u8; CONFIG_LEN],
    active: Option<Active>,
    /// Paused for a snapshot: notifications wait in `pending_notify`.
    paused: bool,
    /// A QueueNotify arrived while paused.
    pending_notify: bool,
}

impl Block {
    /// Opens the raw disk at `path`; its capacity is the file size rounded
    /// down to whole sectors. The device ID is "fastvm-" followed by the file
    /// name (the parent directory's name when the file is called `disk`).
    pub fn new(path: &Path, read_only: bool) -> Result<Block, BlockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| BlockError::Open {
                path: path.to_owned(),
                source,
            })?;
        let meta = file.metadata().map_err(|source| BlockError::Metadata {
            path: path.to_owned(),
            source,
        })?;
        if !meta.is_file() {
            return Err(BlockError::NotAFile(path.to_owned()));
        }
        let capacity = meta.len() / SECTOR_SIZE * SECTOR_SIZE;
        let name = match (path.file_stem(), path.parent().and_then(Path::file_name)) {
            (Some(stem), Some(dir)) if stem == "disk" => dir.to_string_lossy(),
            (Some(stem), _) => stem.to_string_lossy(),
            (None, _) => "disk".into(),
        };
        let mut block = Block {
            disk: Disk {
                file: Arc::new(file),
                read_only,
                capacity,
                id: [0; ID_LEN],
            },
            config: [0; CONFIG_LEN],
            active: None,
            paused: false,
            pending_notify: false,
        };
        block.set_id(&name);
        block.config[..8].copy_from_slice(&(capacity / SECTOR_SIZE).to_le_bytes());
        // size_max (bytes 8..12) stays 0: VIRTIO_BLK_F_SIZE_MAX is not offered.
        let seg_max = u32::from(QUEUE_SIZE) - 2;
        block.config[12..16].copy_from_slice(&seg_max.to_le_bytes());
        Ok(block)
    }

    /// Sets the device ID to "fastvm-" + `id`, cut to 20 bytes.
    pub fn set_id(&mut self, id: &str) {
        let full = format!("{ID_PREFIX}{id}");
        let n = full.len().min(ID_LEN);
        self.disk.id = [0; ID_LEN];
        self.disk.id[..n].copy_from_slice(&full.as_bytes()[..n]);
    }

    /// The device ID returned by GET_ID (NUL padded to 20 bytes).
    pub fn id(&self) -> &[u8; ID_LEN] {
        &self.disk.id
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.disk.capacity / SECTOR_SIZE
    }

    /// Whether the guest sees a read-only disk.
    pub fn read_only(&self) -> bool {
        self.disk.read_only
    }

    /// Writes the disk file's data and metadata to stable storage.
    pub fn flush(&self) -> io::Result<()> {
        self.disk.file.sync_all()
    }

    /// The backing file, for callers that must flush it once the device is
    /// boxed behind a transport (before a snapshot).
    pub fn file(&self) -> Arc<File> {
        self.disk.file.clone()
    }

    /// Completes every available request of the queue.
    fn process_queue(&mut self) {
        let Some(active) = self.active.as_mut() else {
            crate::guest_warn!(
                "virtio-blk: notified before activation",
                "virtio-blk: notified before activation"
            );
            return;
        };
        let Active {
            mem,
            queue,
            interrupt,
        } = active;
        let mut used = false;
        loop {
            if let Err(e) = queue.disable_notification(mem) {
                crate::guest_warn!(
                    "virtio-blk: disabling notifications",
                    "virtio-blk: disabling notifications: {e}"
                );
            }
            let mut popped = false;
            while let Some(chain) = queue.pop_descriptor_chain(&*mem) {
                popped = true;
                let head = chain.head_index();
                let len = process(chain, mem, &self.disk);
                match queue.add_used(mem, head, len) {
                    Ok(()) => used = true,
                    Err(e) => crate::guest_warn!(
                        "virtio-blk: adding used entry",
                        "virtio-blk: adding used entry: {e}"
                    ),
                }
            }
            match queue.enable_notification(mem) {
                // More arrived meanwhile; but a ring that yields nothing
                // (a bogus avail index) must not spin forever.
                Ok(true) if popped => continue,
                Ok(_) => break,
                Err(e) => {
                    crate::guest_warn!(
                        "virtio-blk: enabling notifications",
                        "virtio-blk: enabling notifications: {e}"
                    );
                    break;
                }
            }
        }
        let notify = queue.needs_notification(mem).unwrap_or_else(|e| {
            crate::guest_warn!(
                "virtio-blk: needs_notification",
                "virtio-blk: needs_notification: {e}"
            );
            true
        });
        if used && notify {
            if let Err(e) = interrupt.trigger(Interrupt::VRING) {
                crate::guest_warn!(
                    "virtio-blk: raising the interrupt",
                    "virtio-blk: raising the interrupt: {e}"
                );
            }
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        let mut f =
            (1u64 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_BLK_F_FLUSH) | (1 << VIRTIO_BLK_F_SEG_MAX);
        if self.disk.read_only {
            f |= 1 << VIRTIO_BLK_F_RO;
        }
        f
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        _acked_features: u64,
    ) -> Result<(), ActivateError> {
        let [queue] = take_queues(&mem, queues)?;
        self.active = Some(Active {
            mem,
            queue,
            interrupt,
        });
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) {
        if index != 0 {
            crate::guest_warn!(
                "virtio-blk: notify for unknown queue",
                index,
                "virtio-blk: notify for unknown queue"
            );
            return;
        }
        if self.paused {
            self.pending_notify = true;
            return;
        }
        self.process_queue();
    }

    fn reset(&mut self) {
        self.active = None;
        self.pending_notify = false;
    }

    /// Requests run synchronously inside `queue_notify` on the vCPU thread,
    /// so nothing is in flight here; a notify that still arrives while paused
    /// is deferred to `resume`. Pausing also syncs the disk file, so a
    /// snapshot taken now sees every completed write.
    fn pause(&mut self) {
        self.paused = true;
        if let Err(e) = self.flush() {
            tracing::warn!("virtio-blk: flushing the disk on pause: {e}");
        }
    }

    fn resume(&mut self) {
        self.paused = false;
        if std::mem::take(&mut self.pending_notify) {
            self.process_queue();
        }
    }

    fn save(&self) -> VirtioDeviceState {
        VirtioDeviceState::Block(self.save_state())
    }

    fn queue_states(&self) -> Vec<QueueState> {
        self.active.iter().map(|a| a.queue.state()).collect()
    }
}
