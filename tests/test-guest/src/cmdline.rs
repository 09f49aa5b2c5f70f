//! Kernel command line parsing: the `virtio_mmio.device=` entries the monitor
//! uses to announce its virtio-mmio devices, exactly as Linux reads them.

use alloc::vec::Vec;

/// One `virtio_mmio.device=<size>@<base>:<irq>[:<id>]` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDevice {
    /// Size of the register window in bytes.
    pub size: u64,
    /// Guest-physical base address of the window.
    pub base: u64,
    /// Interrupt line (unused: the test guest polls).
    pub irq: u32,
}

/// Every well-formed `virtio_mmio.device=` entry of `cmdline`, in order.
pub fn virtio_mmio_devices(cmdline: &str) -> Vec<MmioDevice> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|word| word.strip_prefix("virtio_mmio.device="))
        .filter_map(parse_device)
        .collect()
}

/// Parses `<size>@<base>:<irq>[:<id>]`.
pub fn parse_device(spec: &str) -> Option<MmioDevice> {
    let (size, rest) = spec.split_once('@')?;
    let mut parts = rest.split(':');
    let base = parse_u64(parts.next()?)?;
    let irq = u32::try_from(parse_u64(parts.next()?)?).ok()?;
    let size = parse_size(size)?;
    if size == 0 {
        return None;
    }
    Some(MmioDevice { size, base, irq })
}

/// A number with an optional `K`, `M` or `G` suffix (binary units), as
/// Linux's `memparse` reads it.
pub fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    parse_u64(digits)?.checked_mul(1u64 << shift)
}

/// A decimal number, or hexadecimal with a `0x` prefix.
pub fn parse_u64(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else {
        s.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_device_and_skips_the_rest() {
        let line = "console=ttyS0 reboot=k virtio_mmio.device=4K@0xd0000000:5 \
                    panic=1 virtio_mmio.device=4K@0xd0001000:6:3 virtio_mmio.device=bad";
        assert_eq!(
            virtio_mmio_devices(line),
            [
                MmioDevice {
                    size: 4096,
                    base: 0xd000_0000,
                    irq: 5
                },
                MmioDevice {
                    size: 4096,
                    base: 0xd000_1000,
                    irq: 6
                },
            ]
        );
    }

    #[test]
    fn sizes_and_numbers() {
        assert_eq!(parse_size("4K"), Some(4096));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("0x200"), Some(512));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_u64("0xD0000000"), Some(0xd000_0000));
        assert_eq!(parse_u64("12"), Some(12));
        assert_eq!(parse_u64("x"), None);
        assert_eq!(parse_device("0K@0x1:1"), None);
        assert_eq!(parse_device("4K@0x1"), None);
    }
}
