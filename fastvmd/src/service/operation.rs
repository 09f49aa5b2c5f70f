//! Every operation of the daemon as one typed value, and the one entry both
//! front ends call: [`Service::call`]. The HTTP handlers and the socket only
//! decode a request into an [`Operation`] and encode the [`Reply`]; which
//! caller may run what and which status an answer has are decided here.

use std::path::PathBuf;
use std::time::Duration;

use fastvm_proto::api::{
    CreateSnapshotRequest, CreateVmRequest, ExecStreamRequest, ExecVmRequest, FileRequest,
    FirewallPolicy, ForwardRequest, OrgQuotaValues, PatchVmFirewallRequest, UpdateSnapshotRequest,
    UpdateVmRequest,
};
use fastvm_proto::socket::{Op, WatchRequest};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::exec_stream::ExecSession;
use super::files::{FileDownload, FileUpload};
use super::{Caller, Event, Service, ServiceError};
use crate::store::{format_rfc3339, now_ms};

/// Lifetime of a minted JWT when `ttlSec` is absent (one hour).
pub const DEFAULT_TOKEN_TTL_SEC: u64 = 3600;
/// Longest lifetime `mintToken` grants (30 days).
pub const MAX_TOKEN_TTL_SEC: u64 = 30 * 24 * 3600;

/// One operation with its decoded inputs. Ids are as the caller sent them
/// (the service checks their form).
#[derive(Debug)]
pub enum Operation {
    GetHealthz,
    GetLivez,
    GetReadyz,
    ListVms,
    CreateVm(CreateVmRequest),
    GetVm {
        id: String,
    },
    UpdateVm {
        id: String,
        req: UpdateVmRequest,
    },
    DeleteVm {
        id: String,
    },
    ReplaceVmFirewall {
        id: String,
        policy: FirewallPolicy,
    },
    PatchVmFirewall {
        id: String,
        patch: PatchVmFirewallRequest,
    },
    CreateVmConsoleToken {
        id: String,
    },
    ExecVm {
        id: String,
        req: ExecVmRequest,
    },
    CreateSnapshot(CreateSnapshotRequest),
    ListSnapshots,
    UpdateSnapshot {
        id: String,
        req: UpdateSnapshotRequest,
    },
    DeleteSnapshot {
        id: String,
    },
    GetOrgQuotas,
    /// The org's change events from now on (socket only).
    Watch(WatchRequest),
    /// The console of a running VM, to splice (socket only).
    AttachConsole {
        id: String,
    },
    /// A streaming exec (the socket's `execStream`, HTTP's `exec/ws`).
    ExecStream {
        id: String,
        req: ExecStreamRequest,
    },
    /// A file written into a VM (its bytes follow).
    WriteFile {
        id: String,
        req: FileRequest,
    },
    /// A file read out of a VM.
    ReadFile {
        id: String,
        req: FileRequest,
    },
    /// A port of the daemon's host forwarded into VM `id` (socket only).
    ForwardPort {
        id: String,
        req: ForwardRequest,
    },
    /// The caller's org's port forwards (socket only).
    ListForwards,
    /// Close port forward `id` (socket only).
    CloseForward {
        id: String,
    },
    CreateOrg {
        name: String,
    },
    CreateApiKey {
        org_id: String,
    },
    RevokeApiKey {
        key_id: String,
    },
    SetQuotaLimits {
        org_id: String,
        limits: OrgQuotaValues,
    },
    MintToken {
        org_id: String,
        ttl_sec: Option<u64>,
    },
    /// The named images (socket only; any caller).
    ListImages,
    /// Import the container image at `path` on the daemon's host as `name`.
    ImportImage {
        name: String,
        path: String,
    },
    /// Delete named image `name`, unless a VM booted from it is not deleted.
    DeleteImage {
        name: String,
    },
}

/// What an operation answers.
#[derive(Debug)]
pub enum Reply {
    /// A status and a JSON body.
    Json { status: u16, body: Value },
    /// An accepted watch: already subscribed (so nothing after this point
    /// is missed); the front end answers 200 and streams.
    Watch {
        /// Only this org's events go out.
        org_id: String,
        /// Which kinds go out.
        filter: WatchRequest,
        /// The subscription.
        events: broadcast::Receiver<Event>,
    },
    /// An accepted console attach: the monitor's console socket to splice
    /// (the front end never shows this path to the caller).
    Console(PathBuf),
    /// A started streaming exec; the front end answers 101 and relays its
    /// channel messages.
    ExecStream(ExecSession),
    /// A write ready for its bytes.
    FileUpload(FileUpload),
    /// A read whose bytes follow.
    FileDownload(FileDownload),
}

impl Operation {
    /// Its wire name: the OpenAPI operationId, or the socket's own name.
    pub fn op(&self) -> Op {
        match self {
            Operation::GetHealthz => Op::GetHealthz,
            Operation::GetLivez => Op::GetLivez,
            Operation::GetReadyz => Op::GetReadyz,
            Operation::ListVms => Op::ListVms,
            Operation::CreateVm(_) => Op::CreateVm,
            Operation::GetVm { .. } => Op::GetVm,
            Operation::UpdateVm { .. } => Op::UpdateVm,
            Operation::DeleteVm { .. } => Op::DeleteVm,
            Operation::ReplaceVmFirewall { .. } => Op::ReplaceVmFirewall,
            Operation::PatchVmFirewall { .. } => Op::PatchVmFirewall,
            Operation::CreateVmConsoleToken { .. } => Op::CreateVmConsoleToken,
            Operation::ExecVm { .. } => Op::ExecVm,
            Operation::CreateSnapshot(_) => Op::CreateSnapshot,
            Operation::ListSnapshots => Op::ListSnapshots,
            Operation::UpdateSnapshot { .. } => Op::UpdateSnapshot,
            Operation::DeleteSnapshot { .. } => Op::DeleteSnapshot,
            Operation::GetOrgQuotas => Op::GetOrgQuotas,
            Operation::Watch(_) => Op::Watch,
            Operation::AttachConsole { .. } => Op::AttachConsole,
            Operation::ExecStream { .. } => Op::ExecStream,
            Operation::WriteFile { .. } => Op::WriteFile,
            Operation::ReadFile { .. } => Op::ReadFile,
            Operation::ForwardPort { .. } => Op::ForwardPort,
            Operation::ListForwards => Op::ListForwards,
            Operation::CloseForward { .. } => Op::CloseForward,
            Operation::CreateOrg { .. } => Op::CreateOrg,
            Operation::CreateApiKey { .. } => Op::CreateApiKey,
            Operation::RevokeApiKey { .. } => Op::RevokeApiKey,
            Operation::SetQuotaLimits { .. } => Op::SetQuotaLimits,
            Operation::MintToken { .. } => Op::MintToken,
            Operation::ListImages => Op::ListImages,
            Operation::ImportImage { .. } => Op::ImportImage,
            Operation::DeleteImage { .. } => Op::DeleteImage,
        }
    }
}

/// A 200 (or `status`) answer with `value` as its body.
fn json_reply(status: u16, value: impl Serialize) -> Result<Reply, ServiceError> {
    let body = serde_json::to_value(value)
        .map_err(|e| ServiceError::Internal(format!("cannot encode the answer: {e}")))?;
    Ok(Reply::Json { status, body })
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

impl Service {
    /// Runs `operation` for `caller`. Admin operations are only for the
    /// local default org's caller ([`Caller::admin`]); anyone else gets 403.
    pub async fn call(&self, caller: &Caller, operation: Operation) -> Result<Reply, ServiceError> {
        let op = operation.op();
        if op.is_admin() && !caller.admin {
            return Err(ServiceError::Forbidden(format!(
                "{}: admin operations are only for the local default org (no apiKey)",
                op.name()
            )));
        }
        let c = caller;
        match operation {
            Operation::GetHealthz => json_reply(200, self.get_healthz().await?),
            Operation::GetLivez => json_reply(200, self.get_livez().await?),
            Operation::GetReadyz => json_reply(200, self.get_readyz().await?),
            Operation::ListVms => json_reply(200, self.list_vms(c).await?),
            Operation::CreateVm(req) => {
                let (status, vm) = self.create_vm(c, req).await?;
                json_reply(status, vm)
            }
            Operation::GetVm { id } => json_reply(200, self.get_vm(c, &id).await?),
            Operation::UpdateVm { id, req } => json_reply(200, self.update_vm(c, &id, req).await?),
            Operation::DeleteVm { id } => json_reply(200, self.delete_vm(c, &id).await?),
            Operation::ReplaceVmFirewall { id, policy } => {
                json_reply(200, self.replace_vm_firewall(c, &id, policy).await?)
            }
            Operation::PatchVmFirewall { id, patch } => {
                json_reply(200, self.patch_vm_firewall(c, &id, patch).await?)
            }
            Operation::CreateVmConsoleToken { id } => {
                json_reply(200, self.create_vm_console_token(c, &id).await?)
            }
            Operation::ExecVm { id, req } => json_reply(200, self.exec_vm(c, &id, req).await?),
            Operation::CreateSnapshot(req) => json_reply(201, self.create_snapshot(c, req).await?),
            Operation::ListSnapshots => json_reply(200, self.list_snapshots(c).await?),
            Operation::UpdateSnapshot { id, req } => {
                json_reply(200, self.update_snapshot(c, &id, req).await?)
            }
            Operation::DeleteSnapshot { id } => {
                json_reply(200, self.delete_snapshot(c, &id).await?)
            }
            Operation::GetOrgQuotas => json_reply(200, self.get_org_quotas(c).await?),
            Operation::Watch(filter) => Ok(Reply::Watch {
                org_id: c.org_id.clone(),
                filter,
                events: self.subscribe(),
            }),
            Operation::AttachConsole { id } => {
                Ok(Reply::Console(self.console_socket(c, &id).await?))
            }
            Operation::ExecStream { id, req } => {
                Ok(Reply::ExecStream(self.exec_stream(c, &id, req).await?))
            }
            Operation::WriteFile { id, req } => {
                Ok(Reply::FileUpload(self.write_file(c, &id, req).await?))
            }
            Operation::ReadFile { id, req } => {
                Ok(Reply::FileDownload(self.read_file(c, &id, req).await?))
            }
            Operation::ForwardPort { id, req } => {
                json_reply(201, self.forward_port(c, &id, req).await?)
            }
            Operation::ListForwards => json_reply(200, self.list_forwards(c)),
            Operation::CloseForward { id } => json_reply(200, self.close_forward(c, &id)?),
            Operation::CreateOrg { name } => {
                let key = self.create_org(name.clone()).await?;
                json_reply(
                    200,
                    json!({ "id": key.org_id, "name": name, "apiKey": key }),
                )
            }
            Operation::CreateApiKey { org_id } => {
                json_reply(200, self.create_api_key(org_id).await?)
            }
            Operation::RevokeApiKey { key_id } => {
                self.revoke_api_key(key_id.clone()).await?;
                json_reply(200, json!({ "id": key_id, "revoked": true }))
            }
            Operation::SetQuotaLimits { org_id, limits } => {
                json_reply(200, self.set_quota_limits(org_id, limits).await?)
            }
            Operation::MintToken { org_id, ttl_sec } => {
                let ttl = token_ttl(ttl_sec)?;
                let token = self.mint_token(org_id, Duration::from_secs(ttl)).await?;
                let expires_at = format_rfc3339(now_ms() + (ttl as i64) * 1000);
                json_reply(200, json!({ "token": token, "expiresAt": expires_at }))
            }
            Operation::ListImages => json_reply(200, self.list_images().await?),
            Operation::ImportImage { name, path } => {
                json_reply(201, self.import_image(name, path).await?)
            }
            Operation::DeleteImage { name } => {
                self.delete_image(name).await?;
                json_reply(204, json!({}))
            }
        }
    }
}
