//! `writeFile` and `readFile` on the socket. Once accepted (101) the
//! connection carries exec channel framing ([`fastvm_proto::exec_channel`]):
//! a write's bytes come from the client on channel 0 and end with a close
//! of channel 0 (`[255, 0]`); a read's bytes go to the client on channel 1.
//! Either ends with one status message (channel 3): `{"status", "body"}`
//! as any answer's, the body `{"path", "bytes"}` or `{"error"}`.

use fastvm_proto::exec_channel::{self, CLOSE, MessageDecoder, STATUS, STDIN, STDOUT};
use interprocess::local_socket::tokio::Stream;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

use super::connection::{Writer, send_switched};
use crate::service::ServiceError;
use crate::service::files::{FileDownload, FileUpload};

/// Bytes read from the client at a time.
const READ_CHUNK: usize = 64 << 10;

/// The closing status message of a transfer.
fn status(outcome: Result<Value, ServiceError>) -> Vec<u8> {
    let (status, body) = match outcome {
        Ok(body) => (200, body),
        Err(e) => (e.status(), e.body()),
    };
    let message = json!({ "status": status, "body": body }).to_string();
    exec_channel::frame(STATUS, message.as_bytes())
}

/// Answers 101, then passes the client's bytes into the guest until it
/// closes channel 0; the status says whether the file is in place. A client
/// that goes away first leaves nothing written.
pub(super) async fn write(
    mut upload: FileUpload,
    id: u64,
    mut reader: BufReader<&Stream>,
    writer: &Writer,
) {
    if !send_switched(writer, id, json!({})).await {
        return;
    }
    let mut decoder = MessageDecoder::default();
    let mut buf = vec![0u8; READ_CHUNK];
    let outcome = 'relay: loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        decoder.push(&buf[..n]);
        loop {
            match decoder.next_message() {
                Ok(None) => break,
                Ok(Some((STDIN, bytes))) => {
                    if let Err(e) = upload.send(&bytes).await {
                        break 'relay Err(e);
                    }
                }
                Ok(Some((CLOSE, bytes))) if bytes.first() == Some(&STDIN) => {
                    break 'relay upload.finish().await.map(|moved| json!(moved));
                }
                Ok(Some((channel, _))) => {
                    break 'relay Err(ServiceError::BadRequest(format!(
                        "channel {channel}: a file's bytes come on channel 0, ended by [255, 0]"
                    )));
                }
                Err(e) => break 'relay Err(ServiceError::BadRequest(e.to_string())),
            }
        }
    };
    let guard = writer.lock().await;
    let mut client: &Stream = &guard;
    let _ = client.write_all(&status(outcome)).await;
}

/// Answers 101 with the file's size and mode, then sends its bytes and the
/// status.
pub(super) async fn read(mut download: FileDownload, id: u64, writer: &Writer) {
    if !send_switched(writer, id, json!(download.info)).await {
        return;
    }
    let guard = writer.lock().await;
    let mut client: &Stream = &guard;
    let mut bytes = 0u64;
    let outcome = loop {
        match download.next().await {
            Ok(Some(chunk)) => {
                bytes += chunk.len() as u64;
                if client
                    .write_all(&exec_channel::frame(STDOUT, &chunk))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(None) => break Ok(json!({ "path": download.path, "bytes": bytes })),
            Err(e) => break Err(e),
        }
    };
    let _ = client.write_all(&status(outcome)).await;
}
