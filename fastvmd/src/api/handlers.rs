//! One handler per route: decode the request into an [`Operation`], run it
//! with [`Service::call`], encode the answer.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fastvm_proto::api::{
    CreateSnapshotRequest, CreateVmRequest, ExecVmRequest, FirewallPolicy, PatchVmFirewallRequest,
    UpdateSnapshotRequest, UpdateVmRequest,
};

use super::auth::Authed;
use super::error::{ApiError, ApiJson};
use crate::service::operation::{Operation, Reply};
use crate::service::{Caller, Service, ServiceError};

type ApiResult = Result<Response, ApiError>;

/// Runs `operation` for `caller` and encodes its JSON answer.
async fn run(s: &Service, caller: &Caller, operation: Operation) -> ApiResult {
    match s.call(caller, operation).await? {
        Reply::Json { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            Ok((status, Json(body)).into_response())
        }
        // Watches and console attaches are socket operations; no route
        // decodes into one.
        Reply::Watch { .. }
        | Reply::Console(_)
        | Reply::ExecStream(_)
        | Reply::FileUpload(_)
        | Reply::FileDownload(_) => Err(ApiError::from(ServiceError::Internal(
            "a streaming answer has no HTTP form".into(),
        ))),
    }
}

pub async fn healthz(State(s): State<Service>) -> ApiResult {
    run(&s, &Caller::anonymous(), Operation::GetHealthz).await
}

pub async fn livez(State(s): State<Service>) -> ApiResult {
    run(&s, &Caller::anonymous(), Operation::GetLivez).await
}

pub async fn readyz(State(s): State<Service>) -> ApiResult {
    run(&s, &Caller::anonymous(), Operation::GetReadyz).await
}

pub async fn list_vms(State(s): State<Service>, Authed(c): Authed) -> ApiResult {
    run(&s, &c, Operation::ListVms).await
}

pub async fn create_vm(
    State(s): State<Service>,
    Authed(c): Authed,
    ApiJson(req): ApiJson<CreateVmRequest>,
) -> ApiResult {
    run(&s, &c, Operation::CreateVm(req)).await
}

pub async fn get_vm(
    State(s): State<Service>,
    Authed(c): Authed,
    Path(id): Path<String>,
) -> ApiResult {
    run(&s, &c, Operation::GetVm { id }).await
}

pub async fn update_vm(
    State(s): State<Service>,
    Authed(c): Authed,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateVmRequest>,
) -> ApiResult {
    run(&s, &c, Operation::UpdateVm { id, req }).await
}

pub async fn delete_vm(
    State(s): State<Service>,
    Authed(c): Authed,
    Path(id): Path<String>,
) -> ApiResult {
    run(&s, &c, Operation::DeleteVm { id }).await
}

pub async fn replace_vm_firewall(
    State(s): State<Service>,
    Authed(c): Authed,
    Path(id): Path<String>,
    ApiJson(policy): ApiJson<FirewallPolicy>,
) -> ApiResult {
    run(&s, &c, Operation::ReplaceVmFirewall { id, policy }).await
}

pub async fn patch_vm_firewall(
    State(s): State<Service>,
    Authed(c): Authed,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<PatchVmFirewallRequest>,
) -> ApiResult {
    run(&s, &c, Operation::PatchVmFirewall { id, patch }).await
}

pub async fn create_vm_console_token(
    State(s): State<Service>,
    Authed(c): Authed,
    Path(id): Path<String>,
) -> ApiResult {
    run(&s, &c, Operation::CreateVmConsoleToken { id }).await
}

pub async fn exec_vm(
    State(s): State<Service>,
    Authed(c): Authed,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ExecVmRequest>,
) -> ApiResult {
    run(&s, &c, Operation::ExecVm { id, req }).await
}

pub async fn create_snapshot(
    State(s): State<Service>,
    Authed(c): Authed,
    ApiJson(req): ApiJson<CreateSnapshotRequest>,
) -> ApiResult {
    run(&s, &c, Operation::CreateSnapshot(req)).await
}

pub async fn list_snapshots(State(s): State<Service>, Authed(c): Authed) -> ApiResult {
    run(&s, &c, Operation::ListSnapshots).await
}

pub async fn update_snapshot(
    State(s): State<Service>,
    Authed(c): Authed,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateSnapshotRequest>,
) -> ApiResult {
    run(&s, &c, Operation::UpdateSnapshot { id, req }).await
}

pub async fn delete_snapshot(
    State(s): State<Service>,
    Authed(c): Authed,
    Path(id): Path<String>,
) -> ApiResult {
    run(&s, &c, Operation::DeleteSnapshot { id }).await
}

pub async fn get_org_quotas(State(s): State<Service>, Authed(c): Authed) -> ApiResult {
    run(&s, &c, Operation::GetOrgQuotas).await
}
