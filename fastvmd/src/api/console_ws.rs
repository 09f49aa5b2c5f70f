//! `GET /v1/vms/{id}/console/ws?session=TOKEN`: a WebSocket bridged to the
//! VM's serial console both ways. 400 without a session, 426 without an
//! upgrade (the token is not spent then), 404 for an unknown, used or expired token, 409 when the VM
//! is not running, 429 when the VM has as many console sessions as it
//! serves. The socket closes when the VM stops. A message from the client
//! is at most [`MAX_MESSAGE`] bytes (a paste; larger closes the session).

use std::collections::HashMap;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::error::{ApiError, json_error};
use crate::service::{ConsoleTarget, Service, ServiceError};

/// The largest WebSocket message (and frame) a console client may send.
pub const MAX_MESSAGE: usize = 64 << 10;

/// The handler.
pub async fn connect(
    State(service): State<Service>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    slot: Option<axum::Extension<crate::http_server::ConnectionSlot>>,
) -> Response {
    // What is wrong with the request itself comes before the upgrade.
    if let Err(e) = fastvm_proto::api::parse_uuid("id", &id) {
        return ApiError(ServiceError::from(e)).into_response();
    }
    let token = match query.get("session") {
        Some(token) => token.clone(),
        None => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "session: required (the token createVMConsoleToken gave)",
            );
        }
    };
    let Ok(upgrade) = upgrade else {
        return json_error(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket: send an Upgrade: websocket request",
        );
    };
    let target = match service.connect_vm_console(&id, &token).await {
        Ok(target) => target,
        Err(e) => return ApiError(e).into_response(),
    };
    let connected = UnixStream::connect(&target.socket)
        .await
        .and_then(|stream| {
            let dir = target.socket.parent().unwrap_or(std::path::Path::new("/"));
            crate::supervisor::peer::ensure_monitor(&stream, dir).map(|()| stream)
        });
    let console = match connected {
        Ok(stream) => stream,
        Err(e) => {
            return ApiError(ServiceError::Upstream(format!(
                "VM {}: console unavailable: {e}",
                target.vm_id
            )))
            .into_response();
        }
    };
    upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            // Counted among the daemon's connections until the session ends.
            let _slot = slot;
            bridge(socket, console, target).await;
        })
}

async fn bridge(socket: WebSocket, console: UnixStream, target: ConsoleTarget) {
    use futures_util::{SinkExt, StreamExt};
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (mut con_rx, mut con_tx) = console.into_split();
    let to_console = async {
        while let Some(Ok(message)) = ws_rx.next().await {
            let bytes = match message {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if con_tx.write_all(&bytes).await.is_err() {
                break;
            }
        }
    };
    let to_client = async {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match con_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let data = axum::body::Bytes::copy_from_slice(&buf[..n]);
                    if ws_tx.send(Message::Binary(data)).await.is_err() {
                        return;
                    }
                }
            }
        }
        // The VM stopped: say so and close.
        let _ = ws_tx.send(Message::Close(None)).await;
    };
    tokio::select! {
        () = to_console => {}
        () = to_client => {}
    }
    tracing::debug!("console session of VM {} ended", target.vm_id);
}
