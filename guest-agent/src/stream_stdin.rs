//! A streaming exec's stdin: a thread of its own takes the host's bytes
//! from the stream's input queue and writes them to the command (a pipe, or
//! the terminal's master), so a command that does not read its stdin stalls
//! only this thread. Writes never block for long: the descriptor is
//! non-blocking and the thread gives up as soon as the stream is closed.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use crate::stream_input::{InputQueue, Pop};

/// How often a write waiting for the command rechecks the stream.
const WRITE_WAIT_MS: i32 = 100;

/// What the host's end of input does.
#[derive(Debug, Clone, Copy)]
pub enum AtEnd {
    /// Close the pipe: the command reads EOF.
    Close,
    /// Type this character (the terminal's EOF, ^D).
    Type(u8),
}

/// Makes `fd` non-blocking (for its whole open file description).
pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl F_GETFL/F_SETFL only read and set the flags of `fd`.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Feeds `queue` into `target` on a thread of its own.
pub fn spawn(queue: Arc<InputQueue>, target: OwnedFd, at_end: AtEnd) -> io::Result<()> {
    set_nonblocking(&target)?;
    std::thread::Builder::new()
        .name("exec-stdin".into())
        .spawn(move || feed(&queue, File::from(target), at_end))?;
    Ok(())
}

fn feed(queue: &InputQueue, mut target: File, at_end: AtEnd) {
    loop {
        match queue.pop() {
            Pop::Bytes(bytes) => {
                if write_all(&mut target, &bytes, queue).is_err() {
                    // The command closed its stdin or is gone: the rest of
                    // the host's bytes are dropped.
                    queue.close();
                    return;
                }
            }
            Pop::End => {
                if let AtEnd::Type(c) = at_end {
                    let _ = write_all(&mut target, &[c], queue);
                }
                return;
            }
            Pop::Closed => return,
        }
    }
}

fn write_all(target: &mut File, mut bytes: &[u8], queue: &InputQueue) -> io::Result<()> {
    while !bytes.is_empty() {
        match target.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if queue.is_closed() {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
                let mut pfd = libc::pollfd {
                    fd: target.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: `pfd` is one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, WRITE_WAIT_MS) };
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_input::Push;
    use std::io::Read;
    use std::time::{Duration, Instant};

    #[test]
    fn a_reader_that_never_reads_does_not_hold_the_thread_past_the_close() {
        let (read_end, write_end) = std::os::unix::net::UnixStream::pair().unwrap();
        let queue = Arc::new(InputQueue::new());
        spawn(queue.clone(), write_end.into(), AtEnd::Close).unwrap();
        // More than the socket holds: the writer waits for a reader that
        // never comes, and the queue fills up behind it.
        let mut full_since = None;
        while full_since.is_none_or(|t: Instant| t.elapsed() < Duration::from_millis(200)) {
            match queue.push(vec![0; 64 << 10]) {
                Push::Full(_) => {
                    full_since.get_or_insert_with(Instant::now);
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => full_since = None,
            }
        }
        queue.close();
        // Once the thread gives up, the pipe's write end is closed.
        let mut reader = read_end;
        let mut buf = vec![0; 1 << 20];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(Instant::now() < deadline, "the writer never gave up");
            if reader.read(&mut buf).unwrap() == 0 {
                break;
            }
        }
    }
}
