//! Snapshot and restore of virtio-blk. The disk's contents and path are not
//! part of the state: the snapshot copies the disk, and a restored device
//! opens whatever (copy-on-write) disk file the clone was given.

use std::path::Path;

use super::{Block, BlockError, ID_LEN, SECTOR_SIZE};

/// The saved state of a block device (its queue is saved by the transport).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BlockState {
    /// Capacity the guest saw, in 512-byte sectors.
    pub capacity_sectors: u64,
    /// Whether the guest saw a read-only disk (VIRTIO_BLK_F_RO offered).
    pub read_only: bool,
    /// The device ID returned by GET_ID, NUL padded.
    pub id: [u8; ID_LEN],
}

impl Block {
    /// The device's configuration, for a snapshot.
    pub fn save_state(&self) -> BlockState {
        BlockState {
            capacity_sectors: self.capacity_sectors(),
            read_only: self.read_only(),
            id: *self.id(),
        }
    }

    /// A device over the disk at `path` with the saved ID and read-only
    /// flag, not activated (the transport re-activates it). The disk must be
    /// at least as large as the saved capacity; a larger disk is served at
    /// its own size (the guest sees it once it re-reads the configuration).
    pub fn restore(path: &Path, state: &BlockState) -> Result<Block, BlockError> {
        let mut block = Block::new(path, state.read_only)?;
        let sectors = block.capacity_sectors();
        if sectors < state.capacity_sectors {
            return Err(BlockError::TooSmall {
                path: path.to_owned(),
                sectors,
                needed: state.capacity_sectors,
            });
        }
        debug_assert_eq!(block.disk.capacity, sectors * SECTOR_SIZE);
        block.disk.id = state.id;
        Ok(block)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::devices::virtio::{VirtioDevice, VirtioDeviceState};

    fn disk(dir: &Path, name: &str, sectors: u64) -> std::path::PathBuf {
        let path = dir.join(name);
        fs::write(&path, vec![0u8; (sectors * SECTOR_SIZE) as usize]).unwrap();
        path
    }

    #[test]
    fn state_round_trips_and_keeps_the_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut block = Block::new(&disk(dir.path(), "root.img", 8), true).unwrap();
        block.set_id("vm-original");
        let state = block.save_state();
        assert_eq!(block.save(), VirtioDeviceState::Block(state.clone()));
        assert_eq!(state.capacity_sectors, 8);
        assert!(state.read_only);
        let json = serde_json::to_string(&state).unwrap();
        let back: BlockState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);

        let restored = Block::restore(&disk(dir.path(), "clone.img", 8), &back).unwrap();
        assert_eq!(restored.save_state(), state);
        assert_eq!(&restored.id()[..18], b"fastvm-vm-original");
        assert!(restored.queue_states().is_empty(), "not activated");
    }

    #[test]
    fn restore_refuses_a_smaller_disk() {
        let dir = tempfile::tempdir().unwrap();
        let state = Block::new(&disk(dir.path(), "root.img", 8), false)
            .unwrap()
            .save_state();
        let small = disk(dir.path(), "small.img", 7);
        match Block::restore(&small, &state) {
            Err(BlockError::TooSmall {
                path,
                sectors,
                needed,
            }) => {
                assert_eq!((path, sectors, needed), (small, 7, 8));
            }
            other => panic!("expected TooSmall, got {:?}", other.map(|b| b.save_state())),
        }
        let missing = Block::restore(&dir.path().join("nope"), &state);
        assert!(matches!(missing, Err(BlockError::Open { .. })));
    }

    #[test]
    fn restore_accepts_a_larger_disk_at_its_own_size() {
        let dir = tempfile::tempdir().unwrap();
        let state = Block::new(&disk(dir.path(), "root.img", 8), false)
            .unwrap()
            .save_state();
        let big = Block::restore(&disk(dir.path(), "big.img", 32), &state).unwrap();
        assert_eq!(big.capacity_sectors(), 32);
        let mut cap = [0u8; 8];
        big.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 32);
        assert_eq!(big.id(), &state.id);
    }
}
