//! Decoding one [`SocketRequest`] and calling the one [`Service`] method its
//! `op` names: path parameters from `params`, the request body from `body`,
//! the caller from `apiKey` (or the local default org), and the answer or
//! [`ServiceError`] turned into a [`SocketResponse`].

use std::path::PathBuf;
use std::time::Duration;

use fastvm_proto::api::OrgQuotaValues;
use fastvm_proto::socket::{Op, SocketRequest, SocketResponse, WatchRequest};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::service::{Caller, Event, Service, ServiceError};
use crate::store::{format_rfc3339, now_ms};

/// Lifetime of a minted JWT when `ttlSec` is absent (one hour).
pub const DEFAULT_TOKEN_TTL_SEC: u64 = 3600;
/// Longest lifetime `mintToken` grants (30 days).
pub const MAX_TOKEN_TTL_SEC: u64 = 30 * 24 * 3600;

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
/// not valid), else the local default org. Admin ops refuse `apiKey` (403).
async fn caller(service: &Service, req: &SocketRequest, op: Op) -> Result<Caller, ServiceError> {
    match &req.api_key {
        Some(_) if op.is_admin() => Err(ServiceError::Forbidden(format!(
            "{}: admin operations are only for the local default org (no apiKey)",
            op.name()
        ))),
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

/// A success response with `value` as its body.
fn reply<T: Serialize>(
    req: &SocketRequest,
    status: u16,
    value: T,
) -> Result<Outcome, ServiceError> {
    SocketResponse::new(req.id, status, &value)
        .map(Outcome::Reply)
        .map_err(|e| ServiceError::Internal(format!("cannot encode the answer: {e}")))
}

/// `ttlSec` checked against 1..=[`MAX_TOKEN_TTL_SEC`].
fn token_ttl(ttl_sec: Option<u64>) -> Result<u64, ServiceError> {
    match ttl_sec.unwrap_or(DEFAULT_TOKEN_TTL_SEC) {
        ttl @ 1..=MAX_TOKEN_TTL_SEC => Ok(ttl),
        _ => Err(ServiceError::BadRequest(format!(
            "body.ttlSec: must be 1 to {MAX_TOKEN_TTL_SEC}"
        ))),
    }
}

async fn handle(service: &Service, req: &SocketRequest) -> Result<Outcome, ServiceError> {
    let Some(op) = req.parsed_op() else {
        return Err(ServiceError::NotFound(format!("unknown op {:?}", req.op)));
    };
    let who = caller(service, req, op).await?;
    let s = service;
    match op {
        Op::GetHealthz => reply(req, 200, s.get_healthz().await?),
        Op::GetLivez => reply(req, 200, s.get_livez().await?),
        Op::GetReadyz => reply(req, 200, s.get_readyz().await?),
        Op::ListVms => reply(req, 200, s.list_vms(&who).await?),
        Op::CreateVm => {
            let (status, vm) = s.create_vm(&who, body(req)?).await?;
            reply(req, status, vm)
        }
        Op::GetVm => reply(req, 200, s.get_vm(&who, param(req, "id")?).await?),
        Op::UpdateVm => reply(
            req,
            200,
            s.update_vm(&who, param(req, "id")?, body(req)?).await?,
        ),
        Op::DeleteVm => reply(req, 200, s.delete_vm(&who, param(req, "id")?).await?),
        Op::ReplaceVmFirewall => {
            let id = param(req, "id")?;
            reply(req, 200, s.replace_vm_firewall(&who, id, body(req)?).await?)
        }
        Op::PatchVmFirewall => {
            let id = param(req, "id")?;
            reply(req, 200, s.patch_vm_firewall(&who, id, body(req)?).await?)
        }
        Op::CreateVmConsoleToken => {
            let id = param(req, "id")?;
            reply(req, 200, s.create_vm_console_token(&who, id).await?)
        }
        Op::ExecVm => reply(
            req,
            200,
            s.exec_vm(&who, param(req, "id")?, body(req)?).await?,
        ),
        Op::CreateSnapshot => reply(req, 201, s.create_snapshot(&who, body(req)?).await?),
        Op::ListSnapshots => reply(req, 200, s.list_snapshots(&who).await?),
        Op::UpdateSnapshot => {
            let id = param(req, "id")?;
            reply(req, 200, s.update_snapshot(&who, id, body(req)?).await?)
        }
        Op::DeleteSnapshot => reply(req, 200, s.delete_snapshot(&who, param(req, "id")?).await?),
        Op::GetOrgQuotas => reply(req, 200, s.get_org_quotas(&who).await?),
        Op::Watch => {
            let filter: WatchRequest = body(req)?;
            Ok(Outcome::Watch {
                org_id: who.org_id,
                filter,
                events: s.subscribe(),
            })
        }
        Op::AttachConsole => Ok(Outcome::Console(
            s.console_socket(&who, param(req, "id")?).await?,
        )),
        Op::CreateOrg => {
            let CreateOrgBody { name } = body(req)?;
            let key = s.create_org(name.clone()).await?;
            reply(
                req,
                200,
                json!({ "id": key.org_id, "name": name, "apiKey": key }),
            )
        }
        Op::CreateApiKey => {
            let OrgBody { org_id } = body(req)?;
            reply(req, 200, s.create_api_key(org_id).await?)
        }
        Op::RevokeApiKey => {
            let key_id = match req.params.contains_key("id") {
                true => param(req, "id")?.to_string(),
                false => body::<RevokeBody>(req)?.key_id,
            };
            s.revoke_api_key(key_id.clone()).await?;
            reply(req, 200, json!({ "id": key_id, "revoked": true }))
        }
        Op::SetQuotaLimits => {
            let SetQuotaBody { org_id, limits } = body(req)?;
            reply(req, 200, s.set_quota_limits(org_id, limits).await?)
        }
        Op::MintToken => {
            let MintTokenBody { org_id, ttl_sec } = body(req)?;
            let ttl = token_ttl(ttl_sec)?;
            let token = s.mint_token(org_id, Duration::from_secs(ttl)).await?;
            let expires_at = format_rfc3339(now_ms() + (ttl as i64) * 1000);
            reply(req, 200, json!({ "token": token, "expiresAt": expires_at }))
        }
    }
}
