//! `execStream` on the socket: once started, the connection carries exec
//! channel messages, length-prefixed, both ways until the status goes out
//! or the client closes.

use fastvm_proto::exec_channel::{self, MessageDecoder, STATUS};
use interprocess::local_socket::tokio::Stream;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

use super::connection::{Writer, send_switched};
use crate::service::exec_stream::{ExecSession, InputError};

/// Bytes read from the client at a time.
const READ_CHUNK: usize = 64 << 10;

/// Answers 101, then relays until the command's status has gone out, the
/// client closes or sends something malformed (told so in a status).
pub(super) async fn relay(
    session: ExecSession,
    id: u64,
    mut reader: BufReader<&Stream>,
    writer: &Writer,
) {
    if !send_switched(writer, id, json!({})).await {
        return;
    }
    let guard = writer.lock().await;
    let mut client: &Stream = &guard;
    let ExecSession {
        vm_id,
        mut input,
        mut output,
    } = session;
    let mut decoder = MessageDecoder::default();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        tokio::select! {
            message = output.next() => {
                let Some((channel, bytes)) = message else { break };
                let sent = client.write_all(&exec_channel::frame(channel, &bytes)).await;
                if sent.is_err() || channel == STATUS {
                    break;
                }
            }
            read = reader.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                decoder.push(&buf[..n]);
                let refused = loop {
                    match decoder.next_message() {
                        Ok(None) => break None,
                        Ok(Some((channel, bytes))) => match input.message(channel, &bytes).await {
                            Ok(()) | Err(InputError::Agent(_)) => {}
                            Err(InputError::Client(why)) => break Some(why),
                        },
                        Err(e) => break Some(e.to_string()),
                    }
                };
                if let Some(why) = refused {
                    if let Some((channel, bytes)) = output.fail(&why) {
                        let _ = client.write_all(&exec_channel::frame(channel, &bytes)).await;
                    }
                    break;
                }
            }
        }
    }
    tracing::debug!("exec stream on VM {vm_id} ended");
}
