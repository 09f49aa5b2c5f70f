//! One host connection, over any byte stream: the agent sends `Ready`, then
//! answers `Ping` with `Pong`, `Exec` with `ExecResult`, and `SetClock` and
//! `SetNetwork` with `Pong` (after setting the wall clock or the network;
//! only as PID 1, see [`Options`]) until the host closes the connection. The vsock and
//! Unix-socket listeners only accept and hand streams here.
//!
//! Each `Exec` runs on a thread of its own (at most [`MAX_RUNNING_EXECS`]
//! per connection), so one connection carries several at once and frames
//! keep being answered meanwhile; a result goes out, with its exec's id,
//! when its command ends. Streams (execs with live output, files, forwards:
//! `fastvm_proto::agent_stream`) are served by [`crate::stream_dispatch`]
//! and stopped when the host hangs up. Every frame leaves whole, through
//! one writer.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use fastvm_proto::agent::{
    self, ExecRequest, ExecResult, Frame, FrameError, Ready, STREAMS_VERSION,
};

use crate::inbox::{Inbox, Next};
use crate::network::GuestNetwork;
use crate::output::shorten;
use crate::stream_dispatch;
use crate::streams::{StreamCtx, Streams};

/// Commands one connection may have running at once; an `Exec` past it is
/// answered at once with exit code 126 and the reason on stderr.
pub const MAX_RUNNING_EXECS: usize = 64;

/// The connection's write side, shared by the session, its execs and its
/// streams.
pub type Writer = Arc<Mutex<File>>;

/// Name and version announced in `Ready`.
pub const AGENT_NAME: &str = concat!("guest-agent ", env!("CARGO_PKG_VERSION"));

/// What a session may do besides exec.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Obey `SetClock`. Only as PID 1 of the guest: anywhere else the clock
    /// is the host's own (time namespaces do not cover the wall clock).
    pub set_clock: bool,
    /// Obey `SetNetwork` on this device. Only as PID 1 (of the guest, or of a
    /// network namespace of its own).
    pub network_device: Option<&'static str>,
}

fn set_network(
    opts: Options,
    mac: &str,
    ip6: &str,
    gw6: &str,
    ip4: Option<&str>,
    gw4: Option<&str>,
) -> Result<(), String> {
    let Some(dev) = opts.network_device else {
        return Err("this agent does not configure the network (not PID 1)".into());
    };
    let mut net = GuestNetwork::parse(Some(mac), ip6, gw6)?;
    net.ipv4 = crate::network::Ipv4Net::parse(ip4, gw4)?;
    net.apply(dev)
}

/// A `timespec` for `unix_ms` milliseconds after the epoch.
pub fn timespec_of(unix_ms: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (unix_ms / 1000) as libc::time_t,
        tv_nsec: ((unix_ms % 1000) * 1_000_000) as libc::c_long,
    }
}

fn set_clock(opts: Options, unix_ms: u64) -> Result<(), String> {
    if !opts.set_clock {
        return Err("this agent does not set the clock (not the guest's PID 1)".into());
    }
    let ts = timespec_of(unix_ms);
    // SAFETY: clock_settime reads one valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(format!(
            "cannot set the clock: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Serves one connection until the host closes it or an I/O error. Execs
/// still running then see the hang-up themselves and stop their commands;
/// the connection's streams are stopped here.
pub fn serve<S: Read + Write + AsFd>(stream: S, opts: Options) -> io::Result<()> {
    let writer: Writer = Arc::new(Mutex::new(File::from(stream.as_fd().try_clone_to_owned()?)));
    let ctx = StreamCtx::new(writer.clone());
    let _hang_up = HangUpOnDrop(ctx.streams.clone());
    let running = Arc::new(AtomicUsize::new(0));
    send(
        &writer,
        &Frame::Ready(Ready {
            version: STREAMS_VERSION,
            agent: AGENT_NAME.into(),
        }),
    )?;
    let mut inbox = Inbox::new(stream);
    loop {
        let frame = match inbox.next_frame()? {
            Next::Frame(frame) => frame,
            Next::Closed => return Ok(()),
            Next::Bad(e) if e.in_step() => {
                // A frame this agent does not know (from a newer host, say):
                // say so and go on with the next.
                send(&writer, &error_frame(&e))?;
                continue;
            }
            Next::Bad(e) => {
                // The stream is out of step: say why and close.
                let _ = send(&writer, &error_frame(&e));
                return Ok(());
            }
        };
        let frame = match frame {
            Frame::Data(data) => {
                stream_dispatch::deliver(&ctx, data, &mut inbox)?;
                continue;
            }
            other => match stream_dispatch::dispatch(&ctx, other)? {
                Some(frame) => frame,
                None => continue,
            },
        };
        match frame {
            Frame::Ping { nonce } => send(&writer, &Frame::Pong { nonce })?,
            Frame::SetClock { nonce, unix_ms } => match set_clock(opts, unix_ms) {
                Ok(()) => send(&writer, &Frame::Pong { nonce })?,
                Err(message) => send(&writer, &Frame::Error { message })?,
            },
            Frame::SetNetwork {
                nonce,
                mac,
                ip6,
                gw6,
                ip4,
                gw4,
            } => match set_network(opts, &mac, &ip6, &gw6, ip4.as_deref(), gw4.as_deref()) {
                Ok(()) => send(&writer, &Frame::Pong { nonce })?,
                Err(message) => send(&writer, &Frame::Error { message })?,
            },
            Frame::Exec(req) => start_exec(req, inbox.stream(), &writer, &running)?,
            other => send(
                &writer,
                &Frame::Error {
                    message: format!("unexpected frame from the host: {}", other.describe()),
                },
            )?,
        }
    }
}

/// Stops the connection's streams however [`serve`] ends.
struct HangUpOnDrop(Arc<Streams>);

impl Drop for HangUpOnDrop {
    fn drop(&mut self) {
        self.0.hang_up_all();
    }
}

/// Runs `req` on a thread of its own, which sends its result; refuses it
/// (exit code 126) when the connection has [`MAX_RUNNING_EXECS`] running.
fn start_exec<S: AsFd>(
    req: ExecRequest,
    stream: &S,
    writer: &Writer,
    running: &Arc<AtomicUsize>,
) -> io::Result<()> {
    if running.fetch_add(1, Ordering::SeqCst) >= MAX_RUNNING_EXECS {
        running.fetch_sub(1, Ordering::SeqCst);
        let why = format!("{MAX_RUNNING_EXECS} commands are already running on this connection");
        return send(writer, &refused(req.id, &why));
    }
    // Its own handle on the connection, to see the host hang up.
    let hangup = stream.as_fd().try_clone_to_owned()?;
    let (writer_for_exec, running_for_exec) = (writer.clone(), running.clone());
    let id = req.id;
    let started = std::thread::Builder::new()
        .name("exec".into())
        .spawn(move || {
            // `None`: the host hung up; the command was killed.
            if let Some(result) = crate::exec::run(&req, Some(hangup.as_fd())) {
                let _ = send(&writer_for_exec, &Frame::ExecResult(fit(result)));
            }
            running_for_exec.fetch_sub(1, Ordering::SeqCst);
        });
    if let Err(e) = started {
        running.fetch_sub(1, Ordering::SeqCst);
        let why = format!("cannot start a thread for the command: {e}");
        return send(writer, &refused(id, &why));
    }
    Ok(())
}

/// The result of exec `id` not run, for `why` (exit code 126, as a shell
/// answers a command it cannot execute).
fn refused(id: u64, why: &str) -> Frame {
    Frame::ExecResult(ExecResult {
        id,
        exit_code: 126,
        stderr: format!("guest-agent: {why}\n"),
        ..ExecResult::default()
    })
}

fn error_frame(e: &FrameError) -> Frame {
    Frame::Error {
        message: e.to_string(),
    }
}

/// Sends one whole frame (frames from several threads never interleave).
pub fn send(writer: &Writer, frame: &Frame) -> io::Result<()> {
    let bytes = agent::encode(frame).map_err(|e| io::Error::other(e.to_string()))?;
    let mut file = writer.lock().unwrap_or_else(|e| e.into_inner());
    file.write_all(&bytes)
}

/// Shrinks the longer output until the result fits in one frame: text with
/// replacement or escaped control characters can be several times longer
/// as JSON than the bytes the caps counted.
fn fit(mut result: ExecResult) -> ExecResult {
    loop {
        match agent::encode(&Frame::ExecResult(result.clone())) {
            Err(FrameError::TooLarge(_)) => {}
            _ => return result,
        }
        let out_longer = result.stdout.len() >= result.stderr.len();
        let (text, flag) = if out_longer {
            (&mut result.stdout, &mut result.stdout_truncated)
        } else {
            (&mut result.stderr, &mut result.stderr_truncated)
        };
        let half = text.len() / 2;
        shorten(text, half);
        *flag = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespec_splits_milliseconds() {
        let ts = timespec_of(1_700_000_123_456);
        assert_eq!((ts.tv_sec, ts.tv_nsec), (1_700_000_123, 456_000_000));
        let ts = timespec_of(999);
        assert_eq!((ts.tv_sec, ts.tv_nsec), (0, 999_000_000));
    }

    #[test]
    fn the_clock_is_left_alone_outside_the_guest() {
        let err = set_clock(Options::default(), 0).unwrap_err();
        assert!(err.contains("PID 1"), "{err}");
    }
}
