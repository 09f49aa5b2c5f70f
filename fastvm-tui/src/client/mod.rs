//! The socket client: tokio tasks that talk to the daemon and report to the
//! UI loop over a channel, so the UI never waits on I/O.
//!
//! One connection carries `watch`, the lists and every operation (answers
//! are matched to requests by `id`); it is re-opened, and everything
//! re-listed, when it drops or the watch ends. The console uses its own
//! connection, switched to raw bytes by `attachConsole`, and so does the
//! exec pane, switched to exec channel messages by `execStream` ([`exec`]),
//! and a file copy, switched over by `writeFile` / `readFile` ([`copy`]).

mod copy;
mod exec;
mod local_file;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Duration;

use fastvm_proto::socket::{
    Op, ServerFrame, SocketEvent, SocketRequest, SocketResponse, WatchRequest, decode_frame,
    encode_frame,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// What to do with an answer, decided when the request was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// The `watch` request (an error answer means the watch ended).
    Watch,
    /// `listVMs`: replaces the VM list.
    ListVms,
    /// `listSnapshots`: replaces the snapshot list.
    ListSnapshots,
    /// `getOrgQuotas`: replaces the quotas.
    Quotas,
    /// `listImages`: the images the open create form offers (a failure
    /// leaves only the default, quietly).
    ListImages,
    /// `createVM`: selects the new VM.
    Created,
    /// Any other operation: this message on success.
    Action(String),
}

/// A request from the UI to the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Send one operation.
    Call {
        /// Where its answer goes.
        purpose: Purpose,
        /// The operation.
        op: Op,
        /// Path parameter `id`, if any.
        id: Option<String>,
        /// Request body, if any.
        body: Option<Value>,
    },
    /// Re-open the watch and re-list everything.
    Resync,
    /// Open the console of the VM with this id (closing any other).
    AttachConsole(String),
    /// Bytes typed into the console.
    ConsoleInput(Vec<u8>),
    /// Close the console connection.
    DetachConsole,
    /// Run a command with `execStream` on a connection of its own (closing
    /// any other exec session); its reports carry `session`.
    StartExec {
        /// Tags the session's reports.
        session: u64,
        /// The VM's id.
        vm_id: String,
        /// The `execStream` body.
        body: Value,
    },
    /// One exec channel message for the running exec session.
    ExecMessage {
        /// The channel (e.g. [`fastvm_proto::exec_channel::SIGNAL`]).
        channel: u8,
        /// The message's bytes after the channel byte.
        bytes: Vec<u8>,
    },
    /// Close the exec connection (which ends the command in the guest).
    CloseExec,
    /// Copy a file into or out of a VM on a connection of its own (closing
    /// any other copy); its reports carry `session`.
    StartCopy {
        /// Tags the copy's reports.
        session: u64,
        /// What to copy where.
        request: CopyRequest,
    },
    /// Close the copy's connection: nothing is written in the guest, and a
    /// download's partial file is removed.
    CancelCopy,
}

impl Command {
    /// A call of `op` with an optional path id and body.
    pub fn call(purpose: Purpose, op: Op, id: Option<String>, body: Option<Value>) -> Command {
        Command::Call {
            purpose,
            op,
            id,
            body,
        }
    }
}

/// A report from the client to the UI.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The connection is open and the watch was sent.
    Connected,
    /// The connection failed or dropped (why); the client retries.
    Disconnected(String),
    /// A live change.
    Event(SocketEvent),
    /// The answer to a request.
    Answer {
        /// What it was for.
        purpose: Purpose,
        /// The answer.
        response: SocketResponse,
    },
    /// The console connection is attached.
    ConsoleAttached,
    /// Console output bytes.
    ConsoleOutput(Vec<u8>),
    /// The console connection ended (with an error message, if it failed).
    ConsoleClosed(Option<String>),
    /// A report of the exec session `session`.
    Exec {
        /// The session, as [`Command::StartExec`] named it.
        session: u64,
        /// What happened.
        event: ExecEvent,
    },
    /// A report of the file copy `session`.
    Copy {
        /// The copy, as [`Command::StartCopy`] named it.
        session: u64,
        /// What happened.
        event: CopyEvent,
    },
}

pub use copy::{CopyDirection, CopyEvent, CopyRequest};
pub use exec::ExecEvent;
pub use local_file::{destination, partial_name};

/// How long to wait before reconnecting.
const RETRY: Duration = Duration::from_secs(1);

/// The `id` of the watch request on each connection (it is sent first).
const WATCH_ID: u64 = 1;

/// Starts the client on the current tokio runtime. Reports go to `events`
/// (wrapped by `wrap`, so the UI can merge them with its other events).
pub fn spawn<E: Send + 'static>(
    socket: PathBuf,
    events: Sender<E>,
    wrap: fn(ClientEvent) -> E,
) -> UnboundedSender<Command> {
    let (tx, rx) = unbounded_channel();
    let report = move |e: ClientEvent| {
        let _ = events.send(wrap(e));
    };
    tokio::spawn(run(socket, rx, Reporter(Box::new(report))));
    tx
}

/// Sends reports to the UI.
struct Reporter(Box<dyn Fn(ClientEvent) + Send + Sync>);

impl Reporter {
    fn send(&self, e: ClientEvent) {
        (self.0)(e)
    }
}

/// The console connection's input side, while one is open.
struct Console {
    input: UnboundedSender<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
}

/// The exec connection's input side (whole messages), while one is open.
struct ExecConn {
    input: UnboundedSender<(u8, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
}

/// The connections beside the main one.
#[derive(Default)]
struct Streams {
    console: Option<Console>,
    exec: Option<ExecConn>,
    copy: Option<tokio::task::JoinHandle<()>>,
}

/// The client's main loop: connect, watch, serve commands, reconnect.
async fn run(socket: PathBuf, mut commands: UnboundedReceiver<Command>, reporter: Reporter) {
    let reporter = std::sync::Arc::new(reporter);
    let mut streams = Streams::default();
    loop {
        match UnixStream::connect(&socket).await {
            Ok(stream) => {
                reporter.send(ClientEvent::Connected);
                let why = serve(stream, &socket, &mut commands, &reporter, &mut streams).await;
                match why {
                    Ended::Quit => return,
                    Ended::Resync => continue,
                    Ended::Dropped(why) => reporter.send(ClientEvent::Disconnected(why)),
                }
            }
            Err(e) => reporter.send(ClientEvent::Disconnected(e.to_string())),
        }
        let deadline = tokio::time::sleep(RETRY);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(Command::Resync) => break,
                    Some(Command::Call { purpose, .. }) => {
                        let response = SocketResponse::error(0, 503, "not connected to the daemon");
                        reporter.send(ClientEvent::Answer { purpose, response });
                    }
                    Some(other) => stream_command(other, &socket, &reporter, &mut streams),
                },
            }
        }
    }
}

/// Why [`serve`] returned.
enum Ended {
    /// The UI is gone.
    Quit,
    /// Reconnect now and re-list.
    Resync,
    /// The connection dropped.
    Dropped(String),
}

/// Serves one connection until it drops or a resync is asked for; requests
/// still unanswered then get an error answer (their outcome is unknown).
async fn serve(
    stream: UnixStream,
    socket: &Path,
    commands: &mut UnboundedReceiver<Command>,
    reporter: &std::sync::Arc<Reporter>,
    streams: &mut Streams,
) -> Ended {
    let mut pending: HashMap<u64, Purpose> = HashMap::new();
    let ended = serve_requests(stream, socket, commands, reporter, streams, &mut pending).await;
    for (_, purpose) in pending {
        if matches!(purpose, Purpose::Created | Purpose::Action(_)) {
            let response = SocketResponse::error(
                0,
                503,
                "the connection to the daemon ended before the answer; the outcome is unknown",
            );
            reporter.send(ClientEvent::Answer { purpose, response });
        }
    }
    ended
}

async fn serve_requests(
    stream: UnixStream,
    socket: &Path,
    commands: &mut UnboundedReceiver<Command>,
    reporter: &std::sync::Arc<Reporter>,
    streams: &mut Streams,
    pending: &mut HashMap<u64, Purpose>,
) -> Ended {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut next_id = WATCH_ID;
    let watch = serde_json::to_value(WatchRequest::default()).unwrap_or(Value::Null);
    let initial = [
        (Purpose::Watch, Op::Watch, Some(watch)),
        (Purpose::ListVms, Op::ListVms, None),
        (Purpose::ListSnapshots, Op::ListSnapshots, None),
        (Purpose::Quotas, Op::GetOrgQuotas, None),
    ];
    for (purpose, op, body) in initial {
        if let Err(e) = send(&mut write, pending, &mut next_id, purpose, op, None, body).await {
            return Ended::Dropped(e);
        }
    }
    // `read_until` keeps what it read in `line` when the other branch wins
    // the select, so `line` is only cleared after a whole line was handled.
    let mut line = Vec::new();
    loop {
        tokio::select! {
            read = lines.read_until(b'\n', &mut line) => {
                match read {
                    Ok(0) => return Ended::Dropped("the daemon closed the connection".into()),
                    Err(e) => return Ended::Dropped(e.to_string()),
                    Ok(_) => {}
                }
                let frame = decode_frame::<ServerFrame>(&line);
                line.clear();
                match frame {
                    Ok(ServerFrame::Event(event)) => reporter.send(ClientEvent::Event(event)),
                    Ok(ServerFrame::Response(response)) => {
                        let purpose = if response.id == WATCH_ID {
                            Some(Purpose::Watch)
                        } else {
                            pending.remove(&response.id)
                        };
                        let Some(purpose) = purpose else { continue };
                        let watch_ended = purpose == Purpose::Watch && !response.is_success();
                        reporter.send(ClientEvent::Answer { purpose, response });
                        if watch_ended {
                            return Ended::Resync;
                        }
                    }
                    Err(e) => return Ended::Dropped(format!("bad frame from the daemon: {e}")),
                }
            }
            cmd = commands.recv() => match cmd {
                None => return Ended::Quit,
                Some(Command::Resync) => return Ended::Resync,
                Some(Command::Call { purpose, op, id, body }) => {
                    if let Err(e) = send(&mut write, pending, &mut next_id, purpose, op, id, body).await {
                        return Ended::Dropped(e);
                    }
                }
                Some(other) => stream_command(other, socket, reporter, streams),
            },
        }
    }
}

/// Writes one request frame and remembers its purpose.
async fn send(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    pending: &mut HashMap<u64, Purpose>,
    next_id: &mut u64,
    purpose: Purpose,
    op: Op,
    id: Option<String>,
    body: Option<Value>,
) -> Result<(), String> {
    let mut req = SocketRequest::new(*next_id, op.name());
    if let Some(id) = id {
        req = req.param("id", id);
    }
    req.body = body;
    if purpose != Purpose::Watch {
        pending.insert(*next_id, purpose);
    }
    *next_id += 1;
    let bytes = encode_frame(&req).map_err(|e| e.to_string())?;
    write.write_all(&bytes).await.map_err(|e| e.to_string())
}

/// Handles the console, exec and copy commands.
fn stream_command(
    cmd: Command,
    socket: &Path,
    reporter: &std::sync::Arc<Reporter>,
    streams: &mut Streams,
) {
    let console = &mut streams.console;
    match cmd {
        Command::AttachConsole(vm_id) => {
            if let Some(old) = console.take() {
                old.task.abort();
            }
            let (input, rx) = unbounded_channel();
            let task = tokio::spawn(run_console(
                socket.to_path_buf(),
                vm_id,
                rx,
                std::sync::Arc::clone(reporter),
            ));
            *console = Some(Console { input, task });
        }
        Command::ConsoleInput(bytes) => {
            if let Some(c) = console {
                let _ = c.input.send(bytes);
            }
        }
        Command::DetachConsole => {
            if let Some(old) = console.take() {
                old.task.abort();
            }
        }
        Command::StartExec {
            session,
            vm_id,
            body,
        } => {
            if let Some(old) = streams.exec.take() {
                old.task.abort();
            }
            let (input, rx) = unbounded_channel();
            let task = tokio::spawn(exec::run_exec(
                socket.to_path_buf(),
                session,
                vm_id,
                body,
                rx,
                std::sync::Arc::clone(reporter),
            ));
            streams.exec = Some(ExecConn { input, task });
        }
        Command::ExecMessage { channel, bytes } => {
            if let Some(e) = &streams.exec {
                let _ = e.input.send((channel, bytes));
            }
        }
        Command::CloseExec => {
            if let Some(old) = streams.exec.take() {
                old.task.abort();
            }
        }
        Command::StartCopy { session, request } => {
            if let Some(old) = streams.copy.take() {
                old.abort();
            }
            streams.copy = Some(tokio::spawn(copy::run_copy(
                socket.to_path_buf(),
                session,
                request,
                std::sync::Arc::clone(reporter),
            )));
        }
        Command::CancelCopy => {
            if let Some(old) = streams.copy.take() {
                old.abort();
            }
        }
        Command::Call { .. } | Command::Resync => {}
    }
}

/// One console session: attach, then copy bytes both ways until either side
/// closes.
async fn run_console(
    socket: PathBuf,
    vm_id: String,
    mut input: UnboundedReceiver<Vec<u8>>,
    reporter: std::sync::Arc<Reporter>,
) {
    let result = console_session(&socket, vm_id, &mut input, &reporter).await;
    reporter.send(ClientEvent::ConsoleClosed(result.err()));
}

async fn console_session(
    socket: &Path,
    vm_id: String,
    input: &mut UnboundedReceiver<Vec<u8>>,
    reporter: &Reporter,
) -> Result<(), String> {
    let req = SocketRequest::new(1, Op::AttachConsole.name()).param("id", vm_id);
    let (response, mut reader, mut write) = switch_over(socket, &req).await?;
    if !response.is_success() {
        let msg = response.error_message().unwrap_or("refused");
        return Err(format!("error {}: {msg}", response.status));
    }
    reporter.send(ClientEvent::ConsoleAttached);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            n = reader.read(&mut buf) => match n {
                Ok(0) => return Ok(()),
                Ok(n) => reporter.send(ClientEvent::ConsoleOutput(buf[..n].to_vec())),
                Err(e) => return Err(e.to_string()),
            },
            bytes = input.recv() => match bytes {
                None => return Ok(()),
                Some(bytes) => write.write_all(&bytes).await.map_err(|e| e.to_string())?,
            },
        }
    }
}

/// Sends `req` (an op that switches the connection over to a stream once
/// accepted) on a new connection to `socket`; its answer, and the
/// connection's two halves for what follows.
pub(super) async fn switch_over(
    socket: &Path,
    req: &SocketRequest,
) -> Result<(SocketResponse, BufReader<OwnedReadHalf>, OwnedWriteHalf), String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    let (read, mut write) = stream.into_split();
    let bytes = encode_frame(req).map_err(|e| e.to_string())?;
    write.write_all(&bytes).await.map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| e.to_string())?;
    if line.is_empty() {
        return Err("the daemon closed the connection before answering".into());
    }
    let response = decode_frame(&line).map_err(|e| e.to_string())?;
    Ok((response, reader, write))
}

#[cfg(test)]
mod copy_tests;
#[cfg(test)]
mod tests;
