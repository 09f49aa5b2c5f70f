//! Guest memory: anonymous private mappings (touched lazily, so an idle
//! guest costs little host RAM), registered with KVM slot by slot.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::{VmmError, layout};

/// Guest RAM ranges for `size` bytes, as vm-memory wants them.
pub fn ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    layout::ram_ranges(size)
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect()
}

/// Maps `size` bytes of anonymous guest RAM and registers it with the VM.
pub fn create(vm: &VmFd, size: u64) -> Result<GuestMemoryMmap, VmmError> {
    let mem = GuestMemoryMmap::<()>::from_ranges(&ranges(size))
        .map_err(|e| VmmError::Memory(format!("cannot map {} MiB: {e}", size >> 20)))?;
    register(vm, &mem)?;
    Ok(mem)
}

/// Registers every region of `mem` with the VM, one slot each.
pub fn register(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), VmmError> {
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|e| VmmError::Memory(e.to_string()))?;
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
            flags: 0,
        };
        // SAFETY: the region describes a mapping owned by `mem`, which the
        // caller keeps alive for as long as the VM exists.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| VmmError::Kvm(format!("register guest memory: {e}")))?;
    }
    Ok(())
}
