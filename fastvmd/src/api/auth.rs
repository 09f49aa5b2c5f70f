//! The `Authed` extractor: resolves `X-API-Key` or `Authorization: Bearer`
//! through the service; a 401 JSON error otherwise.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::service::{Caller, Service};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Authed(pub Caller);

fn header(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

impl FromRequestParts<Service> for Authed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        service: &Service,
    ) -> Result<Self, Self::Rejection> {
        let api_key = header(parts, "x-api-key");
        let authorization = header(parts, "authorization");
        service
            .authenticate(api_key, authorization)
            .await
            .map(Authed)
            .map_err(|e| ApiError(e).into_response())
    }
}
