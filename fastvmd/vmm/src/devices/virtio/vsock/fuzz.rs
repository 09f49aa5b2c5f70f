//! The vsock device's queue processing driven by a hostile guest: the
//! fuzzer fills guest memory (descriptors, rings, packets) and picks the
//! order of what happens: the device taking TX, RX and event buffers, host
//! clients connecting and writing, host sockets becoming readable. It runs
//! the same [`Muxer`] calls as the device and its backend thread, on one
//! thread, so a finding replays.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use std::io::Write;
use vmm_sys_util::epoll::{ControlOperation, EpollEvent, EventSet};

use super::device::connect_without_waiting;
use super::muxer::{Muxer, TOKEN_KICK, TOKEN_LISTENER};
use super::queues::Queues;
use crate::devices::virtio::epoll_with_kick;
use crate::devices::virtio::fuzz_queues::{guest_memory, interrupt, queue};

/// Steps per input.
const MAX_OPS: usize = 64;
/// The guest port a host listener answers on (guest-initiated connects).
const HOST_PORT: u32 = 1024;

/// A directory for this process's sockets.
fn socket_dir() -> Option<&'static std::path::Path> {
    static DIR: OnceLock<Option<tempfile::TempDir>> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().ok())
        .as_ref()
        .map(|d| d.path())
}

/// Sockets of one run, removed at its end.
struct Paths(Vec<PathBuf>);

impl Drop for Paths {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The first 64 KiB of `data` are guest memory, then a byte per queue
/// size, then each 3 bytes are a step.
pub fn virtio_vsock(data: &[u8]) {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let Some(dir) = socket_dir() else { return };
    let uds = dir.join(format!("v{}.sock", RUN.fetch_add(1, Ordering::Relaxed)));
    let host_path = PathBuf::from(format!("{}_{HOST_PORT}", uds.display()));
    let _paths = Paths(vec![uds.clone(), host_path.clone()]);
    let (Ok(listener), Ok(host_listener)) =
        (UnixListener::bind(&uds), UnixListener::bind(&host_path))
    else {
        return;
    };
    if listener.set_nonblocking(true).is_err() || host_listener.set_nonblocking(true).is_err() {
        return;
    }
    let Ok((epoll, _kick)) = epoll_with_kick(TOKEN_KICK) else {
        return;
    };
    let listen_event = EpollEvent::new(EventSet::IN, TOKEN_LISTENER);
    if epoll
        .ctl(ControlOperation::Add, listener.as_raw_fd(), listen_event)
        .is_err()
    {
        return;
    }
    let epoll = Arc::new(epoll);
    let mut muxer = Muxer::new(3, uds.clone(), Arc::clone(&epoll), listener);

    let Some((mem, rest)) = guest_memory(data) else {
        return;
    };
    let (sizes, steps) = rest.split_at(rest.len().min(3));
    let size = |i: usize| sizes.get(i).map_or(16, |s| u16::from(*s));
    let (Some(rx), Some(tx), Some(evq), Some(interrupt)) = (
        queue(0, size(0)),
        queue(1, size(1)),
        queue(2, size(2)),
        interrupt(),
    ) else {
        return;
    };
    let mut q = Queues {
        mem,
        rx,
        tx,
        evq,
        interrupt,
    };
    let mut jobs = Vec::new();
    let mut host_streams: Vec<UnixStream> = Vec::new();
    let mut events = vec![EpollEvent::default(); 16];
    for step in steps.chunks_exact(3).take(MAX_OPS) {
        match step[0] % 6 {
            0 => {
                muxer.process_tx(&mut q, &mut jobs);
                for job in jobs.drain(..) {
                    let res = connect_without_waiting(&job.path);
                    muxer.finish_connect(job, res);
                }
            }
            1 => muxer.process_rx(&mut q),
            2 => muxer.process_evq(&mut q),
            // The host end of guest-initiated connections: taken, and
            // written to.
            3 => {
                while let Ok((stream, _)) = host_listener.accept() {
                    let _ = stream.set_nonblocking(true);
                    host_streams.push(stream);
                }
                for stream in &mut host_streams {
                    let _ = stream.write(&step[1..]);
                }
            }
            // A host client asks for a guest port (the hybrid handshake).
            4 => {
                if let Ok(mut client) = connect_without_waiting(&uds) {
                    let port = u32::from(u16::from_le_bytes([step[1], step[2]]));
                    let _ = writeln!(client, "CONNECT {port}");
                    host_streams.push(client);
                }
            }
            // What the backend thread does when epoll reports.
            _ => {
                let n = epoll.wait(0, &mut events).unwrap_or(0);
                for ev in &events[..n] {
                    match ev.data() {
                        TOKEN_KICK => {}
                        TOKEN_LISTENER => muxer.accept(),
                        token => muxer.handle_event(token, ev.event_set()),
                    }
                }
                muxer.check_timeouts(std::time::Instant::now());
            }
        }
        muxer.sync_interest();
    }
}
