//! Port I/O from CPL 3 (IOPL is 3): the 8250 console, power off and reboot.

use core::arch::asm;
use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

/// Base port of the 8250 UART (COM1).
const COM1: u16 = 0x3f8;
/// Line status register offset; bit 0 = data ready, bit 5 = THR empty.
const LSR: u16 = 5;
/// Port of the monitor's power-off device; a 16-bit write of 0x2000 powers off.
const POWEROFF_PORT: u16 = 0x604;
/// i8042 command port; 0xFE pulses the reset line.
const I8042_CMD: u16 = 0x64;

/// Reads one byte from `port`.
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: port I/O at IOPL 3 has no memory effects; the monitor handles the exit.
    unsafe {
        asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Writes one byte to `port`.
pub fn outb(port: u16, v: u8) {
    // SAFETY: port I/O at IOPL 3 has no memory effects; the monitor handles the exit.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    };
}

/// Writes `bytes` to `port` with one `rep outsb`.
pub fn outsb(port: u16, bytes: &[u8]) {
    // SAFETY: reads `bytes.len()` bytes from a live slice and writes them to
    // the port; the direction flag is clear (the ABI guarantees it).
    unsafe {
        asm!(
            "rep outsb",
            in("dx") port,
            inout("rsi") bytes.as_ptr() => _,
            inout("rcx") bytes.len() => _,
            options(nostack, preserves_flags, readonly)
        )
    };
}

/// Writes one 16-bit word to `port`.
pub fn outw(port: u16, v: u16) {
    // SAFETY: port I/O at IOPL 3 has no memory effects; the monitor handles the exit.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") v, options(nomem, nostack, preserves_flags))
    };
}

/// The monitor's idle port (a CPL 3 guest cannot `hlt`): the monitor stops
/// running this vCPU until an interrupt or console input arrives, or the
/// time is up. Monitors without it return at once (reads give all ones).
const IDLE_PORT: u16 = 0x610;

/// Gives the host core back for at most `micros` µs.
pub fn idle(micros: u32) {
    // SAFETY: port I/O at IOPL 3 has no memory effects; the monitor handles the exit.
    unsafe {
        asm!("out dx, eax", in("dx") IDLE_PORT, in("eax") micros, options(nomem, nostack, preserves_flags))
    };
}

/// Gives the host core back until something happens (at most the monitor's
/// limit, 100 ms); returns the monitor's epoch, which changes when the VM
/// is a restored clone running under a new monitor.
pub fn idle_until_event() -> u32 {
    let epoch: u32;
    // SAFETY: port I/O at IOPL 3 has no memory effects; the monitor handles the exit.
    unsafe {
        asm!("in eax, dx", in("dx") IDLE_PORT, out("eax") epoch, options(nomem, nostack, preserves_flags))
    };
    epoch
}

/// FIFO control register offset; 0x07 enables and clears both FIFOs.
const FCR: u16 = 2;
/// Depth of the 16550 transmit FIFO.
const TX_FIFO: u8 = 16;

/// Bytes that may still go into the transmit FIFO without checking LSR.
static TX_ROOM: AtomicU8 = AtomicU8::new(0);

/// The serial console. Writes are polled; nothing is buffered in the guest.
#[derive(Debug, Clone, Copy)]
pub struct Serial;

impl Serial {
    /// Polled mode: no UART interrupts, 8N1, FIFOs on.
    pub fn init() {
        outb(COM1 + 1, 0x00);
        outb(COM1 + 3, 0x03);
        outb(COM1 + FCR, 0x07);
    }

    /// Waits until the transmitter is empty (bounded), so a FIFO's worth
    /// of bytes may follow.
    fn wait_transmitter() {
        for _ in 0..100_000 {
            if inb(COM1 + LSR) & 0x20 != 0 {
                break;
            }
        }
    }

    /// Sends one byte, waiting for an empty transmitter once per FIFO's worth.
    pub fn put(b: u8) {
        Self::write_bytes(&[b]);
    }

    /// Sends bytes, a FIFO's worth at a time with one string I/O
    /// instruction (`rep outsb`): every port access is a VM exit, and a string
    /// write is a single one.
    pub fn write_bytes(bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let mut room = TX_ROOM.load(Ordering::Relaxed);
            if room == 0 {
                Self::wait_transmitter();
                room = TX_FIFO;
            }
            let n = rest.len().min(usize::from(room));
            outsb(COM1, &rest[..n]);
            TX_ROOM.store(room - n as u8, Ordering::Relaxed);
            rest = &rest[n..];
        }
    }

    /// A received byte, if one is waiting.
    pub fn try_get() -> Option<u8> {
        (inb(COM1 + LSR) & 0x01 != 0).then(|| inb(COM1))
    }
}

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        Serial::write_bytes(s.as_bytes());
        Ok(())
    }
}

/// Prints to the serial console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::io::Serial, $($arg)*);
    }};
}

/// Powers the VM off; falls back to an i8042 reset, then spins.
pub fn power_off() -> ! {
    outw(POWEROFF_PORT, 0x2000);
    outb(I8042_CMD, 0xfe);
    loop {
        core::hint::spin_loop();
    }
}

/// Executes an invalid instruction: the exception handler reports the fault
/// on the console and triple-faults, which the host sees as a guest crash.
pub fn crash() -> ! {
    // SAFETY: ud2 only raises #UD; control never returns here.
    unsafe { asm!("ud2", options(noreturn, nomem, nostack)) }
}
