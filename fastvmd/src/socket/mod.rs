//! The daemon's local Unix socket front end (`<data dir>/fastvmd.sock`, mode
//! 0600): the protocol of [`fastvm_proto::socket`] over [`Service`].
//!
//! Like the HTTP front end, this module only decodes, calls one service
//! method ([`dispatch`]) and encodes. Decisions of this implementation:
//!
//! - **One task per connection; requests run concurrently.** Each request
//!   frame is dispatched on its own task and answered when done, so answers
//!   may come out of order (match them by `id`). `watch` and
//!   `attachConsole` are decided in order, before the next frame is read:
//!   a `watch` is subscribed before any later request runs, so a dashboard
//!   that sends `watch` and then `listVMs` misses nothing.
//! - **Caller.** Without `apiKey` a frame acts for the local default org;
//!   with it, the key is checked on every frame (401 when unknown or
//!   revoked), including health checks. Admin ops with `apiKey` are 403.
//! - **Bad frames.** A line that is not a request gets 400 (with its `id`
//!   when one could be read, else 0) and the connection goes on; a line over
//!   [`MAX_FRAME`](fastvm_proto::socket::MAX_FRAME) gets 400 with id 0 and
//!   the connection is closed.
//! - **End of input.** When the client closes its sending side, requests
//!   already in flight are still answered; watches end.
//! - **Lagging watch.** A watcher that falls so far behind that the event
//!   buffer dropped events for it gets one final response frame with the
//!   watch's `id`, status 410 and `{"error": "watch fell behind ..."}`, and
//!   that watch ends (the connection stays open). The client should send
//!   `watch` again and re-list.
//! - **attachConsole.** Once accepted (101), requests still in flight on the
//!   connection are cancelled without an answer and watches end; the
//!   connection then carries raw bytes to and from the VM's `console.sock`
//!   until either side closes. Send it on a connection of its own. When the
//!   VM's console cannot be reached the answer is 502 and the connection
//!   goes on with frames.
//! - **execStream.** Params `{"id"}`, body an `ExecStreamRequest`
//!   (`{"command": [...], "tty"?, "cols"?, "rows"?, "cwd"?, "env"?: ["K=V"],
//!   "timeoutSec"?}`). Errors are answered like any request's (400, 404,
//!   409, 429, 502) and the connection goes on; once started it is answered
//!   101 and, as with `attachConsole`, carries nothing else from then on:
//!   exec channel messages ([`fastvm_proto::exec_channel`]), each a `u32`
//!   LE length then the channel byte and its bytes, both ways. The status
//!   message (channel 3) is the last; the client closing the connection
//!   ends the command.
//! - **writeFile / readFile.** Params `{"id"}`, body `{"path", "mode"?}`
//!   (an absolute guest path; `mode` a number, 0o644 when absent). Errors
//!   (400, 404 for a missing file, 409, 429, 502) are answered as usual;
//!   once accepted, 101 (`readFile`'s body: `{"size", "mode"}`), and the
//!   bytes follow in the same framing as `execStream`'s: a write's from
//!   the client on channel 0 ended by `[255, 0]`, a read's to the client on
//!   channel 1; then one status message on channel 3, `{"status", "body"}`
//!   (`{"path", "bytes"}` or `{"error"}`). See `socket::file_relay`.
//! - **Admin answers.** `createOrg` -> `{"id", "name", "apiKey": {"id",
//!   "orgId", "key", "prefix"}}`; `createApiKey` -> `{"id", "orgId", "key",
//!   "prefix"}`; `revokeApiKey` (params `{"id"}` or body `{"keyId"}`) ->
//!   `{"id", "revoked": true}`; `setQuotaLimits` -> `OrgQuotaUsage`;
//!   `mintToken` (`ttlSec` default 3600, at most 30 days) -> `{"token",
//!   "expiresAt"}` (RFC 3339).

mod connection;
pub mod dispatch;
mod exec_relay;
mod file_relay;
#[cfg(test)]
mod tests;

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use interprocess::os::unix::local_socket::ListenerOptionsExt;

use crate::service::Service;

pub use dispatch::{Outcome, dispatch};

/// The listening socket [`serve`] accepts on.
pub type Listener = interprocess::local_socket::tokio::Listener;

/// File name of the socket in the data directory.
pub const SOCKET_FILE: &str = "fastvmd.sock";

/// Binds the socket at `path` with mode 0600. A stale socket file left by a
/// daemon that is gone is removed first; a socket some process still
/// accepts on is `AddrInUse`, and a path that is not a socket is
/// `AlreadyExists` (neither is touched).
pub fn bind(path: &Path) -> io::Result<Listener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{}: another daemon is listening", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let name = path.to_fs_name::<GenericFilePath>()?;
    let listener = ListenerOptions::new()
        .name(name)
        .mode(0o600)
        .create_tokio()?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts connections forever, one task each. Accept errors (such as
/// running out of file descriptors) are logged and retried after a short
/// pause. Stop it by dropping or aborting its task; dropping the listener
/// removes the socket file.
pub async fn serve(listener: Listener, service: Service) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                tokio::spawn(connection::run(stream, service.clone()));
            }
            Err(e) => {
                tracing::warn!("socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
