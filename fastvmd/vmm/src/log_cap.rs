//! The monitor's log (its stderr, `monitor.log`, opened by the daemon) is
//! capped: a write that would take it past the cap first truncates it to
//! nothing and notes how much was dropped, so the newest lines, which say
//! how the VM ended, are always kept, and a guest can never grow the file
//! past the cap whatever it makes the monitor say.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::Mutex;

/// Default cap of `monitor.log`.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 8 << 20;

struct State {
    max: u64,
    /// Bytes in the file, as far as this process knows.
    size: u64,
    dropped: u64,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Caps stderr at `max` bytes from now on (what it holds already counts).
pub fn install(max: u64) {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills the stat buffer it is given for an open fd.
    let size = if unsafe { libc::fstat(io::stderr().as_raw_fd(), stat.as_mut_ptr()) } == 0 {
        // SAFETY: fstat succeeded, so the buffer is initialised.
        let stat = unsafe { stat.assume_init() };
        // A pipe or terminal has no size that could grow on disk.
        if stat.st_mode & libc::S_IFMT == libc::S_IFREG {
            stat.st_size as u64
        } else {
            return;
        }
    } else {
        return;
    };
    *lock() = Some(State {
        max: max.max(256),
        size,
        dropped: 0,
    });
}

fn lock() -> std::sync::MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A writer to stderr that keeps the cap; what tracing writes through.
pub struct CappedStderr;

impl Write for CappedStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut guard = lock();
        let Some(state) = guard.as_mut() else {
            return io::stderr().write(buf);
        };
        let buf = &buf[..buf.len().min(state.max as usize / 2)];
        if state.size + buf.len() as u64 > state.max {
            state.dropped += state.size;
            let fd = io::stderr().as_raw_fd();
            // SAFETY: ftruncate of stderr, an open regular file.
            let emptied = unsafe { libc::ftruncate(fd, 0) } == 0;
            // SAFETY: lseek of the same file (it matters when stderr was
            // not opened for appending).
            if emptied && unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } == 0 {
                let note = format!(
                    "fastvmd vmm: monitor.log reached {} bytes and was emptied ({} bytes dropped so far)\n",
                    state.max, state.dropped
                );
                io::stderr().write_all(note.as_bytes())?;
                state.size = note.len() as u64;
            } else {
                // Not truncatable: say nothing more rather than grow.
                return Ok(buf.len());
            }
        }
        io::stderr().write_all(buf)?;
        state.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
