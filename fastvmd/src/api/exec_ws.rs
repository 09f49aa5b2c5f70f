//! `GET /v1/vms/{id}/exec/ws?command=...`: a streaming exec over WebSocket
//! in Kubernetes' exec channel protocol (subprotocol `v5.channel.k8s.io`,
//! [`fastvm_proto::exec_channel`]): each binary message is a channel byte
//! and its bytes. The same credentials as the rest of the API. What is
//! wrong with the request is answered before the upgrade: 400 (the query,
//! or no `v5.channel.k8s.io` asked for), 401, 404, 409 (VM not running, or
//! its agent has no streams), 426 without an upgrade, 429 past the org's
//! execs. The command ends with the session: its status is the last
//! message, and a client that goes away has its command killed.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fastvm_proto::api::ExecStreamRequest;
use fastvm_proto::exec_channel::{MAX_MESSAGE, STATUS, SUBPROTOCOL};

use super::auth::Authed;
use super::error::{ApiError, json_error};
use crate::service::exec_stream::{ExecSession, InputError};
use crate::service::operation::{Operation, Reply};
use crate::service::{Service, ServiceError};

type QueryPairs = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

/// The handler.
pub async fn connect(
    State(service): State<Service>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    query: QueryPairs,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    slot: Option<axum::Extension<crate::http_server::ConnectionSlot>>,
) -> Response {
    if let Err(e) = fastvm_proto::api::parse_uuid("id", &id) {
        return ApiError(ServiceError::from(e)).into_response();
    }
    let req = match query {
        Ok(Query(pairs)) => {
            ExecStreamRequest::from_query(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .and_then(|req| req.validate().map(|()| req))
        }
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("query: {e}")),
    };
    let req = match req {
        Ok(req) => req,
        Err(e) => return ApiError(ServiceError::from(e)).into_response(),
    };
    let Ok(upgrade) = upgrade else {
        return json_error(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket: send an Upgrade: websocket request",
        );
    };
    let upgrade = upgrade.protocols([SUBPROTOCOL]);
    if upgrade.selected_protocol().is_none() {
        return json_error(
            StatusCode::BAD_REQUEST,
            format!(
                "Sec-WebSocket-Protocol: ask for {SUBPROTOCOL}, the exec channel protocol this endpoint speaks"
            ),
        );
    }
    let session = match service
        .call(&caller, Operation::ExecStream { id, req })
        .await
    {
        Ok(Reply::ExecStream(session)) => session,
        Ok(_) => {
            return ApiError(ServiceError::Internal(
                "execStream answered out of place".into(),
            ))
            .into_response();
        }
        Err(e) => return ApiError(e).into_response(),
    };
    upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            // Counted among the daemon's connections until the session ends.
            let _slot = slot;
            relay(socket, session).await;
        })
}

async fn relay(socket: WebSocket, session: ExecSession) {
    use futures_util::{SinkExt, StreamExt};
    let (mut ws_tx, mut ws_rx) = socket.split();
    let ExecSession {
        vm_id,
        mut input,
        mut output,
    } = session;
    let binary = |channel: u8, bytes: Vec<u8>| {
        let mut message = Vec::with_capacity(1 + bytes.len());
        message.push(channel);
        message.extend(bytes);
        Message::Binary(message.into())
    };
    loop {
        tokio::select! {
            message = output.next() => {
                let Some((channel, bytes)) = message else { break };
                if ws_tx.send(binary(channel, bytes)).await.is_err() || channel == STATUS {
                    break;
                }
            }
            message = ws_rx.next() => {
                let bytes = match message {
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                };
                let outcome = match bytes.split_first() {
                    Some((channel, rest)) => input.message(*channel, rest).await,
                    None => Err(InputError::Client("an empty message (no channel byte)".into())),
                };
                if let Err(InputError::Client(why)) = outcome {
                    if let Some((channel, bytes)) = output.fail(&why) {
                        let _ = ws_tx.send(binary(channel, bytes)).await;
                    }
                    break;
                }
            }
        }
    }
    let _ = ws_tx.send(Message::Close(None)).await;
    tracing::debug!("exec WebSocket on VM {vm_id} ended");
}
