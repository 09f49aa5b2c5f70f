//! One handler per operation: decode, call the service, encode.

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
use crate::service::Service;

type ApiResult = Result<Response, ApiError>;

fn ok<T: serde::Serialize>(value: T) -> ApiResult {
    Ok(Json(value).into_response())
}

fn created<T: serde::Serialize>(status: u16, value: T) -> ApiResult {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED);
    Ok((status, Json(value)).into_response())
}

pub async fn healthz(State(s): State<Service>) -> ApiResult {
    ok(s.get_healthz().await?)
}

pub async fn livez(State(s): State<Service>) -> ApiResult {
    ok(s.get_livez().await?)
}

pub async fn readyz(State(s): State<Service>) -> ApiResult {
    ok(s.get_readyz().await?)
}

pub async fn list_vms(State(s): State<Service>, Authed(c): Authed) -> ApiResult {
    ok(s.list_vms(&c).await?)
}

pub async fn create_vm(
    State(s): State<Service>,
    Authed(c): Authed,
    ApiJson(req): ApiJson<CreateVmRequest>,
) -> ApiResult {
    let (status, vm) = s.create_vm(&c, req).await?;
    created(status, vm)
}

pub async fn get_vm(
    State(s): State<Service>,
    Authed(c): Authed,
    Path(id): Path<String>,
) -> ApiResult {
    ok(s.get_vm(&c, &id).await?)
}

pub async fn update_vm(
    State(s): State<Service>,
    Authed(c): Authed,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateVmRequest>,
) -> ApiResult {
    ok(s.update_vm(&c, &id, req).await?)
}

pub async fn delete_vm(
    State(s): State<Service>,
    Authed(c): Authed,
    Path(id): Path<String>,
) -> ApiResult {
    ok(s.delete_vm(&c, &id).await?)
}

pub async fn replace_vm_firewall(
    State(s): State<Service>,
    Authed(c): Authed,
    Path(id): Path<String>,
    ApiJson(policy): ApiJson<FirewallPolicy>,
) -> ApiResult {
    ok(s.replace_vm_firewall(&c, &id, policy).await?)
}

pub async fn patch_vm_firewall(
    State(s): State<Service>,
    Authed(c): Authed,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<PatchVmFirewallRequest>,
) -> ApiResult {
    ok(s.patch_vm_firewall(&c, &id, patch).await?)
}

pub async fn create_vm_console_token(
    State(s): State<Service>,
    Authed(c): Authed,
    Path(id): Path<String>,
) -> ApiResult {
    ok(s.create_vm_console_token(&c, &id).await?)
}

pub async fn exec_vm(
    State(s): State<Service>,
    Authed(c): Authed,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ExecVmRequest>,
) -> ApiResult {
    ok(s.exec_vm(&c, &id, req).await?)
}

pub async fn create_snapshot(
    State(s): State<Service>,
    Authed(c): Authed,
    ApiJson(req): ApiJson<CreateSnapshotRequest>,
) -> ApiResult {
    created(201, s.create_snapshot(&c, req).await?)
}

pub async fn list_snapshots(State(s): State<Service>, Authed(c): Authed) -> ApiResult {
    ok(s.list_snapshots(&c).await?)
}

pub async fn update_snapshot(
    State(s): State<Service>,
    Authed(c): Authed,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateSnapshotRequest>,
) -> ApiResult {
    ok(s.update_snapshot(&c, &id, req).await?)
}

pub async fn delete_snapshot(
    State(s): State<Service>,
    Authed(c): Authed,
    Path(id): Path<String>,
) -> ApiResult {
    ok(s.delete_snapshot(&c, &id).await?)
}

pub async fn get_org_quotas(State(s): State<Service>, Authed(c): Authed) -> ApiResult {
    ok(s.get_org_quotas(&c).await?)
}
