//! `FileWrite`: the host's bytes written to a file in the guest as they
//! come (never held whole), on a thread of its own. Missing parent
//! directories are made (0755); the bytes go to a temporary file in the
//! target's directory, which is synced, given its mode (0644 unless asked)
//! and renamed over the target once the host ends the stream, then
//! `FileDone`. On a failure or a hang-up before the end the temporary file
//! is removed and the target left as it was.

use std::ffi::OsString;
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fastvm_proto::agent::{Frame, StreamErrorKind};

use crate::stream_files::{Failure, checked_file_path, io_failure};
use crate::stream_input::{InputQueue, Pop};
use crate::streams::{Stream, StreamCtx, stream_error};

/// Mode of a written file when the host gives none.
pub const DEFAULT_MODE: u32 = 0o644;
/// Mode of the directories made for it.
pub const DIR_MODE: u32 = 0o755;
/// Bytes of the target's name kept in its temporary file's name.
const TEMP_NAME_BYTES: usize = 100;

/// A file being written, as the connection steers it.
struct FileWriteStream {
    input: InputQueue,
}

impl Stream for FileWriteStream {
    fn input(&self) -> Option<&InputQueue> {
        Some(&self.input)
    }

    fn hang_up(&self) {
        // The writing thread sees the close and removes its temporary file.
        self.input.close();
    }
}

/// Opens file-write stream `id` to `path`.
pub fn start(ctx: &StreamCtx, id: u64, path: String, mode: Option<u32>) -> std::io::Result<()> {
    let refused =
        |(kind, message): Failure| ctx.send(&Frame::StreamError(stream_error(id, kind, message)));
    if let Err(e) = ctx.streams.check_room(id) {
        return ctx.send(&Frame::StreamError(e));
    }
    if let Err(failure) = checked_file_path(&path) {
        return refused(failure);
    }
    let stream = Arc::new(FileWriteStream {
        input: InputQueue::new(),
    });
    if let Err(e) = ctx.streams.insert(id, stream.clone()) {
        return ctx.send(&Frame::StreamError(e));
    }
    let thread_ctx = ctx.clone();
    let started = std::thread::Builder::new()
        .name("file-write".into())
        .spawn(move || {
            let mode = mode.unwrap_or(DEFAULT_MODE) & 0o7777;
            let _ = match write(&path, mode, id, &stream.input) {
                Ok(Some(bytes)) => thread_ctx.finish(id, &Frame::FileDone { id, bytes }),
                // Closed before the end: nothing to answer.
                Ok(None) => Ok(()),
                Err((kind, message)) => thread_ctx.fail(id, kind, message),
            };
        });
    if let Err(e) = started {
        return ctx.fail(
            id,
            StreamErrorKind::Failed,
            format!("cannot start a thread to write the file: {e}"),
        );
    }
    Ok(())
}

/// A temporary file, removed when dropped unless [`Temp::keep`] was called.
struct Temp {
    path: PathBuf,
    kept: bool,
}

impl Temp {
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The name of the temporary file for `target` in stream `id`:
/// `.<name>.fastvm-<id>-<n>.tmp`, unique within the agent.
fn temp_path(dir: &Path, target: &Path, id: u64) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = target.file_name().map_or(&[][..], |n| n.as_bytes());
    let mut temp = b".".to_vec();
    temp.extend_from_slice(&name[..name.len().min(TEMP_NAME_BYTES)]);
    temp.extend_from_slice(format!(".fastvm-{id}-{n}.tmp").as_bytes());
    dir.join(OsString::from_vec(temp))
}

/// Writes the stream into `path`: its length once in place, `None` when
/// the stream was closed before its end.
fn write(path: &str, mode: u32, id: u64, input: &InputQueue) -> Result<Option<u64>, Failure> {
    let target = Path::new(path);
    let dir = target.parent().unwrap_or(Path::new("/"));
    if target.is_dir() {
        return Err((StreamErrorKind::Invalid, format!("{path} is a directory")));
    }
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => (
                StreamErrorKind::Invalid,
                format!("{} is not a directory (writing {path})", dir.display()),
            ),
            _ => io_failure(&e, "making the directories of", path),
        })?;
    let temp = Temp {
        path: temp_path(dir, target, id),
        kept: false,
    };
    let failed = |e: std::io::Error| io_failure(&e, "writing", path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp.path)
        .map_err(failed)?;
    let mut written = 0u64;
    loop {
        match input.pop() {
            Pop::Bytes(bytes) => {
                file.write_all(&bytes).map_err(failed)?;
                written += bytes.len() as u64;
            }
            Pop::End => break,
            Pop::Closed => return Ok(None),
        }
    }
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(failed)?;
    file.sync_all().map_err(failed)?;
    drop(file);
    std::fs::rename(&temp.path, target).map_err(failed)?;
    temp.keep();
    // The rename itself lasts once the directory is synced.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(Some(written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_hidden_unique_and_short() {
        let dir = Path::new("/d");
        let a = temp_path(dir, Path::new("/d/file.txt"), 7);
        let b = temp_path(dir, Path::new("/d/file.txt"), 7);
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".file.txt.fastvm-7-"), "{name}");
        assert!(name.ends_with(".tmp"), "{name}");
        let long = format!("/d/{}", "x".repeat(255));
        let name = temp_path(dir, Path::new(&long), 1);
        assert!(name.file_name().unwrap().len() < 255);
    }

    #[test]
    fn a_closed_stream_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/f");
        let input = InputQueue::new();
        input.push(b"abc".to_vec());
        input.close();
        let path = path.to_str().unwrap();
        assert_eq!(write(path, 0o600, 1, &input), Ok(None));
        let left: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
