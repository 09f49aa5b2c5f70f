//! CPUID and time: the TSC, scaled by the frequency the monitor publishes in
//! CPUID leaf 0x4000_0010 (EAX, kHz).

use core::arch::x86_64::{__cpuid, _rdtsc};
use core::sync::atomic::{AtomicU64, Ordering};

/// Leaf with the hypervisor signature and the highest hypervisor leaf.
pub const HV_LEAF: u32 = 0x4000_0000;
/// Leaf whose EAX is the TSC frequency in kHz.
pub const TSC_LEAF: u32 = 0x4000_0010;

static TSC_KHZ: AtomicU64 = AtomicU64::new(1_000_000);

/// Leaves read at CPL 0 by the entry code, in `cpuid_cache` order.
const CACHED_LEAVES: [u32; 4] = [0, 1, HV_LEAF, TSC_LEAF];

unsafe extern "C" {
    /// `(eax, ebx, ecx, edx)` of each of [`CACHED_LEAVES`], filled at entry.
    static cpuid_cache: [[u32; 4]; 4];
}

/// Registers `(eax, ebx, ecx, edx)` of a CPUID leaf (subleaf 0) as the
/// monitor configured it: the leaves the entry code read at CPL 0 come from
/// its cache; others run CPUID here (at CPL 3 PVM may report host values).
pub fn cpuid(leaf: u32) -> (u32, u32, u32, u32) {
    if let Some(i) = CACHED_LEAVES.iter().position(|l| *l == leaf) {
        // SAFETY: written once by the entry code before any Rust runs, never
        // written again, so reading it is a plain read of initialised memory.
        let r = unsafe { cpuid_cache[i] };
        return (r[0], r[1], r[2], r[3]);
    }
    let r = __cpuid(leaf);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// Twelve signature bytes from three registers, as text.
pub fn signature(regs: [u32; 3]) -> [u8; 12] {
    let mut out = [0u8; 12];
    for (i, r) in regs.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&r.to_le_bytes());
    }
    out
}

/// Sets the TSC frequency used by [`ms_between`].
pub fn set_tsc_khz(khz: u64) {
    TSC_KHZ.store(khz.max(1), Ordering::Relaxed);
}

/// The current TSC.
pub fn now() -> u64 {
    // SAFETY: rdtsc has no side effects; CR4.TSD is clear so it works at CPL 3.
    unsafe { _rdtsc() }
}

/// TSC ticks in `ms` milliseconds.
pub fn ticks(ms: u64) -> u64 {
    ms.saturating_mul(TSC_KHZ.load(Ordering::Relaxed))
}

/// Whole milliseconds from `start` to `end`.
pub fn ms_between(start: u64, end: u64) -> u64 {
    end.saturating_sub(start) / TSC_KHZ.load(Ordering::Relaxed)
}

/// Whole microseconds from now until the TSC reaches `deadline` (0 when it
/// has), saturated to `u32`.
pub fn micros_until(deadline: u64) -> u32 {
    let ticks = deadline.saturating_sub(now());
    let micros = ticks.saturating_mul(1000) / TSC_KHZ.load(Ordering::Relaxed);
    u32::try_from(micros).unwrap_or(u32::MAX)
}

/// Measures the TSC against PIT channel 2 over ~10 ms, as Linux does when no
/// better source exists. Falls back to 1 GHz if the PIT does not count.
pub fn calibrate_tsc_khz() -> u64 {
    use crate::io::{inb, outb};
    const PIT_HZ: u64 = 1_193_182;
    const MS: u64 = 10;
    let count = (PIT_HZ * MS / 1000) as u16;
    // Gate channel 2 on, speaker off; mode 0, binary, lobyte/hibyte.
    outb(0x61, (inb(0x61) & !0x02) | 0x01);
    outb(0x43, 0xb0);
    outb(0x42, count as u8);
    outb(0x42, (count >> 8) as u8);
    let start = now();
    // OUT2 (port 0x61 bit 5) goes high when the count reaches zero.
    let mut polls = 0u32;
    while inb(0x61) & 0x20 == 0 {
        polls += 1;
        if polls > 5_000_000 {
            return 1_000_000;
        }
    }
    let khz = (now() - start) / MS;
    if khz == 0 { 1_000_000 } else { khz }
}
