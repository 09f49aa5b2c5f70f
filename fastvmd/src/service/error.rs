//! The one error type of the operation layer; its kind decides the HTTP
//! status both front ends answer with.

/// What went wrong, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed or breaks a constraint (400).
    #[error("{0}")]
    BadRequest(String),
    /// No valid credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A quota would be exceeded (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such VM, snapshot or token for this caller (404).
    #[error("{0}")]
    NotFound(String),
    /// The resource is not in a state that allows this (409).
    #[error("{0}")]
    Conflict(String),
    /// Too many of something at once for this caller or resource (429).
    #[error("{0}")]
    TooMany(String),
    /// A monitor or guest agent failed (502).
    #[error("{0}")]
    Upstream(String),
    /// This host cannot run the VM now; the message says why (503).
    #[error("{0}")]
    Unavailable(String),
    /// A fault of the daemon itself (500).
    #[error("{0}")]
    Internal(String),
}

impl From<fastvm_proto::api::ValidationError> for ServiceError {
    /// A broken constraint is a 400 whose message names the field.
    fn from(e: fastvm_proto::api::ValidationError) -> Self {
        ServiceError::BadRequest(e.to_string())
    }
}

impl ServiceError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            ServiceError::BadRequest(_) => 400,
            ServiceError::Unauthorized(_) => 401,
            ServiceError::Forbidden(_) => 403,
            ServiceError::NotFound(_) => 404,
            ServiceError::Conflict(_) => 409,
            ServiceError::TooMany(_) => 429,
            ServiceError::Upstream(_) => 502,
            ServiceError::Unavailable(_) => 503,
            ServiceError::Internal(_) => 500,
        }
    }

    /// The `{"error": "..."}` body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_status_and_a_json_body() {
        let cases = [
            (ServiceError::BadRequest("b".into()), 400),
            (ServiceError::Unauthorized("u".into()), 401),
            (ServiceError::Forbidden("f".into()), 403),
            (ServiceError::NotFound("n".into()), 404),
            (ServiceError::Conflict("c".into()), 409),
            (ServiceError::TooMany("t".into()), 429),
            (ServiceError::Upstream("x".into()), 502),
            (ServiceError::Unavailable("y".into()), 503),
            (ServiceError::Internal("z".into()), 500),
        ];
        for (err, status) in cases {
            assert_eq!(err.status(), status);
            assert_eq!(err.body()["error"], err.to_string());
        }
    }
}
