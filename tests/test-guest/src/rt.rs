//! Freestanding runtime: the C memory functions compiler_builtins leaves to
//! libc on this target, the heap, and the panic handler.

use core::arch::asm;
use core::fmt::Write;
use core::panic::PanicInfo;

use linked_list_allocator::LockedHeap;

use crate::io;

/// The heap ends by here: the entry code maps only the first GiB of RAM.
const HEAP_LIMIT: u64 = 1 << 30;
/// Heap used when the e820 map does not describe the RAM after the image.
const HEAP_FALLBACK: u64 = 16 << 20;

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

unsafe extern "C" {
    /// End of the image's memory, .bss included (linker-defined).
    static _end: u8;
}

/// Gives the allocator the free RAM after the image, up to the end of its e820
/// RAM entry, below [`HEAP_LIMIT`]. Call once, first. Returns the heap size.
pub fn init_heap(zero_page: &[u8]) -> u64 {
    let start = (core::ptr::addr_of!(_end) as u64).next_multiple_of(4096);
    let end = test_guest::e820::ram_end_containing(zero_page, start)
        .unwrap_or(start + HEAP_FALLBACK)
        .min(HEAP_LIMIT);
    let size = end.saturating_sub(start);
    // SAFETY: called once at start-up; [start, end) is RAM after the image that the
    // monitor left free (e820), identity-mapped, and used by nothing else.
    unsafe { ALLOCATOR.lock().init(start as *mut u8, size as usize) };
    size
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let _ = writeln!(io::Serial, "test-guest panic: {info}");
    io::power_off()
}

/// # Safety
/// `dest` and `src` must be valid for `n` bytes and not overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid; rep movsb copies exactly n bytes.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// `dest` and `src` must be valid for `n` bytes; they may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // Forward copy is safe: dest is below src or the ranges are disjoint.
        // SAFETY: same contract as memcpy, overlap handled by copy direction.
        unsafe { memcpy(dest, src, n) };
    } else {
        // SAFETY: copy backwards from the last byte with DF set, then clear DF.
        unsafe {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") n => _, inout("rdi") dest.add(n - 1) => _,
                 inout("rsi") src.add(n - 1) => _, options(nostack));
        }
    }
    dest
}

/// # Safety
/// `dest` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range is valid; rep stosb fills exactly n bytes.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: i < n and the caller guarantees both ranges are valid.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// # Safety
/// `a` and `b` must be valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// Referenced by the prebuilt `alloc` (compiled with unwinding); never called,
/// since this binary aborts on panic.
#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume() -> ! {
    io::power_off()
}

/// Referenced by the prebuilt `alloc`'s unwind tables; never called either.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}
