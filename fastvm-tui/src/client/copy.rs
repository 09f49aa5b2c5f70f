//! File copies into and out of a VM: `writeFile` / `readFile`, each on a
//! connection of its own. Once accepted (101) the connection carries exec
//! channel messages: an upload's bytes go on channel 0, ended by a close of
//! channel 0 (`[255, 0]`); a download's come on channel 1, their total
//! given by the 101 answer's body (a `FileInfo`). Either ends with one
//! channel 3 message, `{"status", "body"}`: 200 with what was moved, or the
//! daemon's error.
//!
//! An upload keeps the local file's permission bits. A download is written
//! beside its destination and renamed into place once whole, with the
//! guest file's permission bits. Ending the task early (a cancel) closes
//! the connection, so the daemon leaves nothing written in the guest, and
//! removes a download's partial file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastvm_proto::api::{FileInfo, FileMoved, FileRequest};
use fastvm_proto::exec_channel::{self, CLOSE, MessageDecoder, STATUS, STDIN, STDOUT};
use fastvm_proto::socket::{Op, SocketRequest, SocketResponse};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::local_file::{LocalFile, Partial};
use super::{ClientEvent, Reporter};

/// Bytes sent in one message (well under the 1 MiB message limit).
const CHUNK: usize = 256 << 10;
/// Bytes read from the daemon at a time.
const READ_CHUNK: usize = 64 << 10;
/// Least time between two progress reports.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// Mode of a downloaded file when the daemon does not say.
const DEFAULT_MODE: u32 = 0o644;

/// Which way a copy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyDirection {
    /// A local file into the VM (`writeFile`).
    Upload,
    /// A file of the VM to a local path (`readFile`).
    Download,
}

impl CopyDirection {
    /// The other direction.
    pub fn toggled(self) -> CopyDirection {
        match self {
            CopyDirection::Upload => CopyDirection::Download,
            CopyDirection::Download => CopyDirection::Upload,
        }
    }

    /// How the dashboard names it: `into` or `out of` (the VM).
    pub fn preposition(self) -> &'static str {
        match self {
            CopyDirection::Upload => "into",
            CopyDirection::Download => "out of",
        }
    }
}

/// One copy, as the UI asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRequest {
    /// Which way.
    pub direction: CopyDirection,
    /// The VM's id.
    pub vm_id: String,
    /// The local file: read for an upload; for a download, the file to
    /// create or replace (a directory was already resolved to a file in it).
    pub local: PathBuf,
    /// The absolute path in the VM.
    pub guest: String,
}

/// What happened to a copy, as the UI hears it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyEvent {
    /// The daemon accepted the copy; `total` bytes are to move, when known.
    Started {
        /// The local file's size (upload) or the VM file's (download).
        total: Option<u64>,
    },
    /// Bytes moved so far (at most one report per [`PROGRESS_EVERY`]).
    Progress {
        /// Bytes moved.
        bytes: u64,
        /// Since the copy began.
        elapsed: Duration,
    },
    /// The file is in place.
    Done {
        /// Bytes moved.
        bytes: u64,
        /// Since the copy began.
        elapsed: Duration,
    },
    /// Refused, failed, or cut off (why, with the daemon's message when it
    /// gave one).
    Failed(String),
}

/// One copy: its reports go to the UI tagged with `session`.
pub(super) async fn run_copy(
    socket: PathBuf,
    session: u64,
    request: CopyRequest,
    reporter: Arc<Reporter>,
) {
    let report = |event| reporter.send(ClientEvent::Copy { session, event });
    let mut progress = Progress::new(&report);
    let outcome = match request.direction {
        CopyDirection::Upload => upload(&socket, &request, &mut progress).await,
        CopyDirection::Download => download(&socket, &request, &mut progress).await,
    };
    report(match outcome {
        Ok(bytes) => CopyEvent::Done {
            bytes,
            elapsed: progress.began.elapsed(),
        },
        Err(why) => CopyEvent::Failed(why),
    });
}

/// Sends a local file with `writeFile`; the bytes the guest got.
async fn upload(
    socket: &Path,
    request: &CopyRequest,
    progress: &mut Progress<'_>,
) -> Result<u64, String> {
    let local = |e: std::io::Error| format!("{}: {e}", request.local.display());
    let mut file = LocalFile::open(&request.local).await.map_err(local)?;
    let meta = file.metadata().await.map_err(local)?;
    if meta.is_dir() {
        return Err(format!(
            "{} is a directory; one file is copied at a time",
            request.local.display()
        ));
    }
    let body = FileRequest {
        path: request.guest.clone(),
        mode: Some(meta.permissions().mode() & 0o7777),
    };
    let (_, mut messages, mut write) = open(socket, Op::WriteFile, request, &body).await?;
    progress.started(Some(meta.len()));
    let mut sent = 0u64;
    loop {
        let chunk = file.read_chunk(CHUNK).await.map_err(local)?;
        if chunk.is_empty() {
            break;
        }
        if write
            .write_all(&exec_channel::frame(STDIN, &chunk))
            .await
            .is_err()
        {
            // The daemon stopped taking bytes: its status says why.
            break;
        }
        sent += chunk.len() as u64;
        progress.moved(sent);
    }
    let _ = write.write_all(&exec_channel::frame(CLOSE, &[STDIN])).await;
    let moved = match messages.next().await? {
        Incoming::Data(_) => return Err("the daemon sent data during an upload".into()),
        Incoming::Status(body) => moved(body)?,
    };
    if moved.bytes != sent {
        return Err(format!("the VM got {} of {sent} bytes", moved.bytes));
    }
    Ok(sent)
}

/// Fetches a VM file with `readFile` into `request.local`; the bytes
/// written.
async fn download(
    socket: &Path,
    request: &CopyRequest,
    progress: &mut Progress<'_>,
) -> Result<u64, String> {
    let body = FileRequest {
        path: request.guest.clone(),
        mode: None,
    };
    // The write half stays open until the end: closing it early could read
    // as the client going away.
    let (answer, mut messages, _write) = open(socket, Op::ReadFile, request, &body).await?;
    let info = serde_json::from_value::<FileInfo>(answer).ok();
    progress.started(info.map(|i| i.size));
    let mut partial = Partial::create(&request.local)?;
    let mut got = 0u64;
    let status = loop {
        match messages.next().await? {
            Incoming::Data(bytes) => {
                got += bytes.len() as u64;
                partial.write(bytes).await?;
                progress.moved(got);
            }
            Incoming::Status(body) => break body,
        }
    };
    let moved = moved(status)?;
    if moved.bytes != got {
        return Err(format!("got {got} of the {} bytes sent", moved.bytes));
    }
    let mode = info.map_or(DEFAULT_MODE, |i| i.mode & 0o7777);
    partial.place(&request.local, mode).await?;
    Ok(got)
}

/// Sends `op` for `request` on a connection of its own; the 101 answer's
/// body, the messages that follow, and the write half.
async fn open(
    socket: &Path,
    op: Op,
    request: &CopyRequest,
    body: &FileRequest,
) -> Result<(Value, Messages, tokio::net::unix::OwnedWriteHalf), String> {
    let req = SocketRequest::new(1, op.name())
        .param("id", request.vm_id.clone())
        .body(serde_json::to_value(body).map_err(|e| e.to_string())?);
    let (response, reader, write) = super::switch_over(socket, &req).await?;
    if response.status != 101 {
        return Err(refusal(&response));
    }
    Ok((response.body, Messages::new(reader), write))
}

/// `error STATUS: MESSAGE` of a refused request.
fn refusal(response: &SocketResponse) -> String {
    match response.error_message() {
        Some(msg) => format!("error {}: {msg}", response.status),
        None => format!("error {}: {}", response.status, response.body),
    }
}

/// The final status's body as what was moved, or its error.
fn moved(status: Value) -> Result<FileMoved, String> {
    serde_json::from_value(status).map_err(|e| format!("unreadable copy status: {e}"))
}

/// A message after the 101 answer.
enum Incoming {
    /// File bytes (channel 1).
    Data(Vec<u8>),
    /// The closing status's body, when it is a success.
    Status(Value),
}

/// Reads exec channel messages; the decoder never holds more than one
/// message and one read.
struct Messages {
    reader: Box<dyn AsyncRead + Unpin + Send>,
    decoder: MessageDecoder,
    buf: Vec<u8>,
}

impl Messages {
    fn new(reader: impl AsyncRead + Unpin + Send + 'static) -> Messages {
        Messages {
            reader: Box::new(reader),
            decoder: MessageDecoder::default(),
            buf: vec![0u8; READ_CHUNK],
        }
    }

    /// The next data message or the status; an error status is `Err` with
    /// the daemon's message.
    async fn next(&mut self) -> Result<Incoming, String> {
        loop {
            while let Some((channel, bytes)) =
                self.decoder.next_message().map_err(|e| e.to_string())?
            {
                match channel {
                    STDOUT => return Ok(Incoming::Data(bytes)),
                    STATUS => return status(&bytes).map(Incoming::Status),
                    _ => {}
                }
            }
            let n = self
                .reader
                .read(&mut self.buf)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the daemon closed the connection before the end of the copy".into());
            }
            self.decoder.push(&self.buf[..n]);
        }
    }
}

/// A status message's body when its status is 200, else its error.
fn status(bytes: &[u8]) -> Result<Value, String> {
    let status: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("unreadable copy status: {e}"))?;
    let code = status.get("status").and_then(Value::as_u64).unwrap_or(500);
    let body = status.get("body").cloned().unwrap_or(Value::Null);
    if code == 200 {
        return Ok(body);
    }
    match body.get("error").and_then(Value::as_str) {
        Some(msg) => Err(format!("error {code}: {msg}")),
        None => Err(format!("error {code}: {body}")),
    }
}

/// Progress reports, at most one per [`PROGRESS_EVERY`].
struct Progress<'a> {
    report: &'a (dyn Fn(CopyEvent) + Sync),
    began: Instant,
    last: Option<Instant>,
}

impl<'a> Progress<'a> {
    fn new(report: &'a (dyn Fn(CopyEvent) + Sync)) -> Progress<'a> {
        Progress {
            report,
            began: Instant::now(),
            last: None,
        }
    }

    fn started(&mut self, total: Option<u64>) {
        (self.report)(CopyEvent::Started { total });
        self.last = Some(Instant::now());
    }

    fn moved(&mut self, bytes: u64) {
        if self.last.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        (self.report)(CopyEvent::Progress {
            bytes,
            elapsed: self.began.elapsed(),
        });
    }
}
