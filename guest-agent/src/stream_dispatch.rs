//! The host's stream frames, as the connection's reader acts on them:
//! starts (`ExecStart`, `FileWrite`, `FileRead`, `Connect`), steering
//! (`Resize`, `Signal`, `StreamEnd`) and input bytes (`Data` on channel 0).
//! A frame for a stream that is not open (unknown, or ended while the
//! frame was on its way) is ignored.
//!
//! Input goes into the stream's bounded queue. When it is full the reader
//! waits for room, and meanwhile reads ahead ([`crate::inbox`]) so that a
//! `Signal` (a ^C for the command that does not read its stdin) and a `Ping`
//! still act at once; the wait ends when there is room, when the stream
//! closes (its bytes are then dropped) or when the host hangs up.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::time::Duration;

use fastvm_proto::agent::{Data, Frame, WindowSize};
use fastvm_proto::agent_stream::CHANNEL_IN;

use crate::inbox::Inbox;
use crate::stream_input::Push;
use crate::streams::StreamCtx;
use crate::{stream_exec, stream_file_read, stream_file_write, stream_forward};

/// How long the stalled reader waits for room before reading ahead again.
const STALL_WAIT: Duration = Duration::from_millis(20);

/// Acts on `frame` if it is a stream frame; gives it back otherwise.
pub fn dispatch(ctx: &StreamCtx, frame: Frame) -> io::Result<Option<Frame>> {
    match frame {
        Frame::ExecStart(start) => stream_exec::start(ctx, start)?,
        Frame::FileWrite { id, path, mode } => stream_file_write::start(ctx, id, path, mode)?,
        Frame::FileRead { id, path } => stream_file_read::start(ctx, id, path)?,
        Frame::Connect { id, port } => stream_forward::start(ctx, id, port)?,
        Frame::StreamEnd { id, channel } => {
            if channel == CHANNEL_IN
                && let Some(stream) = ctx.streams.get(id)
                && stream.end_input()
            {
                ctx.streams.remove(id);
            }
        }
        Frame::Resize { id, cols, rows } => {
            if let Some(stream) = ctx.streams.get(id) {
                stream.resize(WindowSize { cols, rows });
            }
        }
        Frame::Signal { id, signal } => send_signal(ctx, id, signal)?,
        other => return Ok(Some(other)),
    }
    Ok(None)
}

fn send_signal(ctx: &StreamCtx, id: u64, signal: i32) -> io::Result<()> {
    let Some(stream) = ctx.streams.get(id) else {
        return Ok(());
    };
    match stream.signal(signal) {
        Ok(()) => Ok(()),
        Err(message) => ctx.send(&Frame::Error {
            message: format!("stream {id}: {message}"),
        }),
    }
}

/// Acts on a frame read ahead of a stalled input if it must not wait:
/// a `Signal` for an open stream, a `Ping`.
pub fn act_now(ctx: &StreamCtx, frame: &Frame) -> io::Result<bool> {
    match frame {
        Frame::Ping { nonce } => {
            ctx.send(&Frame::Pong { nonce: *nonce })?;
            Ok(true)
        }
        Frame::Signal { id, signal } if ctx.streams.get(*id).is_some() => {
            send_signal(ctx, *id, *signal)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Hands the host's input `data` to its stream, waiting for room.
pub fn deliver<S: Read + AsFd>(
    ctx: &StreamCtx,
    data: Data,
    inbox: &mut Inbox<S>,
) -> io::Result<()> {
    if data.channel != CHANNEL_IN {
        return Ok(());
    }
    let Some(stream) = ctx.streams.get(data.id) else {
        return Ok(());
    };
    let Some(input) = stream.input() else {
        return Ok(());
    };
    let mut bytes = data.bytes;
    loop {
        match input.push(bytes) {
            Push::Queued | Push::Closed => return Ok(()),
            Push::Full(back) => bytes = back,
        }
        if inbox.host_closed() {
            return Ok(());
        }
        input.wait_room(STALL_WAIT);
        inbox.read_ahead(&mut |frame| act_now(ctx, frame))?;
    }
}
