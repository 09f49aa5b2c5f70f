//! Boot checks: read what the monitor left in memory the way Linux would and
//! print one `boot-check NAME ok ...` or `boot-check NAME FAIL reason` line each.

use alloc::string::String;
use core::slice;

use test_guest::{e820, mptable};

use crate::cpu;
use crate::println;

/// Offset of `hdr.cmd_line_ptr` (u32) in `boot_params`.
const CMD_LINE_PTR: usize = 0x228;
/// Offset of `hdr.cmdline_size` (u32) in `boot_params`.
const CMDLINE_SIZE: usize = 0x238;
/// Where the MP floating pointer is searched: the EBDA's first KiB, then the
/// whole area below 640 KiB the monitor may use.
const MP_SEARCH: [(usize, usize); 2] = [(0x9fc00, 0x400), (0x80000, 0x20000)];

unsafe extern "C" {
    /// First byte of the loaded image (linker-defined).
    static __ehdr_start: u8;
    /// End of the image's memory, .bss included (linker-defined).
    static _end: u8;
}

/// `len` bytes of guest-physical memory at `addr`.
///
/// # Safety
/// The range must be identity-mapped RAM that is not written while the slice lives.
unsafe fn phys(addr: usize, len: usize) -> &'static [u8] {
    // SAFETY: forwarded to the caller.
    unsafe { slice::from_raw_parts(addr as *const u8, len) }
}

/// Runs every check and returns the kernel command line.
pub fn run(zp: &[u8]) -> String {
    check_e820(zp);
    check_mptable();
    let cmdline = check_cmdline(zp);
    check_cpuid();
    cmdline
}

fn check_e820(zp: &[u8]) {
    let start = core::ptr::addr_of!(__ehdr_start) as u64;
    let end = core::ptr::addr_of!(_end) as u64;
    match e820::parse(zp).and_then(|entries| e820::check(&entries, start, end)) {
        Ok(s) => println!(
            "boot-check e820 ok entries={} ram_mib={}",
            s.entries,
            s.ram_bytes >> 20
        ),
        Err(e) => println!("boot-check e820 FAIL {e}"),
    }
}

fn check_mptable() {
    let found = MP_SEARCH.iter().find_map(|&(base, len)| {
        // SAFETY: low memory below 640 KiB is RAM in every layout the monitor builds.
        let region = unsafe { phys(base, len) };
        mptable::find_floating(region).map(|off| base + off)
    });
    let result = found
        .ok_or_else(|| String::from("no _MP_ floating pointer below 0xa0000"))
        .and_then(|fp| {
            // SAFETY: a floating pointer is 16 bytes and lies inside the searched RAM.
            mptable::check_floating(unsafe { phys(fp, 16) })
        })
        .and_then(|table| {
            let table = table as usize;
            if !(0x400..0x10_0000).contains(&table) {
                return Err(alloc::format!(
                    "config table at {table:#x} is outside low memory"
                ));
            }
            // SAFETY: the header is 44 bytes of low RAM.
            let header = unsafe { phys(table, mptable::CONFIG_HEADER_LEN) };
            let len = mptable::config_len(header).ok_or("no PCMP configuration table")?;
            // SAFETY: the announced length is at most 64 KiB of low RAM.
            mptable::check_config(unsafe { phys(table, len.max(mptable::CONFIG_HEADER_LEN)) })
        });
    match result {
        Ok(cpus) => println!("boot-check mptable ok cpus={cpus}"),
        Err(e) => println!("boot-check mptable FAIL {e}"),
    }
}

fn check_cmdline(zp: &[u8]) -> String {
    let u32_at = |o: usize| u32::from_le_bytes([zp[o], zp[o + 1], zp[o + 2], zp[o + 3]]);
    let ptr = u32_at(CMD_LINE_PTR) as usize;
    let max = match u32_at(CMDLINE_SIZE) as usize {
        0 => 4096,
        n => n.min(1 << 20),
    };
    if ptr == 0 {
        println!("boot-check cmdline FAIL cmd_line_ptr is 0");
        return String::new();
    }
    // SAFETY: the monitor wrote the command line at cmd_line_ptr: at most cmdline_size
    // bytes plus the terminating NUL (boot protocol: the size excludes the NUL).
    let raw = unsafe { phys(ptr, max + 1) };
    let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let line = String::from_utf8_lossy(&raw[..len]).into_owned();
    if len > max {
        println!("boot-check cmdline FAIL not NUL-terminated within {max} bytes");
    } else {
        println!("boot-check cmdline ok len={len}");
    }
    line
}

fn check_cpuid() {
    let (max_leaf, b, c, d) = cpu::cpuid(0);
    let vendor = cpu::signature([b, d, c]);
    let vendor = core::str::from_utf8(&vendor)
        .unwrap_or("?")
        .trim_end_matches('\0');
    let (hv_max, hb, hc, hd) = cpu::cpuid(cpu::HV_LEAF);
    let hv = cpu::signature([hb, hc, hd]);
    let tsc_khz = if hv_max >= cpu::TSC_LEAF {
        cpu::cpuid(cpu::TSC_LEAF).0
    } else {
        0
    };
    let problem = if max_leaf < 1 {
        Some(String::from("leaf 1 missing"))
    } else if hv.iter().all(|&x| x == 0) {
        Some(String::from("no hypervisor signature at 0x40000000"))
    } else if hv_max < cpu::TSC_LEAF {
        Some(alloc::format!(
            "leaf 0x40000000 EAX={hv_max:#x} < 0x40000010"
        ))
    } else if tsc_khz == 0 {
        Some(String::from("TSC frequency (leaf 0x40000010 EAX) is 0"))
    } else {
        None
    };
    match problem {
        None => {
            cpu::set_tsc_khz(u64::from(tsc_khz));
            println!("boot-check cpuid ok vendor={vendor} tsc_khz={tsc_khz}");
        }
        Some(p) => {
            let khz = cpu::calibrate_tsc_khz();
            cpu::set_tsc_khz(khz);
            println!("boot-check cpuid FAIL {p} (vendor={vendor}, PIT-calibrated tsc_khz={khz})");
        }
    }
}
