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

    /// The `{"error": ...}` body. A fault of the daemon, a monitor or the
    /// host (5xx) may have been worded with host paths, which are not the
    /// caller's to see: each is replaced by `<path>` (the daemon's log
    /// keeps the whole message).
    pub fn body(&self) -> serde_json::Value {
        let message = self.to_string();
        let message = if self.status() >= 500 {
            redact_paths(&message)
        } else {
            message
        };
        serde_json::json!({ "error": message })
    }
}

/// `text` with every absolute path (a `/` starting a word, up to a space,
/// a quote, a bracket, a comma or a colon that ends a clause) replaced by
/// `<path>`.
pub fn redact_paths(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let starts_word = |i: usize| i == 0 || " \t\n(\"'=[{<,".contains(chars[i - 1]);
    let ends_path = |i: usize| {
        let c = chars[i];
        c.is_whitespace()
            || "\"'()[]{}<>,;".contains(c)
            || (c == ':' && chars.get(i + 1).is_none_or(|n| n.is_whitespace()))
    };
    let path_char = |c: char| c.is_alphanumeric() || "._-/".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '/' && starts_word(i) && chars.get(i + 1).is_some_and(|c| path_char(*c)) {
            while i < chars.len() && !ends_path(i) {
                i += 1;
            }
            out.push_str("<path>");
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_leave_server_errors_only() {
        let full = ServiceError::Upstream(
            "snapshot of VM a: /var/lib/fastvm/snapshots/.1e09.tmp-18316/memory: No space left \
             on device (\"/tmp/x y\", /dev/kvm)"
                .into(),
        );
        assert_eq!(
            full.body()["error"],
            "snapshot of VM a: <path>: No space left on device (\"<path> y\", <path>)"
        );
        // The message itself (for the log) is whole.
        assert!(full.to_string().contains("/var/lib/fastvm/snapshots"));
        // A client's own words in a 4xx are answered as they are, and
        // slashes inside words or ratios are not paths.
        let bad = ServiceError::BadRequest("sourceCidrs[0]: \"/64\" is not an IPv6 CIDR".into());
        assert_eq!(bad.body()["error"], bad.to_string());
        assert_eq!(
            redact_paths("1/2 of the VMs, and/or 10 MiB/s"),
            "1/2 of the VMs, and/or 10 MiB/s"
        );
        assert_eq!(redact_paths("/"), "/");
        assert_eq!(redact_paths("at /a/b:12: x"), "at <path>: x");
    }

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
