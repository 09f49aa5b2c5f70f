//! `FileRead`: a file of the guest sent out on a stream, on a thread of
//! its own: `FileInfo` (its size and mode when opened), its bytes in data
//! frames of at most `DATA_CHUNK` as they are read (never held whole, sent
//! at the host's pace: a blocked write is the backpressure), then
//! `StreamEnd`. Only regular files: a directory, a FIFO or a device is
//! `invalid`.
//!
//! The read stops at the size announced: a file that grows meanwhile (a
//! log being written) comes out as it was when opened, as `tar` copies
//! it. A file that reads as more than its size of 0 (`/proc`, `/sys`) is
//! `invalid`, with a hint to read it with a command instead: its length is
//! not known before it is read.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fastvm_proto::agent::{DATA_CHUNK, Frame, StreamErrorKind};
use fastvm_proto::agent_stream::CHANNEL_OUT;

use crate::stream_files::{Failure, checked_path, io_failure};
use crate::streams::{Stream, StreamCtx, stream_error};

/// A file being read, as the connection steers it.
struct FileReadStream {
    hung_up: AtomicBool,
}

impl Stream for FileReadStream {
    fn hang_up(&self) {
        self.hung_up.store(true, Ordering::SeqCst);
    }
}

/// Opens file-read stream `id` of `path`.
pub fn start(ctx: &StreamCtx, id: u64, path: String) -> io::Result<()> {
    if let Err(e) = ctx.streams.check_room(id) {
        return ctx.send(&Frame::StreamError(e));
    }
    if let Err((kind, message)) = checked_path(&path) {
        return ctx.send(&Frame::StreamError(stream_error(id, kind, message)));
    }
    let stream = Arc::new(FileReadStream {
        hung_up: AtomicBool::new(false),
    });
    if let Err(e) = ctx.streams.insert(id, stream.clone()) {
        return ctx.send(&Frame::StreamError(e));
    }
    let thread_ctx = ctx.clone();
    let started = std::thread::Builder::new()
        .name("file-read".into())
        .spawn(move || send_file(&thread_ctx, id, &path, &stream));
    if let Err(e) = started {
        return ctx.fail(
            id,
            StreamErrorKind::Failed,
            format!("cannot start a thread to read the file: {e}"),
        );
    }
    Ok(())
}

/// Opens `path` if it is a regular file: the file, its size and mode.
fn open(path: &str) -> Result<(File, u64, u32), Failure> {
    let failed = |e: io::Error| io_failure(&e, "reading", path);
    // Non-blocking: opening a FIFO must not wait for a writer.
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(failed)?;
    let meta = file.metadata().map_err(failed)?;
    if meta.is_dir() {
        return Err((StreamErrorKind::Invalid, format!("{path} is a directory")));
    }
    if !meta.is_file() {
        return Err((
            StreamErrorKind::Invalid,
            format!("{path} is not a regular file"),
        ));
    }
    if meta.len() == 0 && reads_more_than_nothing(&mut file) {
        return Err((
            StreamErrorKind::Invalid,
            format!(
                "{path} has no size to announce (a /proc or /sys file?): read it with a \
                 command instead, e.g. `cat {path}`"
            ),
        ));
    }
    Ok((file, meta.len(), meta.mode() & 0o7777))
}

/// Whether a file whose size is 0 still has bytes to read (a pseudo file).
/// Reading it moves nothing that matters: it is not read again.
fn reads_more_than_nothing(file: &mut File) -> bool {
    let mut byte = [0u8; 1];
    loop {
        match file.read(&mut byte) {
            Ok(n) => return n > 0,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn send_file(ctx: &StreamCtx, id: u64, path: &str, stream: &FileReadStream) {
    let (mut file, size, mode) = match open(path) {
        Ok(opened) => opened,
        Err((kind, message)) => {
            let _ = ctx.fail(id, kind, message);
            return;
        }
    };
    if ctx.send(&Frame::FileInfo { id, size, mode }).is_err() {
        ctx.streams.remove(id);
        return;
    }
    let mut buf = vec![0u8; DATA_CHUNK];
    let mut left = size;
    while left > 0 {
        if stream.hung_up.load(Ordering::SeqCst) {
            return;
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let (kind, message) = io_failure(&e, "reading", path);
                let _ = ctx.fail(id, kind, message);
                return;
            }
        };
        left -= n as u64;
        if ctx.data(id, CHANNEL_OUT, &buf[..n]).is_err() {
            ctx.streams.remove(id);
            return;
        }
    }
    let _ = ctx.finish(
        id,
        &Frame::StreamEnd {
            id,
            channel: CHANNEL_OUT,
        },
    );
}
