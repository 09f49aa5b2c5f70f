//! `PUT /v1/vms/{id}/files?path=ABS[&mode=OCTAL]` (the body: the file's
//! bytes; answers `{"path", "bytes"}`) and `GET` of the same (the bytes,
//! with their length), both streamed through the VM's agent: a body is
//! passed on as it arrives, never held whole. 400 for a bad path, 404 for
//! a missing file or VM, 409 when the VM is not running, 408 when the body
//! stalls past the body timeout.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use fastvm_proto::api::FileRequest;
use futures_util::StreamExt;

use super::auth::Authed;
use super::error::{ApiError, json_error};
use crate::service::operation::{Operation, Reply};
use crate::service::{Service, ServiceError};

type QueryPairs = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

/// The file named by the query, or the answer saying what is wrong.
fn file_request(query: QueryPairs) -> Result<FileRequest, Box<Response>> {
    let Query(pairs) =
        query.map_err(|e| Box::new(json_error(StatusCode::BAD_REQUEST, format!("query: {e}"))))?;
    FileRequest::from_query(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| Box::new(ApiError(ServiceError::from(e)).into_response()))
}

/// True when a body error is the body timeout.
fn timed_out(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The PUT handler.
pub async fn put(
    State(service): State<Service>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    query: QueryPairs,
    body: Body,
) -> Response {
    let req = match file_request(query) {
        Ok(req) => req,
        Err(answer) => return *answer,
    };
    let mut upload = match service
        .call(&caller, Operation::WriteFile { id, req })
        .await
    {
        Ok(Reply::FileUpload(upload)) => upload,
        Ok(_) => return out_of_place(),
        Err(e) => return ApiError(e).into_response(),
    };
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(bytes) => {
                if let Err(e) = upload.send(&bytes).await {
                    return ApiError(e).into_response();
                }
            }
            Err(e) if timed_out(&e) => {
                return json_error(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body stalled (fastvmd serve --body-timeout); nothing was written",
                );
            }
            Err(e) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    format!("the request body broke off: {e}; nothing was written"),
                );
            }
        }
    }
    match upload.finish().await {
        Ok(moved) => (StatusCode::OK, Json(moved)).into_response(),
        Err(e) => ApiError(e).into_response(),
    }
}

/// The GET handler.
pub async fn get(
    State(service): State<Service>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    query: QueryPairs,
) -> Response {
    let req = match file_request(query) {
        Ok(req) => req,
        Err(answer) => return *answer,
    };
    let download = match service.call(&caller, Operation::ReadFile { id, req }).await {
        Ok(Reply::FileDownload(download)) => download,
        Ok(_) => return out_of_place(),
        Err(e) => return ApiError(e).into_response(),
    };
    let size = download.info.size;
    let bytes = futures_util::stream::unfold(download, |mut d| async move {
        match d.next().await {
            Ok(Some(bytes)) => Some((Ok::<_, std::io::Error>(bytes), d)),
            Ok(None) => None,
            // A body cut short (its length unmet) tells the client.
            Err(e) => {
                tracing::warn!("reading {} of VM {}: {e}", d.path, d.vm_id);
                Some((Err(std::io::Error::other(e.to_string())), d))
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(bytes),
    )
        .into_response()
}

fn out_of_place() -> Response {
    ApiError(ServiceError::Internal(
        "a file operation answered out of place".into(),
    ))
    .into_response()
}
