//! The HTTP front end (axum): routing, auth extraction and JSON errors. Each
//! handler decodes, calls one service method and encodes; the rules live in
//! [`crate::service`].

mod auth;
mod console_ws;
mod error;
mod exec_ws;
mod files;
mod handlers;

pub use error::{ApiError, json_error};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::service::Service;

/// Largest request body accepted (larger ones get 413).
pub const MAX_BODY: usize = 1 << 20;

/// The contract, served at `GET /openapi.yaml`.
pub const OPENAPI_YAML: &str = include_str!("../../../fastvm-proto/openapi.yaml");

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML)
}

/// Every route of openapi.yaml.
pub fn app(service: Service) -> Router {
    use handlers::*;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/openapi.yaml", get(openapi))
        .route("/v1/vms", get(list_vms).post(create_vm))
        .route(
            "/v1/vms/{id}",
            get(get_vm).patch(update_vm).delete(delete_vm),
        )
        .route(
            "/v1/vms/{id}/firewall",
            axum::routing::put(replace_vm_firewall).patch(patch_vm_firewall),
        )
        .route(
            "/v1/vms/{id}/console-token",
            axum::routing::post(create_vm_console_token),
        )
        .route("/v1/vms/{id}/exec", axum::routing::post(exec_vm))
        .route("/v1/vms/{id}/console/ws", get(console_ws::connect))
        .route("/v1/vms/{id}/exec/ws", get(exec_ws::connect))
        .route(
            "/v1/vms/{id}/files",
            get(files::get)
                .put(files::put)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/snapshots", get(list_snapshots).post(create_snapshot))
        .route(
            "/v1/snapshots/{id}",
            axum::routing::patch(update_snapshot).delete(delete_snapshot),
        )
        .route("/v1/org/quotas", get(get_org_quotas))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(service)
}
