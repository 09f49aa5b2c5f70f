//! Files into and out of a VM, streamed through its agent in chunks (a
//! 1 GiB file never sits in the daemon's memory). A write goes to a
//! temporary file in the guest that replaces the path only once every byte
//! is there; a read says the file's size before its bytes.

use fastvm_proto::agent::{Frame, StreamError, StreamErrorKind};
use fastvm_proto::agent_stream::{CHANNEL_IN, CHANNEL_OUT};
use fastvm_proto::api::{FileInfo, FileMoved, FileRequest};

use super::exec_slots::Slot;
use super::streams::{Opened, STREAM_ID, upstream};
use super::{Caller, Service, ServiceError};
use crate::agent_stream::{StreamReader, StreamWriter};

/// A write under way: bytes in with [`FileUpload::send`], then
/// [`FileUpload::finish`]. Dropped before that, nothing is written.
pub struct FileUpload {
    vm_id: String,
    path: String,
    writer: StreamWriter,
    reader: StreamReader,
    sent: u64,
    _slot: Slot,
}

/// A read under way: its size and mode, then its bytes from
/// [`FileDownload::next`].
pub struct FileDownload {
    pub vm_id: String,
    pub path: String,
    pub info: FileInfo,
    reader: StreamReader,
    /// Kept open: the agent takes a closed connection for a client gone.
    _writer: StreamWriter,
    received: u64,
    ended: bool,
    _slot: Slot,
}

impl std::fmt::Debug for FileUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileUpload({} {})", self.vm_id, self.path)
    }
}

impl std::fmt::Debug for FileDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileDownload({} {})", self.vm_id, self.path)
    }
}

/// The agent's failure as the caller's error: a missing file is a 404, a
/// path that cannot be one a 400, too many streams a 429, the rest a 502.
fn stream_error(vm_id: &str, path: &str, e: StreamError) -> ServiceError {
    let message = format!("VM {vm_id}: {path}: {}", e.message);
    match e.kind {
        StreamErrorKind::NotFound => ServiceError::NotFound(message),
        StreamErrorKind::Invalid => ServiceError::BadRequest(message),
        StreamErrorKind::Busy => ServiceError::TooMany(message),
        StreamErrorKind::Failed => ServiceError::Upstream(message),
    }
}

/// A frame out of turn on a file stream.
fn unexpected(vm_id: &str, frame: &Frame) -> ServiceError {
    upstream(
        vm_id,
        format!(
            "the guest agent answered {} on a file stream",
            frame.describe()
        ),
    )
}

impl FileUpload {
    /// Sends the next bytes; an error as soon as the guest refuses the
    /// write (its answer is read while the bytes go).
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), ServiceError> {
        tokio::select! {
            biased;
            frame = self.reader.next() => Err(match frame {
                Ok(Frame::StreamError(e)) => stream_error(&self.vm_id, &self.path, e),
                Ok(other) => unexpected(&self.vm_id, &other),
                Err(e) => upstream(&self.vm_id, e),
            }),
            sent = self.writer.send_data(STREAM_ID, CHANNEL_IN, bytes) => {
                sent.map_err(|e| upstream(&self.vm_id, e))?;
                self.sent += bytes.len() as u64;
                Ok(())
            }
        }
    }

    /// Ends the bytes and waits for the file to be in place.
    pub async fn finish(mut self) -> Result<FileMoved, ServiceError> {
        let end = Frame::StreamEnd {
            id: STREAM_ID,
            channel: CHANNEL_IN,
        };
        let ended = self.writer.send(&end).await;
        match self.reader.next().await {
            Ok(Frame::FileDone { bytes, .. }) if bytes == self.sent => Ok(FileMoved {
                path: self.path,
                bytes,
            }),
            Ok(Frame::FileDone { bytes, .. }) => Err(upstream(
                &self.vm_id,
                format!("the guest wrote {bytes} bytes of the {} sent", self.sent),
            )),
            Ok(Frame::StreamError(e)) => Err(stream_error(&self.vm_id, &self.path, e)),
            Ok(other) => Err(unexpected(&self.vm_id, &other)),
            Err(e) => Err(upstream(
                &self.vm_id,
                ended.err().map_or_else(|| e.to_string(), |w| w.to_string()),
            )),
        }
    }
}

impl FileDownload {
    /// The next bytes of the file; `None` once all of it has come.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, ServiceError> {
        while !self.ended {
            match self.reader.next().await {
                Ok(Frame::Data(d)) if d.id == STREAM_ID && d.channel == CHANNEL_OUT => {
                    self.received += d.bytes.len() as u64;
                    if self.received > self.info.size {
                        return Err(upstream(
                            &self.vm_id,
                            format!(
                                "the guest sent more than the {} bytes it announced",
                                self.info.size
                            ),
                        ));
                    }
                    return Ok(Some(d.bytes));
                }
                Ok(Frame::StreamEnd { .. }) => {
                    self.ended = true;
                    if self.received != self.info.size {
                        return Err(upstream(
                            &self.vm_id,
                            format!(
                                "{}: the file changed while it was read ({} of {} bytes)",
                                self.path, self.received, self.info.size
                            ),
                        ));
                    }
                }
                Ok(Frame::StreamError(e)) => {
                    return Err(stream_error(&self.vm_id, &self.path, e));
                }
                Ok(_) => {}
                Err(e) => return Err(upstream(&self.vm_id, e)),
            }
        }
        Ok(None)
    }
}

impl Service {
    /// writeFile: a write of `req.path` in VM `id`, ready for its bytes.
    pub async fn write_file(
        &self,
        caller: &Caller,
        id: &str,
        req: FileRequest,
    ) -> Result<FileUpload, ServiceError> {
        req.validate()?;
        let Opened { row, stream, slot } = self.open_stream(caller, id, "write a file").await?;
        let mut writer = stream.writer;
        let start = Frame::FileWrite {
            id: STREAM_ID,
            path: req.path.clone(),
            mode: req.mode,
        };
        writer
            .send(&start)
            .await
            .map_err(|e| upstream(&row.id, e))?;
        Ok(FileUpload {
            vm_id: row.id,
            path: req.path,
            writer,
            reader: stream.reader,
            sent: 0,
            _slot: slot,
        })
    }

    /// readFile: `req.path` in VM `id`, once the guest has found it.
    pub async fn read_file(
        &self,
        caller: &Caller,
        id: &str,
        req: FileRequest,
    ) -> Result<FileDownload, ServiceError> {
        req.validate()?;
        let Opened { row, stream, slot } = self.open_stream(caller, id, "read a file").await?;
        let (mut writer, mut reader) = (stream.writer, stream.reader);
        let start = Frame::FileRead {
            id: STREAM_ID,
            path: req.path.clone(),
        };
        writer
            .send(&start)
            .await
            .map_err(|e| upstream(&row.id, e))?;
        let info = match reader.next().await {
            Ok(Frame::FileInfo { size, mode, .. }) => FileInfo { size, mode },
            Ok(Frame::StreamError(e)) => return Err(stream_error(&row.id, &req.path, e)),
            Ok(other) => return Err(unexpected(&row.id, &other)),
            Err(e) => return Err(upstream(&row.id, e)),
        };
        Ok(FileDownload {
            vm_id: row.id,
            path: req.path,
            info,
            reader,
            _writer: writer,
            received: 0,
            ended: false,
            _slot: slot,
        })
    }
}
