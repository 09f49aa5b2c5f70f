//! One client connection: reads request frames, runs each on its own task,
//! writes answers and watch events as they are ready, and switches to raw
//! console bytes on `attachConsole` (see the decisions in [`super`]).

use std::sync::Arc;

use fastvm_proto::socket::{
    FrameError, MAX_FRAME, Op, SocketEvent, SocketRequest, SocketResponse, WatchRequest,
    decode_frame, encode_frame,
};
use interprocess::local_socket::tokio::Stream;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, broadcast, watch};
use tokio::task::JoinSet;

use super::dispatch::{Outcome, dispatch};
use crate::service::{Event, Service};

/// The sending side, shared by the tasks of one connection; the lock keeps
/// frames whole.
pub(super) type Writer = Arc<Mutex<Arc<Stream>>>;

/// Writes one encoded frame; false once the client is gone.
async fn send_bytes(writer: &Writer, bytes: &[u8]) -> bool {
    let guard = writer.lock().await;
    let mut stream: &Stream = &guard;
    stream.write_all(bytes).await.is_ok()
}

/// Writes a response; one too large to encode becomes a 500 with its id.
async fn send_response(writer: &Writer, resp: &SocketResponse) -> bool {
    let bytes = encode_frame(resp).or_else(|e| {
        encode_frame(&SocketResponse::error(
            resp.id,
            500,
            format!("cannot send the answer: {e}"),
        ))
    });
    match bytes {
        Ok(bytes) => send_bytes(writer, &bytes).await,
        Err(_) => false,
    }
}

/// Answers request `id` with 101 and `body`: the connection carries the
/// operation's stream from here on. False once the client is gone.
pub(super) async fn send_switched(writer: &Writer, id: u64, body: Value) -> bool {
    let switched = SocketResponse {
        id,
        status: 101,
        body,
    };
    send_response(writer, &switched).await
}

/// Reads the next line into `buf` (newline included); `Ok(false)` at a clean
/// end of stream.
async fn read_line(reader: &mut BufReader<&Stream>, buf: &mut Vec<u8>) -> Result<bool, FrameError> {
    buf.clear();
    let limit = (MAX_FRAME + 2) as u64;
    let n = (&mut *reader).take(limit).read_until(b'\n', buf).await?;
    if n == 0 {
        return Ok(false);
    }
    if !buf.ends_with(b"\n") && n as u64 >= limit {
        return Err(FrameError::TooLong);
    }
    Ok(true)
}

/// The `id` of a frame that is not a valid request, when it has one.
fn id_of(line: &[u8]) -> u64 {
    serde_json::from_slice::<Value>(line)
        .ok()
        .and_then(|v| v.get("id").and_then(Value::as_u64))
        .unwrap_or(0)
}

/// Serves one connection until the client closes it.
pub(super) async fn run(stream: Stream, service: Service) {
    let stream = Arc::new(stream);
    let writer: Writer = Arc::new(Mutex::new(stream.clone()));
    let mut reader = BufReader::new(&*stream);
    // Dropping `open` tells the watches of this connection to end.
    let (open, closed) = watch::channel(());
    let mut tasks = JoinSet::new();
    let mut line = Vec::new();
    loop {
        while tasks.try_join_next().is_some() {}
        match read_line(&mut reader, &mut line).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(FrameError::TooLong) => {
                let resp = SocketResponse::error(0, 400, FrameError::TooLong.to_string());
                send_response(&writer, &resp).await;
                break;
            }
            Err(_) => break,
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let req: SocketRequest = match decode_frame(&line) {
            Ok(req) => req,
            Err(e) => {
                let resp = SocketResponse::error(id_of(&line), 400, e.to_string());
                send_response(&writer, &resp).await;
                continue;
            }
        };
        if !matches!(
            req.parsed_op(),
            Some(Op::Watch | Op::AttachConsole | Op::ExecStream | Op::WriteFile | Op::ReadFile)
        ) {
            let (service, writer) = (service.clone(), writer.clone());
            tasks.spawn(async move {
                let outcome = dispatch(&service, &req).await;
                finish(outcome, req.id, &writer, None).await;
            });
            continue;
        }
        match dispatch(&service, &req).await {
            Outcome::Console(path) => match connect_console(&path).await {
                Ok(console) => {
                    tasks.shutdown().await;
                    drop(open);
                    attach(console, req.id, reader, &writer).await;
                    return;
                }
                Err(e) => {
                    tracing::warn!("console socket {}: {e}", path.display());
                    let msg = format!("cannot reach the VM's console: {e}");
                    send_response(&writer, &SocketResponse::error(req.id, 502, msg)).await;
                }
            },
            Outcome::ExecStream(session) => {
                tasks.shutdown().await;
                drop(open);
                super::exec_relay::relay(session, req.id, reader, &writer).await;
                return;
            }
            Outcome::FileUpload(upload) => {
                tasks.shutdown().await;
                drop(open);
                super::file_relay::write(upload, req.id, reader, &writer).await;
                return;
            }
            Outcome::FileDownload(download) => {
                tasks.shutdown().await;
                drop(open);
                super::file_relay::read(download, req.id, &writer).await;
                return;
            }
            outcome => {
                let (writer, closed) = (writer.clone(), closed.clone());
                tasks.spawn(async move { finish(outcome, req.id, &writer, Some(closed)).await });
            }
        }
    }
    drop(open);
    while tasks.join_next().await.is_some() {}
}

/// Sends the answer of a request, or streams a watch.
async fn finish(outcome: Outcome, id: u64, writer: &Writer, closed: Option<watch::Receiver<()>>) {
    match (outcome, closed) {
        (Outcome::Reply(resp), _) => {
            send_response(writer, &resp).await;
        }
        (
            Outcome::Watch {
                org_id,
                filter,
                events,
            },
            Some(closed),
        ) => stream_events(id, org_id, filter, events, writer, closed).await,
        _ => {
            let resp = SocketResponse::error(id, 500, "operation answered out of place");
            send_response(writer, &resp).await;
        }
    }
}

/// Answers a watch with 200 `{}`, then sends the org's wanted events until
/// the connection closes (or the watch lags; see [`super`]).
async fn stream_events(
    id: u64,
    org_id: String,
    filter: WatchRequest,
    mut events: broadcast::Receiver<Event>,
    writer: &Writer,
    mut closed: watch::Receiver<()>,
) {
    let accepted = SocketResponse {
        id,
        status: 200,
        body: json!({}),
    };
    if !send_response(writer, &accepted).await {
        return;
    }
    loop {
        let event = tokio::select! {
            _ = closed.changed() => return,
            event = events.recv() => event,
        };
        match event {
            Ok(e) if e.org_id == org_id && filter.wants(e.kind) => {
                let frame = SocketEvent {
                    id,
                    event: e.kind,
                    op: e.op,
                    data: e.data,
                };
                let Ok(bytes) = encode_frame(&frame) else {
                    continue;
                };
                if !send_bytes(writer, &bytes).await {
                    return;
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let msg = format!("watch fell behind and lost {n} events; watch again and re-list");
                send_response(writer, &SocketResponse::error(id, 410, msg)).await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Answers 101 and splices bytes between the client and the connected
/// `console` until either side closes.
async fn attach(
    console: tokio::net::UnixStream,
    id: u64,
    mut reader: BufReader<&Stream>,
    writer: &Writer,
) {
    if !send_switched(writer, id, json!({})).await {
        return;
    }
    let guard = writer.lock().await;
    let mut client_out: &Stream = &guard;
    let (mut console_in, mut console_out) = console.into_split();
    tokio::select! {
        _ = tokio::io::copy_buf(&mut reader, &mut console_out) => {}
        _ = tokio::io::copy(&mut console_in, &mut client_out) => {}
    }
}

/// A VM's console socket, refused unless its monitor serves it
/// ([`crate::supervisor::peer`]).
async fn connect_console(path: &std::path::Path) -> std::io::Result<tokio::net::UnixStream> {
    let stream = tokio::net::UnixStream::connect(path).await?;
    let dir = path.parent().unwrap_or(std::path::Path::new("/"));
    crate::supervisor::peer::ensure_monitor(&stream, dir)?;
    Ok(stream)
}
