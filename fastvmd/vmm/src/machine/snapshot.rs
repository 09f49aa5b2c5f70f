//! Writing a snapshot of a running machine: pause the vCPUs, quiesce the
//! devices, save KVM and device state, guest memory and the disk, resume,
//! then make the directory durable and put it in place.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::Machine;
use crate::bus::lock;
use crate::control::{RunState, SnapshotInfo};
use crate::devices::serial::SerialDeviceState;
use crate::devices::system::{I8042State, PowerPortState};
use crate::devices::virtio::mmio::TransportState;
use crate::kvm_state::vcpu::VcpuState;
use crate::kvm_state::vm::VmState;
use crate::snapshot::{
    CloneKind, MEMORY_FILE, Manifest, SnapshotWriter, clone_disk_from, encode_state,
    warm_page_cache, write_memory, write_vmstate,
};

/// One virtio device slot: where it sits and its transport state.
#[derive(Debug, Serialize, Deserialize)]
pub struct VirtioSlotState {
    pub base: u64,
    pub irq: u32,
    pub transport: TransportState,
}

/// Everything in `vmstate`.
#[derive(Debug, Serialize, Deserialize)]
pub struct MachineState {
    pub vcpus: Vec<VcpuState>,
    pub vm: VmState,
    pub serial: SerialDeviceState,
    pub i8042: I8042State,
    pub power: PowerPortState,
    pub virtio: Vec<VirtioSlotState>,
}

/// What was written while the VM was paused; the rest happens after resume.
struct Written {
    writer: SnapshotWriter,
    memory_bytes: u64,
    disk_copy: Option<CloneKind>,
}

impl Machine {
    fn save_state(&self) -> Result<MachineState, String> {
        let mut vcpus = Vec::with_capacity(self.vcpu_fds.len());
        for fd in &self.vcpu_fds {
            vcpus.push(VcpuState::save(&lock(fd), &self.msr_indices).map_err(|e| e.to_string())?);
        }
        Ok(MachineState {
            vcpus,
            vm: VmState::save(&self.vm).map_err(|e| e.to_string())?,
            serial: lock(&self.serial).save(),
            i8042: lock(&self.i8042).save(),
            power: lock(&self.power).save(),
            virtio: self
                .virtio
                .iter()
                .map(|slot| VirtioSlotState {
                    base: slot.base,
                    irq: slot.irq,
                    transport: lock(&slot.transport).save(),
                })
                .collect(),
        })
    }

    /// The part that needs the VM still: state, memory, disk.
    fn write_paused(&self, dir: &Path) -> Result<Written, String> {
        let start = Instant::now();
        let writer = SnapshotWriter::begin(dir).map_err(|e| e.to_string())?;
        let state = self.save_state()?;
        let payload = encode_state(&state).map_err(|e| e.to_string())?;
        write_vmstate(&writer.vmstate_path(), &payload).map_err(|e| e.to_string())?;
        tracing::debug!("snapshot: state saved at {:?}", start.elapsed());
        let memory = write_memory(&self.mem, &writer.memory_path()).map_err(|e| e.to_string())?;
        tracing::debug!(
            "snapshot: memory written at {:?} ({memory:?})",
            start.elapsed()
        );
        let disk_copy = match &self.disk_file {
            Some(disk) => Some(
                clone_disk_from(disk, &writer.disk_path())
                    .map_err(|e| format!("copy the disk: {e}"))?,
            ),
            None => None,
        };
        Ok(Written {
            writer,
            memory_bytes: memory.bytes_written,
            disk_copy,
        })
    }

    /// Takes a snapshot into the directory `name` inside the VM directory
    /// (the jail writes nowhere else; its starter moves the result); resumes
    /// afterwards when the VM was running and `resume` is set.
    pub fn take_snapshot(&self, name: &str, resume: bool) -> Result<SnapshotInfo, String> {
        crate::control::check_snapshot_name(name)?;
        let dir = Path::new(name);
        let _only_one = self
            .snapshot_lock
            .try_lock()
            .map_err(|_| "another snapshot of this VM is in progress".to_string())?;
        let start = Instant::now();
        let was_running = match self.vcpus.state() {
            RunState::Running => true,
            RunState::Paused => false,
            RunState::Stopping => return Err("the VM is stopping".into()),
        };
        if was_running {
            self.vcpus.pause()?;
        }
        tracing::debug!("snapshot: vCPUs paused at {:?}", start.elapsed());
        for slot in &self.virtio {
            lock(&slot.transport).pause_device();
        }
        let written = self.write_paused(dir);
        for slot in &self.virtio {
            lock(&slot.transport).resume_device();
        }
        let paused = start.elapsed();
        if was_running && resume {
            self.vcpus.resume()?;
        }
        let written = written?;
        let manifest = Manifest::for_host(
            self.memory_mib,
            u32::from(self.vcpu_count),
            &self.cmdline,
            &self.kernel,
        );
        let final_dir = written.writer.commit(manifest).map_err(|e| e.to_string())?;
        warm_page_cache(&final_dir.join(MEMORY_FILE));
        let (disk_bytes, disk_copy) = match written.disk_copy {
            Some(CloneKind::Reflink) => (0, "reflink"),
            Some(CloneKind::Sparse { bytes_copied }) => (bytes_copied, "sparse copy"),
            None => (0, "none"),
        };
        tracing::info!(
            "snapshot {} in {:?} (paused {paused:?}), memory {} bytes, disk {disk_copy}",
            final_dir.display(),
            start.elapsed(),
            written.memory_bytes
        );
        Ok(SnapshotInfo {
            dir: final_dir,
            duration_us: start.elapsed().as_micros() as u64,
            paused_us: paused.as_micros() as u64,
            memory_bytes: written.memory_bytes,
            disk_bytes,
            disk_copy: disk_copy.into(),
        })
    }
}
