//! virtio-mmio transport, version 2 ("modern"), per virtio 1.1 §4.2.2.
//!
//! [`MmioTransport`] owns the register window of one device: feature
//! negotiation, the device status state machine and the per-queue
//! configuration. When the driver sets DRIVER_OK it builds
//! [`virtio_queue::Queue`]s from that configuration and hands them to
//! [`VirtioDevice::activate`]; afterwards QueueNotify writes go to
//! [`VirtioDevice::queue_notify`]. Accesses the spec does not allow (wrong
//! width, unknown offsets, writes in the wrong state) are logged and ignored.
//! Snapshot support ([`TransportState`], [`MmioTransport::restore`]) is in
//! `persist`.

mod persist;

use std::sync::Arc;

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};

use super::{ActivateError, GuestMemory, Interrupt, VirtioDevice};
use crate::devices::BusDevice;

pub use persist::{QueueConfigState, TransportState};

/// "virt" in little endian, the MagicValue register.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// The transport version this implementation speaks (modern).
pub const MMIO_VERSION: u32 = 2;
/// VendorID reported to the guest ("FMVF" read as little endian bytes).
pub const VENDOR_ID: u32 = 0x4656_4d46;

/// The driver-side configuration of one virtqueue, kept until activation.
#[derive(Clone, Copy, Debug)]
struct QueueConfig {
    max_size: u16,
    size: u16,
    ready: bool,
    desc: u64,
    driver: u64,
    device: u64,
}

impl QueueConfig {
    fn new(max_size: u16) -> Self {
        QueueConfig {
            max_size,
            size: max_size,
            ready: false,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }

    /// Builds a queue from this configuration, validated against `mem`.
    fn build(&self, index: usize, mem: &GuestMemory, event_idx: bool) -> Option<Queue> {
        let mut q = Queue::new(self.max_size).ok()?;
        q.try_set_size(self.size).ok()?;
        q.try_set_desc_table_address(vm_memory::GuestAddress(self.desc))
            .ok()?;
        q.try_set_avail_ring_address(vm_memory::GuestAddress(self.driver))
            .ok()?;
        q.try_set_used_ring_address(vm_memory::GuestAddress(self.device))
            .ok()?;
        q.set_event_idx(event_idx);
        q.set_ready(true);
        if !q.is_valid(mem) {
            crate::guest_warn!(
                "virtio-mmio: queue not valid in guest memory",
                queue = index,
                "virtio-mmio: queue not valid in guest memory"
            );
            return None;
        }
        Some(q)
    }
}

/// Sets bits `hi` (true) or `lo` (false) half of `word` to `value`.
fn set_half(word: &mut u64, hi: bool, value: u32) {
    if hi {
        *word = (*word & 0xffff_ffff) | (u64::from(value) << 32);
    } else {
        *word = (*word & !0xffff_ffff) | u64::from(value);
    }
}

/// One virtio device behind a virtio-mmio register window.
pub struct MmioTransport {
    mem: GuestMemory,
    device: Box<dyn VirtioDevice>,
    interrupt: Arc<Interrupt>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    queues: Vec<QueueConfig>,
    activated: bool,
    config_generation: u32,
}

impl MmioTransport {
    /// A transport for `device`, accessing guest memory `mem` and signalling
    /// through `interrupt`.
    pub fn new(mem: GuestMemory, device: Box<dyn VirtioDevice>, interrupt: Arc<Interrupt>) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&m| QueueConfig::new(m))
            .collect();
        MmioTransport {
            mem,
            device,
            interrupt,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            queues,
            activated: false,
            config_generation: 0,
        }
    }

    /// The device behind this transport.
    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    /// The device behind this transport, mutably.
    pub fn device_mut(&mut self) -> &mut dyn VirtioDevice {
        self.device.as_mut()
    }

    /// The interrupt line of this device.
    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    /// The device status register (virtio 1.1 §2.1).
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the device was activated (DRIVER_OK accepted) and not reset.
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// The feature bits the driver acknowledged.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Tells the driver that the device's configuration changed (a disk
    /// restored larger than the one saved): ConfigGeneration moves on and
    /// the configuration-change interrupt is raised, so the driver reads
    /// the configuration again.
    pub fn notify_config_change(&mut self) -> std::io::Result<()> {
        self.config_generation = self.config_generation.wrapping_add(1);
        self.interrupt.trigger(Interrupt::CONFIG)
    }

    fn has(&self, bits: u32) -> bool {
        self.status & bits == bits
    }

    fn selected_queue(&mut self) -> Option<&mut QueueConfig> {
        let sel = self.queue_sel as usize;
        let q = self.queues.get_mut(sel);
        if q.is_none() {
            crate::guest_warn!(
                "virtio-mmio: QueueSel out of range",
                sel,
                "virtio-mmio: QueueSel out of range"
            );
        }
        q
    }

    fn reset(&mut self) {
        if self.activated {
            self.device.reset();
        }
        self.activated = false;
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.acked_features = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            *q = QueueConfig::new(q.max_size);
        }
        self.interrupt.ack(u32::MAX);
    }

    fn activate(&mut self) -> Result<(), ActivateError> {
        let event_idx = self.acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, cfg) in self.queues.iter().enumerate() {
            if !cfg.ready {
                return Err(ActivateError::QueueCount {
                    expected: self.queues.len(),
                    got: i,
                });
            }
            queues.push(
                cfg.build(i, &self.mem, event_idx)
                    .ok_or(ActivateError::InvalidQueue(i))?,
            );
        }
        self.device.activate(
            self.mem.clone(),
            queues,
            self.interrupt.clone(),
            self.acked_features,
        )
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if value & self.status != self.status {
            crate::guest_warn!(
                "virtio-mmio: status bits cleared",
                old = self.status,
                value,
                "virtio-mmio: status bits cleared"
            );
            return;
        }
        let new = value & !self.status;
        if new & VIRTIO_CONFIG_S_FAILED != 0 {
            self.status |= VIRTIO_CONFIG_S_FAILED;
            return;
        }
        let prereq = [
            (VIRTIO_CONFIG_S_ACKNOWLEDGE, 0),
            (VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_ACKNOWLEDGE),
            (VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_DRIVER),
            (VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK),
        ];
        for (bit, needs) in prereq {
            if new & bit != 0 && value & needs != needs {
                crate::guest_warn!(
                    "virtio-mmio: status bit",
                    value,
                    "virtio-mmio: status bit {bit:#x} set out of order"
                );
                return;
            }
        }
        if new & !(prereq.iter().fold(0, |a, (b, _)| a | b)) != 0 {
            crate::guest_warn!(
                "virtio-mmio: unknown status bits",
                value,
                "virtio-mmio: unknown status bits"
            );
            return;
        }
        if new & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            let offered = self.device.features();
            if self.acked_features & !offered != 0
                || self.acked_features & (1 << VIRTIO_F_VERSION_1) == 0
            {
                crate::guest_warn!(
                    "virtio-mmio: features refused",
                    acked = self.acked_features,
                    offered,
                    "virtio-mmio: features refused"
                );
                self.status |= new & !(VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
                return;
            }
        }
        self.status = value;
        if new & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            match self.activate() {
                Ok(()) => self.activated = true,
                Err(e) => {
                    crate::guest_warn!(
                        "virtio-mmio: activation failed",
                        device = self.device.device_type(),
                        "virtio-mmio: activation failed: {e}"
                    );
                    self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
                    if let Err(e) = self.interrupt.trigger(Interrupt::CONFIG) {
                        crate::guest_warn!("virtio-mmio: interrupt", "virtio-mmio: interrupt: {e}");
                    }
                }
            }
        }
    }

    fn read_reg(&mut self, offset: u32) -> Option<u32> {
        let q = self.queues.get(self.queue_sel as usize);
        Some(match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MMIO_MAGIC,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => q.map_or(0, |q| u32::from(q.max_size)),
            VIRTIO_MMIO_QUEUE_READY => q.map_or(0, |q| u32::from(q.ready)),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt.status(),
            VIRTIO_MMIO_STATUS => self.status,
            VIRTIO_MMIO_SHM_LEN_LOW | VIRTIO_MMIO_SHM_LEN_HIGH => u32::MAX,
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            _ => return None,
        })
    }

    fn write_reg(&mut self, offset: u32, v: u32) -> bool {
        let features_phase = self.has(VIRTIO_CONFIG_S_DRIVER)
            && !self.has(VIRTIO_CONFIG_S_FEATURES_OK)
            && !self.has(VIRTIO_CONFIG_S_FAILED);
        let queue_phase = self.has(VIRTIO_CONFIG_S_FEATURES_OK)
            && !self.has(VIRTIO_CONFIG_S_DRIVER_OK)
            && !self.has(VIRTIO_CONFIG_S_FAILED);
        // A driver stops using a queue by writing 0 to QueueReady at any
        // time (and reading it back), then may clear its settings
        // (virtio 1.1, 4.2.2.2); virtio-drivers does this when it drops a device.
        let selected_stopped = self.selected_queue().is_some_and(|q| !q.ready);
        let queue_writable =
            queue_phase || (self.has(VIRTIO_CONFIG_S_DRIVER_OK) && selected_stopped);
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES if features_phase => match self.driver_features_sel {
                0 => set_half(&mut self.acked_features, false, v),
                1 => set_half(&mut self.acked_features, true, v),
                _ if v == 0 => {}
                _ => return false,
            },
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = v,
            VIRTIO_MMIO_QUEUE_NUM if queue_writable => {
                if let Some(q) = self.selected_queue() {
                    q.size = u16::try_from(v).unwrap_or(0);
                }
            }
            VIRTIO_MMIO_QUEUE_READY if queue_phase || v == 0 => {
                if let Some(q) = self.selected_queue() {
                    q.ready = v == 1;
                }
            }
            VIRTIO_MMIO_QUEUE_DESC_LOW
            | VIRTIO_MMIO_QUEUE_DESC_HIGH
            | VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | VIRTIO_MMIO_QUEUE_USED_LOW
            | VIRTIO_MMIO_QUEUE_USED_HIGH
                if queue_writable =>
            {
                let hi = offset & 4 != 0;
                if let Some(q) = self.selected_queue() {
                    if q.ready {
                        crate::guest_warn!(
                            "virtio-mmio: address write to a ready queue",
                            "virtio-mmio: address write to a ready queue"
                        );
                        return true;
                    }
                    let word = match offset & !4 {
                        VIRTIO_MMIO_QUEUE_DESC_LOW => &mut q.desc,
                        VIRTIO_MMIO_QUEUE_AVAIL_LOW => &mut q.driver,
                        _ => &mut q.device,
                    };
                    set_half(word, hi, v);
                }
            }
            VIRTIO_MMIO_QUEUE_NOTIFY => {
                if !self.activated {
                    crate::guest_warn!(
                        "virtio-mmio: QueueNotify before activation",
                        "virtio-mmio: QueueNotify before activation"
                    );
                } else {
                    match u16::try_from(v) {
                        Ok(idx) if usize::from(idx) < self.queues.len() => {
                            self.device.queue_notify(idx)
                        }
                        _ => crate::guest_warn!(
                            "virtio-mmio: QueueNotify for unknown queue",
                            v,
                            "virtio-mmio: QueueNotify for unknown queue"
                        ),
                    }
                }
            }
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt.ack(v),
            VIRTIO_MMIO_STATUS => self.write_status(v),
            VIRTIO_MMIO_SHM_SEL => {}
            _ => return false,
        }
        true
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            data.fill(0);
            self.device
                .read_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        }
        let value = match (u32::try_from(offset), data.len()) {
            (Ok(off), 4) if off % 4 == 0 => self.read_reg(off),
            _ => None,
        };
        match value {
            Some(v) => data.copy_from_slice(&v.to_le_bytes()),
            None => {
                crate::guest_warn!(
                    "virtio-mmio: bad read",
                    offset,
                    len = data.len(),
                    "virtio-mmio: bad read"
                );
                data.fill(0);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            self.device
                .write_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        }
        let ok = match (u32::try_from(offset), <[u8; 4]>::try_from(data)) {
            (Ok(off), Ok(bytes)) if off % 4 == 0 => self.write_reg(off, u32::from_le_bytes(bytes)),
            _ => false,
        };
        if !ok {
            crate::guest_warn!(
                "virtio-mmio: write ignored",
                offset,
                len = data.len(),
                status = self.status,
                "virtio-mmio: write ignored"
            );
        }
    }
}

#[cfg(test)]
mod tests;
