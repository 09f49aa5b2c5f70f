//! `Connect`: a TCP connection from the host to a port on the guest's
//! loopback (127.0.0.1, then ::1), on threads of its own. Once `Connected`,
//! the host's bytes go to the socket (its `StreamEnd` shuts the socket's
//! write side) and the socket's bytes come back as data frames (its EOF is
//! `StreamEnd` on channel 1); the stream is over when both directions are,
//! and its id is free again from then on (whichever end came last).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fastvm_proto::agent::{DATA_CHUNK, Frame, StreamErrorKind};
use fastvm_proto::agent_stream::CHANNEL_OUT;

use crate::stream_input::{InputQueue, Pop};
use crate::streams::{Stream, StreamCtx};

/// How long a connection attempt to each loopback address may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A forward, as the connection steers it.
struct ForwardStream {
    input: Arc<InputQueue>,
    /// The socket once connected; `None` before, and after a hang-up.
    socket: Mutex<Option<TcpStream>>,
    hung_up: AtomicBool,
    ends: Mutex<Ends>,
}

/// Which directions have ended.
#[derive(Debug, Default)]
struct Ends {
    /// The host's `StreamEnd` on channel 0.
    host: bool,
    /// The service's EOF (`StreamEnd` on channel 1 sent).
    service: bool,
}

impl ForwardStream {
    fn ends(&self) -> std::sync::MutexGuard<'_, Ends> {
        self.ends.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Stream for ForwardStream {
    fn input(&self) -> Option<&InputQueue> {
        Some(&self.input)
    }

    fn end_input(&self) -> bool {
        let mut ends = self.ends();
        self.input.end();
        ends.host = true;
        ends.service
    }

    fn hang_up(&self) {
        let mut socket = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        self.hung_up.store(true, Ordering::SeqCst);
        self.input.close();
        if let Some(socket) = socket.take() {
            // Both threads see it at once: reads end, writes fail.
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

/// Opens forward stream `id` to `port`.
pub fn start(ctx: &StreamCtx, id: u64, port: u16) -> io::Result<()> {
    if let Err(e) = ctx.streams.check_room(id) {
        return ctx.send(&Frame::StreamError(e));
    }
    let stream = Arc::new(ForwardStream {
        input: Arc::new(InputQueue::new()),
        socket: Mutex::new(None),
        hung_up: AtomicBool::new(false),
        ends: Mutex::new(Ends::default()),
    });
    if let Err(e) = ctx.streams.insert(id, stream.clone()) {
        return ctx.send(&Frame::StreamError(e));
    }
    let thread_ctx = ctx.clone();
    let started = std::thread::Builder::new()
        .name("forward".into())
        .spawn(move || forward(&thread_ctx, id, port, &stream));
    if let Err(e) = started {
        return ctx.fail(
            id,
            StreamErrorKind::Failed,
            format!("cannot start a thread for the forward: {e}"),
        );
    }
    Ok(())
}

/// Whether a failed attempt means that nothing listens there.
fn nothing_there(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ConnectionRefused
        || matches!(
            e.raw_os_error(),
            Some(libc::EADDRNOTAVAIL | libc::ENETUNREACH | libc::EAFNOSUPPORT)
        )
}

/// Connects to `port` on the loopback, IPv4 first.
fn connect(port: u16) -> Result<TcpStream, (StreamErrorKind, String)> {
    let addrs = [
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    ];
    let mut other_error = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(socket) => return Ok(socket),
            Err(e) if nothing_there(&e) => {}
            Err(e) => other_error = Some(e),
        }
    }
    Err(match other_error {
        None => (
            StreamErrorKind::Invalid,
            format!("connection refused: nothing listens on port {port} in the guest"),
        ),
        Some(e) if e.kind() == io::ErrorKind::TimedOut => (
            StreamErrorKind::Failed,
            format!("connecting to port {port} in the guest timed out"),
        ),
        Some(e) => (
            StreamErrorKind::Failed,
            format!("cannot connect to port {port} in the guest: {e}"),
        ),
    })
}

fn forward(ctx: &StreamCtx, id: u64, port: u16, stream: &ForwardStream) {
    let socket = match connect(port) {
        Ok(socket) => socket,
        Err((kind, message)) => {
            let _ = ctx.fail(id, kind, message);
            return;
        }
    };
    let copies = (socket.try_clone(), socket.try_clone());
    let (Ok(for_hang_up), Ok(to_service)) = copies else {
        let _ = ctx.fail(
            id,
            StreamErrorKind::Failed,
            "cannot duplicate the connection's socket".into(),
        );
        return;
    };
    {
        let mut slot = stream.socket.lock().unwrap_or_else(|p| p.into_inner());
        if stream.hung_up.load(Ordering::SeqCst) {
            return;
        }
        *slot = Some(for_hang_up);
    }
    if ctx.send(&Frame::Connected { id }).is_err() {
        stream.hang_up();
        return;
    }
    let input = stream.input.clone();
    let writer = std::thread::Builder::new()
        .name("forward-in".into())
        .spawn(move || feed(&input, to_service));
    if let Err(e) = writer {
        stream.hang_up();
        let message = format!("cannot start a thread for the forward: {e}");
        let _ = ctx.fail(id, StreamErrorKind::Failed, message);
        return;
    }
    pump_out(ctx, id, port, socket, stream);
    if let Ok(writer) = writer {
        let _ = writer.join();
    }
}

/// The host's bytes to the service, until the host's end (the socket's
/// write side is shut) or the close.
fn feed(input: &InputQueue, mut socket: TcpStream) {
    loop {
        match input.pop() {
            Pop::Bytes(bytes) => {
                if socket.write_all(&bytes).is_err() {
                    // The service stopped reading: the rest is dropped.
                    input.close();
                    return;
                }
            }
            Pop::End => {
                let _ = socket.shutdown(Shutdown::Write);
                return;
            }
            Pop::Closed => return,
        }
    }
}

/// The service's bytes to the host, then `StreamEnd` (or `StreamError`).
fn pump_out(ctx: &StreamCtx, id: u64, port: u16, mut socket: TcpStream, stream: &ForwardStream) {
    let mut buf = vec![0u8; DATA_CHUNK];
    loop {
        let n = match socket.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if stream.hung_up.load(Ordering::SeqCst) {
                    return;
                }
                stream.input.close();
                let _ = socket.shutdown(Shutdown::Both);
                let message = format!("the connection to port {port} in the guest failed: {e}");
                let _ = ctx.fail(id, StreamErrorKind::Failed, message);
                return;
            }
        };
        if stream.hung_up.load(Ordering::SeqCst) {
            return;
        }
        if n == 0 {
            let over = {
                let mut ends = stream.ends();
                ends.service = true;
                ends.host
            };
            if over {
                ctx.streams.remove(id);
            }
            let end = Frame::StreamEnd {
                id,
                channel: CHANNEL_OUT,
            };
            if ctx.send(&end).is_err() {
                stream.hang_up();
            }
            return;
        }
        if ctx.data(id, CHANNEL_OUT, &buf[..n]).is_err() {
            stream.hang_up();
            return;
        }
    }
}
