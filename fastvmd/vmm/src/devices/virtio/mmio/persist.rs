//! Snapshot and restore of the virtio-mmio transport: its registers, the
//! driver's per-queue configuration, the ring state of the queues the device
//! was activated with, the interrupt status, and the device's own state.

use std::sync::Arc;

use virtio_queue::{Queue, QueueState, QueueT};

use super::{MmioTransport, QueueConfig};
use crate::devices::PersistError;
use crate::devices::virtio::{
    GuestMemory, Interrupt, SavedQueueState, VirtioDevice, VirtioDeviceState,
};

/// The driver-side configuration of one queue (QueueNum, QueueReady and the
/// three ring addresses as the driver wrote them).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueueConfigState {
    /// Largest size the device offers (QueueNumMax).
    pub max_size: u16,
    /// Size the driver chose (QueueNum).
    pub size: u16,
    /// QueueReady.
    pub ready: bool,
    /// Descriptor table address.
    pub desc: u64,
    /// Available (driver) ring address.
    pub driver: u64,
    /// Used (device) ring address.
    pub device: u64,
}

/// The saved state of one virtio-mmio transport and its device.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TransportState {
    /// Virtio device ID of the device behind the transport.
    pub device_type: u32,
    /// Device status register.
    pub status: u32,
    /// DeviceFeaturesSel.
    pub device_features_sel: u32,
    /// DriverFeaturesSel.
    pub driver_features_sel: u32,
    /// Feature bits the driver acknowledged.
    pub acked_features: u64,
    /// QueueSel.
    pub queue_sel: u32,
    /// The driver's configuration of every queue.
    pub queues: Vec<QueueConfigState>,
    /// Ring state (next_avail, next_used, ...) of every queue, taken from
    /// the device; empty unless `activated`.
    pub queue_states: Vec<SavedQueueState>,
    /// InterruptStatus.
    pub interrupt_status: u32,
    /// ConfigGeneration.
    pub config_generation: u32,
    /// The device was activated (DRIVER_OK accepted, no reset since).
    pub activated: bool,
    /// The device's own state.
    pub device: VirtioDeviceState,
}

impl From<&QueueConfig> for QueueConfigState {
    fn from(q: &QueueConfig) -> Self {
        QueueConfigState {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            desc: q.desc,
            driver: q.driver,
            device: q.device,
        }
    }
}

impl MmioTransport {
    /// Quiesces the device (see [`VirtioDevice::pause`]); call before
    /// [`save`](Self::save) and before writing guest memory out.
    pub fn pause_device(&mut self) {
        self.device.pause();
    }

    /// Ends [`pause_device`](Self::pause_device).
    pub fn resume_device(&mut self) {
        self.device.resume();
    }

    /// The transport's and the device's state. Consistent only while the
    /// device is paused and no vCPU runs.
    pub fn save(&self) -> TransportState {
        let queue_states = if self.activated {
            self.device
                .queue_states()
                .into_iter()
                .map(SavedQueueState::from)
                .collect()
        } else {
            Vec::new()
        };
        TransportState {
            device_type: self.device.device_type(),
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            acked_features: self.acked_features,
            queue_sel: self.queue_sel,
            queues: self.queues.iter().map(QueueConfigState::from).collect(),
            queue_states,
            interrupt_status: self.interrupt.status(),
            config_generation: self.config_generation,
            activated: self.activated,
            device: self.device.save(),
        }
    }

    /// A transport in `state` for `device`, which must already be restored
    /// from `state.device`. If the device was activated, it is activated
    /// again with queues rebuilt from their saved ring state (indices carry
    /// on, nothing is reset). InterruptStatus is restored without raising
    /// the IRQ (a pending IRQ is part of the restored irqchip).
    pub fn restore(
        mem: GuestMemory,
        mut device: Box<dyn VirtioDevice>,
        interrupt: Arc<Interrupt>,
        state: &TransportState,
    ) -> Result<MmioTransport, PersistError> {
        let kind = device.device_type();
        for saved in [state.device_type, state.device.device_type()] {
            if saved != kind {
                return Err(PersistError::DeviceMismatch {
                    saved,
                    device: kind,
                });
            }
        }
        let max_sizes = device.queue_max_sizes().to_vec();
        if state.queues.len() != max_sizes.len() {
            return Err(PersistError::QueueCount {
                saved: state.queues.len(),
                device: max_sizes.len(),
            });
        }
        let mut queues = Vec::with_capacity(max_sizes.len());
        for (index, (q, &max)) in state.queues.iter().zip(&max_sizes).enumerate() {
            if q.max_size != max {
                return Err(PersistError::QueueMaxSize {
                    index,
                    saved: q.max_size,
                    device: max,
                });
            }
            queues.push(QueueConfig {
                max_size: q.max_size,
                size: q.size,
                ready: q.ready,
                desc: q.desc,
                driver: q.driver,
                device: q.device,
            });
        }
        if state.activated {
            let rings = rebuild_queues(&mem, &state.queue_states, &max_sizes)?;
            device.activate(mem.clone(), rings, interrupt.clone(), state.acked_features)?;
        }
        interrupt.restore_status(state.interrupt_status);
        Ok(MmioTransport {
            mem,
            device,
            interrupt,
            status: state.status,
            device_features_sel: state.device_features_sel,
            driver_features_sel: state.driver_features_sel,
            acked_features: state.acked_features,
            queue_sel: state.queue_sel,
            queues,
            activated: state.activated,
            config_generation: state.config_generation,
        })
    }
}

/// Builds the activated queues from their saved ring state, validated by
/// virtio-queue and against guest memory.
fn rebuild_queues(
    mem: &GuestMemory,
    saved: &[SavedQueueState],
    max_sizes: &[u16],
) -> Result<Vec<Queue>, PersistError> {
    if saved.is_empty() {
        return Err(PersistError::MissingQueueState);
    }
    if saved.len() != max_sizes.len() {
        return Err(PersistError::QueueCount {
            saved: saved.len(),
            device: max_sizes.len(),
        });
    }
    let mut queues = Vec::with_capacity(saved.len());
    for (index, (s, &max)) in saved.iter().zip(max_sizes).enumerate() {
        if s.max_size != max {
            return Err(PersistError::QueueMaxSize {
                index,
                saved: s.max_size,
                device: max,
            });
        }
        let q = Queue::try_from(QueueState::from(*s))
            .map_err(|source| PersistError::Queue { index, source })?;
        if !q.is_valid(mem) {
            return Err(PersistError::InvalidQueue(index));
        }
        queues.push(q);
    }
    Ok(queues)
}

#[cfg(test)]
mod tests;
