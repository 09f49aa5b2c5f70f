//! Frames of the daemon's local Unix socket (`$FASTVM_SOCKET`, default
//! `<data dir>/fastvmd.sock`, mode 0600).
//!
//! # Framing
//!
//! Newline-delimited JSON: each frame is one JSON object on one line, ended by
//! `\n` (a `\r` before it is tolerated). A line longer than [`MAX_FRAME`]
//! bytes (newline excluded) is an error; the receiver drops the connection.
//! Any number of requests may be in flight on one connection; answers carry
//! the request's `id` and may come in any order.
//!
//! # Requests and responses
//!
//! ```text
//! -> {"id":7,"op":"getVM","params":{"id":"6f1c..."}}
//! -> {"id":8,"op":"createVM","body":{"machineType":"c1m2"},"apiKey":"hlm_..."}
//! <- {"id":7,"status":200,"body":{"id":"6f1c...","name":"dev",...}}
//! <- {"id":8,"status":201,"body":{...}}
//! ```
//!
//! [`SocketRequest`]: `op` names the operation, `params` holds the path
//! parameters (`{"id": "..."}`), `body` the JSON request body. Without
//! `apiKey` the caller acts for the local default org (the socket is 0600, so
//! only the owner reaches it); with it, for that key's org.
//!
//! [`SocketResponse`]: `status` is the HTTP status the same call over HTTP
//! would get, `body` its JSON body; errors are `{"error": "..."}`
//! ([`crate::api::ErrorResponse`]). A frame that is not a request gets status
//! 400 with `id` 0 when its `id` could not be read; an unknown `op` gets 404.
//!
//! # Operations
//!
//! Every OpenAPI operationId ([`Op`]): `getHealthz`, `getLivez`, `getReadyz`,
//! `listVMs`, `createVM`, `getVM`, `updateVM`, `deleteVM`,
//! `replaceVMFirewall`, `patchVMFirewall`, `createVMConsoleToken`, `execVM`,
//! `createSnapshot`, `listSnapshots`, `updateSnapshot`, `deleteSnapshot`,
//! `getOrgQuotas` (`connectVMConsoleWebsocket` is HTTP only; the socket has
//! `attachConsole`). Socket-only operations:
//!
//! - `watch`: body `{"events": ["vm", "snapshot", "quota"]}` (optional; all
//!   kinds when absent). Answered once with status 200 and body `{}`, then a
//!   [`SocketEvent`] frame with the watch request's `id` for every change in
//!   the caller's org, until the connection closes. To avoid missing changes,
//!   a dashboard sends `watch` first, then `listVMs` / `listSnapshots`.
//! - `attachConsole`: params `{"id": vmId}`. Answered with status 101 and body
//!   `{}`; from then on the connection carries raw console bytes both ways
//!   (no more frames) until either side closes. 409 when the VM is not running.
//! - `execStream`: params `{"id": vmId}`, body a
//!   [`crate::api::ExecStreamRequest`]. Answered with status 101 and body
//!   `{}`; from then on the connection carries exec channel messages both
//!   ways ([`crate::exec_channel`]), until the status message or the
//!   client's close (which ends the command). Errors (400, 404, 409 when the
//!   VM is not running or its agent has no streams, 429, 502) are answered
//!   like any request's.
//! - `writeFile` / `readFile`: params `{"id": vmId}`, body a
//!   [`crate::api::FileRequest`] (`{"path", "mode"?}`). Answered 101
//!   (`readFile`: body [`crate::api::FileInfo`]), then the file's bytes in
//!   exec channel framing (a write's on channel 0 from the client, ended by
//!   `[255, 0]`; a read's on channel 1), then one channel 3 message
//!   `{"status", "body"}`: 200 with [`crate::api::FileMoved`], or an error.
//! - `forwardPort`: params `{"id": vmId}`, body
//!   [`crate::api::ForwardRequest`] (`{"guestPort", "hostPort"?}`) -> 201,
//!   [`crate::api::ForwardInfo`]: connections to `hostAddress`
//!   (127.0.0.1) reach the guest's port through its agent. 409 when the
//!   VM is not running or the host port is taken. `listForwards` -> 200
//!   `{"forwards": [...]}` (the caller's org's); `closeForward` (params
//!   `{"id": forwardId}`) -> 200 the forward closed, 404 when there is no
//!   such forward. A VM's forwards go with it; none outlives the daemon.
//! - Admin (default org's socket caller only; an `apiKey` caller gets 403):
//!   `createOrg` (body `{"name"}` -> the org), `createApiKey` (body
//!   `{"orgId", "name"?}` -> `{"id", "key"}`, the key shown only here),
//!   `revokeApiKey` (params `{"id"}`), `setQuotaLimits` (body `{"orgId",
//!   "limits": OrgQuotaValues}`), `mintToken` (body `{"orgId", "ttlSec"?}` ->
//!   `{"token", "expiresAt"}`, an HS256 JWT).
//! - Named images (what createVM's `image` names; shared by every org):
//!   `listImages` (no body, or `{}`; any caller) -> status 200,
//!   `{"images": [ImageSummary...]}` by name
//!   ([`crate::api::ImageList`]); admin only: `importImage` (body `{"name",
//!   "path"}`, `path` an absolute path on the daemon's host to a `docker
//!   save` archive or an OCI image layout, directory or tar) -> status 201,
//!   the [`crate::api::ImageSummary`]; 400 when the name or the image is
//!   not valid, 409 when the name is taken; `deleteImage` (body `{"name"}`)
//!   -> status 204, body `{}`; 404 when there is no such image, 409 while a
//!   VM of any org booted from it is not deleted.
//!
//! # Events
//!
//! ```text
//! <- {"id":3,"event":"vm","op":"updated","data":{...VMInstance...}}
//! ```
//!
//! `data` is the object after the change: a `VMInstance`, a `SnapshotObject`
//! or an `OrgQuotaUsage`; for `deleted`, the object as it was last.

use std::io::{self, BufRead, Read};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::api::ErrorResponse;

/// Longest frame, in bytes without the newline (64 MiB, like the agent's
/// payload limit: an exec answer carries up to two capped outputs, escaped).
pub const MAX_FRAME: usize = 64 << 20;

/// A call on the socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocketRequest {
    /// Chosen by the client; echoed in the response and in watch events.
    pub id: u64,
    /// Operation name: an OpenAPI operationId or a socket-only op ([`Op`]).
    pub op: String,
    /// Path parameters, e.g. `{"id": "<uuid>"}`; omitted when empty.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Map<String, Value>,
    /// Request body, for operations that take one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Act as this API key's org instead of the local default org.
    #[serde(rename = "apiKey", default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

impl SocketRequest {
    /// A request with no params, body or key.
    pub fn new(id: u64, op: impl Into<String>) -> Self {
        SocketRequest {
            id,
            op: op.into(),
            params: Map::new(),
            body: None,
            api_key: None,
        }
    }

    /// Adds the path parameter `name` = `value`.
    pub fn param(mut self, name: &str, value: impl Into<String>) -> Self {
        self.params.insert(name.into(), Value::String(value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// The operation, when `op` names one.
    pub fn parsed_op(&self) -> Option<Op> {
        Op::from_name(&self.op)
    }

    /// The string path parameter `name`, if present.
    pub fn param_str(&self, name: &str) -> Option<&str> {
        self.params.get(name).and_then(Value::as_str)
    }
}

/// The answer to one [`SocketRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocketResponse {
    /// The request's `id`.
    pub id: u64,
    /// HTTP status number.
    pub status: u16,
    /// JSON body; `{"error": "..."}` when `status` is not 2xx/101.
    pub body: Value,
}

impl SocketResponse {
    /// A response whose body is `body` serialized.
    pub fn new<T: Serialize>(id: u64, status: u16, body: &T) -> Result<Self, serde_json::Error> {
        Ok(SocketResponse {
            id,
            status,
            body: serde_json::to_value(body)?,
        })
    }

    /// An error response with body `{"error": message}`.
    pub fn error(id: u64, status: u16, message: impl Into<String>) -> Self {
        SocketResponse {
            id,
            status,
            body: serde_json::json!(ErrorResponse::new(message)),
        }
    }

    /// Whether `status` is 1xx or 2xx.
    pub fn is_success(&self) -> bool {
        (100..300).contains(&self.status)
    }

    /// The error message, when the body is an [`ErrorResponse`].
    pub fn error_message(&self) -> Option<&str> {
        self.body.get("error").and_then(Value::as_str)
    }
}

/// What kind of object a [`SocketEvent`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    /// `data` is a `VMInstance`.
    Vm,
    /// `data` is a `SnapshotObject`.
    Snapshot,
    /// `data` is an `OrgQuotaUsage`.
    Quota,
}

/// What happened to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventOp {
    /// It was created.
    Created,
    /// It changed (status, name, firewall, usage...).
    Updated,
    /// It is gone.
    Deleted,
}

/// A change pushed to a `watch` caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocketEvent {
    /// The `id` of the `watch` request.
    pub id: u64,
    /// Object kind.
    pub event: EventKind,
    /// Change kind.
    pub op: EventOp,
    /// The object after the change (as it was last, for `deleted`).
    pub data: Value,
}

/// Body of a `watch` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRequest {
    /// Kinds to receive; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<EventKind>>,
}

impl WatchRequest {
    /// Whether events of `kind` are wanted.
    pub fn wants(&self, kind: EventKind) -> bool {
        self.events.as_ref().is_none_or(|k| k.contains(&kind))
    }
}

/// Any frame the daemon sends: a response or a watch event (told apart by
/// the `status` / `event` member).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServerFrame {
    /// An answer to a request.
    Response(SocketResponse),
    /// A change event on a `watch`.
    Event(SocketEvent),
}

/// Defines [`Op`] with its wire names.
macro_rules! ops {
    ($($(#[$meta:meta])* $variant:ident = $name:literal,)+) => {
        /// Every operation the socket knows, named on the wire by [`Op::name`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Op {
            $($(#[$meta])* $variant,)+
        }

        impl Op {
            /// Every operation.
            pub const ALL: &'static [Op] = &[$(Op::$variant,)+];

            /// The wire name (the OpenAPI operationId for API operations).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Op::$variant => $name,)+
                }
            }

            /// The operation named `name`, if any (case-sensitive).
            pub fn from_name(name: &str) -> Option<Op> {
                match name {
                    $($name => Some(Op::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

ops! {
    /// `GET /healthz`.
    GetHealthz = "getHealthz",
    /// `GET /livez`.
    GetLivez = "getLivez",
    /// `GET /readyz`.
    GetReadyz = "getReadyz",
    /// `GET /v1/vms`.
    ListVms = "listVMs",
    /// `POST /v1/vms`.
    CreateVm = "createVM",
    /// `GET /v1/vms/{id}`.
    GetVm = "getVM",
    /// `PATCH /v1/vms/{id}`.
    UpdateVm = "updateVM",
    /// `DELETE /v1/vms/{id}`.
    DeleteVm = "deleteVM",
    /// `PUT /v1/vms/{id}/firewall`.
    ReplaceVmFirewall = "replaceVMFirewall",
    /// `PATCH /v1/vms/{id}/firewall`.
    PatchVmFirewall = "patchVMFirewall",
    /// `POST /v1/vms/{id}/console-token`.
    CreateVmConsoleToken = "createVMConsoleToken",
    /// `POST /v1/vms/{id}/exec`.
    ExecVm = "execVM",
    /// `POST /v1/snapshots`.
    CreateSnapshot = "createSnapshot",
    /// `GET /v1/snapshots`.
    ListSnapshots = "listSnapshots",
    /// `PATCH /v1/snapshots/{id}`.
    UpdateSnapshot = "updateSnapshot",
    /// `DELETE /v1/snapshots/{id}`.
    DeleteSnapshot = "deleteSnapshot",
    /// `GET /v1/org/quotas`.
    GetOrgQuotas = "getOrgQuotas",
    /// Socket only: stream change events.
    Watch = "watch",
    /// Socket only: switch the connection to raw console bytes.
    AttachConsole = "attachConsole",
    /// Socket only: a streaming exec; the connection then carries exec
    /// channel messages ([`crate::exec_channel`]).
    ExecStream = "execStream",
    /// Socket only: write a file into a VM (its bytes follow the 101).
    WriteFile = "writeFile",
    /// Socket only: read a file out of a VM (its bytes follow the 101).
    ReadFile = "readFile",
    /// Socket only: forward a port of the daemon's host into a VM.
    ForwardPort = "forwardPort",
    /// Socket only: the caller's org's port forwards.
    ListForwards = "listForwards",
    /// Socket only: close a port forward.
    CloseForward = "closeForward",
    /// Admin: create an organization.
    CreateOrg = "createOrg",
    /// Admin: create an API key for an org.
    CreateApiKey = "createApiKey",
    /// Admin: revoke an API key.
    RevokeApiKey = "revokeApiKey",
    /// Admin: set an org's quota limits.
    SetQuotaLimits = "setQuotaLimits",
    /// Admin: mint a JWT for an org.
    MintToken = "mintToken",
    /// Socket only: the named images.
    ListImages = "listImages",
    /// Admin: import a container image on the daemon's host as a named image.
    ImportImage = "importImage",
    /// Admin: delete a named image no VM uses.
    DeleteImage = "deleteImage",
}

impl Op {
    /// Whether only the local default-org caller may use it.
    pub const fn is_admin(self) -> bool {
        matches!(
            self,
            Op::CreateOrg
                | Op::CreateApiKey
                | Op::RevokeApiKey
                | Op::SetQuotaLimits
                | Op::MintToken
                | Op::ImportImage
                | Op::DeleteImage
        )
    }
}

/// Why a frame could not be encoded, read or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A line (or an encoded frame) is longer than [`MAX_FRAME`].
    #[error("frame longer than {MAX_FRAME} bytes")]
    TooLong,
    /// The line is not the expected JSON object.
    #[error("bad frame: {0}")]
    Json(#[from] serde_json::Error),
    /// Reading from the stream failed.
    #[error("socket read failed: {0}")]
    Io(#[from] io::Error),
}

/// `frame` as one JSON line, newline included.
pub fn encode_frame<T: Serialize>(frame: &T) -> Result<Vec<u8>, FrameError> {
    let mut line = serde_json::to_vec(frame)?;
    if line.len() > MAX_FRAME {
        return Err(FrameError::TooLong);
    }
    line.push(b'\n');
    Ok(line)
}

/// Decodes one line (with or without its `\n` / `\r\n`).
pub fn decode_frame<T: DeserializeOwned>(line: &[u8]) -> Result<T, FrameError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_FRAME {
        return Err(FrameError::TooLong);
    }
    Ok(serde_json::from_slice(line)?)
}

/// Reads and decodes the next frame from a blocking reader; `Ok(None)` at a
/// clean end of stream. `buf` is scratch space reused between calls. Never
/// buffers more than [`MAX_FRAME`] + 1 bytes.
pub fn read_frame<R: BufRead, T: DeserializeOwned>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Option<T>, FrameError> {
    buf.clear();
    let limit = (MAX_FRAME + 2) as u64;
    let n = reader.by_ref().take(limit).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if !buf.ends_with(b"\n") {
        if n as u64 >= limit {
            return Err(FrameError::TooLong);
        }
        return Err(FrameError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "stream ended inside a frame",
        )));
    }
    decode_frame(buf).map(Some)
}

#[cfg(test)]
mod tests;
