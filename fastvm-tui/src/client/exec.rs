//! The exec pane's connection: `execStream` on a connection of its own, then
//! exec channel messages both ways (`u32 LE` length + channel + bytes) until
//! the command's status arrives or the pane closes the connection.

use std::path::Path;
use std::sync::Arc;

use fastvm_proto::exec_channel::{self, CLOSE, MessageDecoder, STATUS, STDERR, STDIN, STDOUT};
use fastvm_proto::socket::{Op, SocketRequest, SocketResponse};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{ClientEvent, Reporter};

/// What happened on an exec session, as the UI hears it.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecEvent {
    /// The daemon started the command (answered 101).
    Started,
    /// Output bytes of the command.
    Output {
        /// From stderr (else stdout).
        stderr: bool,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The command's outcome, a Kubernetes `Status` with `exitCode` and
    /// `timedOut`; the session ends after it.
    Status(Value),
    /// The daemon refused to start the command.
    Refused(SocketResponse),
    /// The connection ended without a status (with why, if it failed).
    Closed(Option<String>),
}

/// One exec session: reports go to the UI tagged with `session`; `input`
/// carries whole messages (channel, bytes) to send.
pub(super) async fn run_exec(
    socket: std::path::PathBuf,
    session: u64,
    vm_id: String,
    body: Value,
    mut input: UnboundedReceiver<(u8, Vec<u8>)>,
    reporter: Arc<Reporter>,
) {
    let report = |event| reporter.send(ClientEvent::Exec { session, event });
    let ended = exec_session(&socket, vm_id, body, &mut input, &report).await;
    match ended {
        Ok(true) => {}
        Ok(false) => report(ExecEvent::Closed(None)),
        Err(why) => report(ExecEvent::Closed(Some(why))),
    }
}

/// Runs the session; true when it ended with a status or a refusal.
async fn exec_session(
    socket: &Path,
    vm_id: String,
    body: Value,
    input: &mut UnboundedReceiver<(u8, Vec<u8>)>,
    report: &impl Fn(ExecEvent),
) -> Result<bool, String> {
    let mut req = SocketRequest::new(1, Op::ExecStream.name()).param("id", vm_id);
    req.body = Some(body);
    let (response, mut reader, mut write) = super::switch_over(socket, &req).await?;
    if response.status != 101 {
        report(ExecEvent::Refused(response));
        return Ok(true);
    }
    report(ExecEvent::Started);
    // The pane types nothing: stdin is closed at once, as without `-i`.
    // A command that ends at once may have its status sent and the
    // connection closed before this lands: a failed write stops the
    // writing, never the reading of what was already sent.
    let mut write_failed = write
        .write_all(&exec_channel::frame(CLOSE, &[STDIN]))
        .await
        .err();
    let mut decoder = MessageDecoder::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut input_open = true;
    loop {
        tokio::select! {
            n = reader.read(&mut buf) => {
                let n = n.map_err(|e| e.to_string())?;
                if n == 0 {
                    return match write_failed {
                        Some(e) => Err(e.to_string()),
                        None => Ok(false),
                    };
                }
                decoder.push(&buf[..n]);
                while let Some((channel, bytes)) = decoder.next_message().map_err(|e| e.to_string())? {
                    match channel {
                        STDOUT | STDERR => report(ExecEvent::Output { stderr: channel == STDERR, bytes }),
                        STATUS => {
                            let status = serde_json::from_slice(&bytes)
                                .map_err(|e| format!("unreadable exec status: {e}"))?;
                            report(ExecEvent::Status(status));
                            return Ok(true);
                        }
                        _ => {}
                    }
                }
            }
            message = input.recv(), if input_open && write_failed.is_none() => match message {
                Some((channel, bytes)) => {
                    let framed = exec_channel::frame(channel, &bytes);
                    write_failed = write.write_all(&framed).await.err();
                }
                None => input_open = false,
            },
        }
    }
}
