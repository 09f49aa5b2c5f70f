//! Decoding one [`SocketRequest`] into an [`Operation`] — path parameters
//! from `params`, the request body from `body`, the caller from `apiKey`
//! (or the local default org) — for [`Service::call`], and its [`Reply`]
//! or [`ServiceError`] into a [`SocketResponse`].

use std::path::PathBuf;

use fastvm_proto::api::OrgQuotaValues;
use fastvm_proto::socket::{Op, SocketRequest, SocketResponse, WatchRequest};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::service::exec_stream::ExecSession;
use crate::service::files::{FileDownload, FileUpload};
use crate::service::operation::{Operation, Reply};
use crate::service::{Caller, Event, Service, ServiceError};

/// What a request turns into.
#[derive(Debug)]
pub enum Outcome {
    /// One response frame.
    Reply(SocketResponse),
    /// A `watch` that was accepted: already subscribed (so nothing after
    /// this point is missed); the connection answers 200 and streams.
    Watch {
        /// Only this org's events go out.
        org_id: String,
        /// Which kinds go out.
        filter: WatchRequest,
        /// The subscription.
        events: broadcast::Receiver<Event>,
    },
    /// An `attachConsole` that was accepted: splice the connection to this
    /// console socket.
    Console(PathBuf),
    /// An `execStream` that was started: relay its channel messages.
    ExecStream(ExecSession),
    /// A `writeFile` ready for its bytes.
    FileUpload(FileUpload),
    /// A `readFile` whose bytes follow.
    FileDownload(FileDownload),
}

/// Body of `createOrg`.
#[derive(Deserialize)]
struct CreateOrgBody {
    name: String,
}

/// Body of `createApiKey` (a `name` member is accepted and ignored: keys
/// have no names in the store).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrgBody {
    org_id: String,
}

/// Body of `revokeApiKey` when the key id is not in `params`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RevokeBody {
    key_id: String,
}

/// Body of `setQuotaLimits`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetQuotaBody {
    org_id: String,
    limits: OrgQuotaValues,
}

/// Body of `mintToken`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MintTokenBody {
    org_id: String,
    #[serde(default)]
    ttl_sec: Option<u64>,
}

/// Body of `importImage`.
#[derive(Deserialize)]
struct ImportImageBody {
    name: String,
    path: String,
}

/// Body of `deleteImage`.
#[derive(Deserialize)]
struct DeleteImageBody {
    name: String,
}

/// Runs `req`. Errors of any kind come back as a [`Outcome::Reply`] with
/// the error's status and `{"error": "..."}` body.
pub async fn dispatch(service: &Service, req: &SocketRequest) -> Outcome {
    match handle(service, req).await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Reply(SocketResponse {
            id: req.id,
            status: e.status(),
            body: e.body(),
        }),
    }
}

/// The caller `req` acts for: the key's org with `apiKey` (401 when it is
/// not valid), else the local default org (the admin). A keyed request for
/// an admin operation is refused by the service whoever's key it carries,
/// so the key is not looked at.
async fn caller(service: &Service, req: &SocketRequest, op: Op) -> Result<Caller, ServiceError> {
    match &req.api_key {
        Some(_) if op.is_admin() => Ok(Caller::anonymous()),
        Some(key) => service.authenticate(Some(key.clone()), None).await,
        None => service.default_caller().await,
    }
}

/// The string path parameter `name` (400 naming it when absent or not a
/// string).
fn param<'a>(req: &'a SocketRequest, name: &str) -> Result<&'a str, ServiceError> {
    match req.params.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ServiceError::BadRequest(format!(
            "params.{name}: must be a string"
        ))),
        None => Err(ServiceError::BadRequest(format!("params.{name}: required"))),
    }
}

/// The body decoded as `T`; an absent body is `{}`. 400 with serde's
/// message (which names the field) when it does not fit.
fn body<T: DeserializeOwned>(req: &SocketRequest) -> Result<T, ServiceError> {
    let value = req.body.clone().unwrap_or_else(|| json!({}));
    serde_json::from_value(value).map_err(|e| ServiceError::BadRequest(format!("body: {e}")))
}

async fn handle(service: &Service, req: &SocketRequest) -> Result<Outcome, ServiceError> {
    let Some(op) = req.parsed_op() else {
        return Err(ServiceError::NotFound(format!("unknown op {:?}", req.op)));
    };
    let who = caller(service, req, op).await?;
    let operation = decode(op, req)?;
    Ok(match service.call(&who, operation).await? {
        Reply::Json { status, body } => Outcome::Reply(SocketResponse {
            id: req.id,
            status,
            body,
        }),
        Reply::Watch {
            org_id,
            filter,
            events,
        } => Outcome::Watch {
            org_id,
            filter,
            events,
        },
        Reply::Console(path) => Outcome::Console(path),
        Reply::ExecStream(session) => Outcome::ExecStream(session),
        Reply::FileUpload(upload) => Outcome::FileUpload(upload),
        Reply::FileDownload(download) => Outcome::FileDownload(download),
    })
}

/// The operation `op` with its inputs from `req`.
fn decode(op: Op, req: &SocketRequest) -> Result<Operation, ServiceError> {
    let id = || param(req, "id").map(str::to_string);
    Ok(match op {
        Op::GetHealthz => Operation::GetHealthz,
        Op::GetLivez => Operation::GetLivez,
        Op::GetReadyz => Operation::GetReadyz,
        Op::ListVms => Operation::ListVms,
        Op::CreateVm => Operation::CreateVm(body(req)?),
        Op::GetVm => Operation::GetVm { id: id()? },
        Op::UpdateVm => Operation::UpdateVm {
            id: id()?,
            req: body(req)?,
        },
        Op::DeleteVm => Operation::DeleteVm { id: id()? },
        Op::ReplaceVmFirewall => Operation::ReplaceVmFirewall {
            id: id()?,
            policy: body(req)?,
        },
        Op::PatchVmFirewall => Operation::PatchVmFirewall {
            id: id()?,
            patch: body(req)?,
        },
        Op::CreateVmConsoleToken => Operation::CreateVmConsoleToken { id: id()? },
        Op::ExecVm => Operation::ExecVm {
            id: id()?,
            req: body(req)?,
        },
        Op::CreateSnapshot => Operation::CreateSnapshot(body(req)?),
        Op::ListSnapshots => Operation::ListSnapshots,
        Op::UpdateSnapshot => Operation::UpdateSnapshot {
            id: id()?,
            req: body(req)?,
        },
        Op::DeleteSnapshot => Operation::DeleteSnapshot { id: id()? },
        Op::GetOrgQuotas => Operation::GetOrgQuotas,
        Op::Watch => Operation::Watch(body(req)?),
        Op::AttachConsole => Operation::AttachConsole { id: id()? },
        Op::ExecStream => Operation::ExecStream {
            id: id()?,
            req: body(req)?,
        },
        Op::WriteFile => Operation::WriteFile {
            id: id()?,
            req: body(req)?,
        },
        Op::ReadFile => Operation::ReadFile {
            id: id()?,
            req: body(req)?,
        },
        Op::ForwardPort => Operation::ForwardPort {
            id: id()?,
            req: body(req)?,
        },
        Op::ListForwards => Operation::ListForwards,
        Op::CloseForward => Operation::CloseForward { id: id()? },
        Op::CreateOrg => Operation::CreateOrg {
            name: body::<CreateOrgBody>(req)?.name,
        },
        Op::CreateApiKey => Operation::CreateApiKey {
            org_id: body::<OrgBody>(req)?.org_id,
        },
        Op::RevokeApiKey => Operation::RevokeApiKey {
            key_id: match req.params.contains_key("id") {
                true => id()?,
                false => body::<RevokeBody>(req)?.key_id,
            },
        },
        Op::SetQuotaLimits => {
            let SetQuotaBody { org_id, limits } = body(req)?;
            Operation::SetQuotaLimits { org_id, limits }
        }
        Op::MintToken => {
            let MintTokenBody { org_id, ttl_sec } = body(req)?;
            Operation::MintToken { org_id, ttl_sec }
        }
        Op::ListImages => Operation::ListImages,
        Op::ImportImage => {
            let ImportImageBody { name, path } = body(req)?;
            Operation::ImportImage { name, path }
        }
        Op::DeleteImage => Operation::DeleteImage {
            name: body::<DeleteImageBody>(req)?.name,
        },
    })
}
