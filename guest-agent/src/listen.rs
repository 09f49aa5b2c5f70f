//! Listeners that hand each accepted connection to [`crate::session::serve`]
//! on its own thread: vsock inside the guest, a Unix socket for tests and
//! for running the agent on a host.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use crate::session::Options;

/// Pause before listening again after the listener failed (for example a
/// vsock transport reset after a snapshot restore).
const RELISTEN_DELAY: Duration = Duration::from_millis(20);

fn spawn_session<S: Read + Write + AsFd + Send + 'static>(stream: S, opts: Options) {
    let started = std::thread::Builder::new()
        .name("session".into())
        .spawn(move || {
            match crate::session::serve(stream, opts) {
                Ok(()) => {}
                // The host went away mid-reply: an ordinary end.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => eprintln!("guest-agent: connection ended: {e}"),
            }
        });
    if let Err(e) = started {
        eprintln!("guest-agent: cannot start a session thread: {e}");
    }
}

/// Serves connections on the Unix socket at `path` forever.
pub fn serve_unix(path: &Path, opts: Options) -> io::Result<()> {
    serve_listener(bind_unix(path)?, opts)
}

/// Binds the Unix socket at `path` (replacing a stale one).
pub fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

/// Serves connections on `listener` forever.
pub fn serve_listener(listener: UnixListener, opts: Options) -> io::Result<()> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => spawn_session(stream, opts),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A connected vsock socket.
#[derive(Debug)]
pub struct VsockStream(File);

impl Read for VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for VsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for VsockStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

fn cvt(rc: i32) -> io::Result<i32> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A vsock socket listening on `port` for any CID.
fn vsock_listener(port: u32) -> io::Result<OwnedFd> {
    // SAFETY: socket() takes plain integers and returns a new fd or -1.
    let fd =
        cvt(unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd was just created and is owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = port;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    // SAFETY: addr is a valid sockaddr_vm and the length is its size.
    cvt(unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    })?;
    // SAFETY: listen on a bound socket fd we own.
    cvt(unsafe { libc::listen(fd, 64) })?;
    Ok(sock)
}

/// Serves connections on vsock `port` forever, listening again whenever the
/// listener fails.
pub fn serve_vsock(port: u32, opts: Options) -> ! {
    let mut failures = 0u32;
    loop {
        let listener = match vsock_listener(port) {
            Ok(l) => l,
            Err(e) => {
                // Said once, then retried quietly: a guest without its vsock
                // device yet should not flood the console.
                if failures == 0 {
                    eprintln!("guest-agent: cannot listen on vsock port {port}: {e}; retrying");
                }
                failures = failures.saturating_add(1);
                std::thread::sleep(RELISTEN_DELAY);
                continue;
            }
        };
        failures = 0;
        loop {
            use std::os::fd::AsRawFd;
            // SAFETY: accept4 on our listening fd; no address is requested.
            let fd = unsafe {
                libc::accept4(
                    listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: accept4 returned a new fd that nothing else owns.
                let stream = unsafe { File::from_raw_fd(fd) };
                spawn_session(VsockStream(stream), opts);
                continue;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR | libc::ECONNABORTED | libc::ECONNRESET) => continue,
                _ => {
                    eprintln!("guest-agent: vsock accept failed ({err}); listening again");
                    break;
                }
            }
        }
        std::thread::sleep(RELISTEN_DELAY);
    }
}
