//! Every error answer is the JSON error schema (`{"error": "..."}`), with
//! the status of the service error kind — including the ones axum produces
//! itself (malformed JSON, wrong content type, oversized body, unknown
//! route, wrong method).

use axum::Json;
use axum::extract::FromRequest;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::service::ServiceError;

/// A service error on its way out.
#[derive(Debug)]
pub struct ApiError(pub ServiceError);

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError(e)
    }
}

/// `{"error": message}` with `status`.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!("{}: {}", status, self.0);
        }
        (status, Json(self.0.body())).into_response()
    }
}

/// A JSON request body whose rejections are JSON errors too.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// A body that is too large is 413, one that does not arrive within the
/// body timeout 408; anything else wrong with it (not JSON, not
/// `application/json`, not the right shape) is a 400, the status the
/// contract documents for bad requests.
fn json_rejection(rejection: JsonRejection) -> Response {
    if body_timed_out(&rejection) {
        return json_error(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time (fastvmd serve --body-timeout)",
        );
    }
    let status = match &rejection {
        JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        _ => StatusCode::BAD_REQUEST,
    };
    json_error(status, rejection.body_text())
}

/// True when reading the body ended at the body timeout.
fn body_timed_out(rejection: &JsonRejection) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(e) = source {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// 404 for routes that do not exist.
pub async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "no such route")
}

/// 405 for a route that exists with another method.
pub async fn method_not_allowed() -> Response {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed for this route",
    )
}
