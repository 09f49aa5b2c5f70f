//! The request of a streaming exec (an extension of the contract): the
//! socket's `execStream` body, and `GET /v1/vms/{id}/exec/ws`'s query
//! string (`command` and `env` repeated, `tty`, `cwd`, `timeoutSec`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{MAX_EXEC_TIMEOUT_SEC, ValidationError};
use crate::agent::{ExecStart, WindowSize};

/// Most arguments of a streamed command.
pub const MAX_STREAM_ARGS: usize = 4096;
/// Most bytes of a streamed command's arguments, environment and cwd together.
pub const MAX_STREAM_REQUEST_BYTES: usize = 256 << 10;
/// A terminal's size when the request gives none (a client resizes it
/// once connected).
pub const DEFAULT_WINDOW: WindowSize = WindowSize { cols: 80, rows: 24 };

/// A command to run with live output, stdin and, with `tty`, a terminal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecStreamRequest {
    /// Program and arguments; at least one element.
    pub command: Vec<String>,
    /// Run on a pseudo-terminal (stderr joins stdout; resize works).
    #[serde(default)]
    pub tty: bool,
    /// The terminal's first width (with `tty`; 80 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u16>,
    /// The terminal's first height (with `tty`; 24 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
    /// Working directory, absolute; the image's (or `/`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Extra environment, each `NAME=VALUE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// The command is ended after this many seconds (1 to
    /// [`MAX_EXEC_TIMEOUT_SEC`]); no deadline when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_sec: Option<u64>,
}

impl ExecStreamRequest {
    /// Checks every field; what is wrong is named by its field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.command.is_empty() {
            return Err(ValidationError::new("command", "must not be empty"));
        }
        if self.command.len() > MAX_STREAM_ARGS {
            return Err(ValidationError::new(
                "command",
                format!("at most {MAX_STREAM_ARGS} arguments"),
            ));
        }
        let size: usize = self
            .command
            .iter()
            .chain(&self.env)
            .chain(&self.cwd)
            .map(String::len)
            .sum();
        if size > MAX_STREAM_REQUEST_BYTES {
            return Err(ValidationError::new(
                "command",
                format!("arguments, environment and cwd exceed {MAX_STREAM_REQUEST_BYTES} bytes"),
            ));
        }
        for (field, text) in self
            .command
            .iter()
            .map(|a| ("command", a))
            .chain(self.env.iter().map(|e| ("env", e)))
            .chain(self.cwd.iter().map(|c| ("cwd", c)))
        {
            if text.contains('\0') {
                return Err(ValidationError::new(field, "must not contain a NUL byte"));
            }
        }
        for (i, entry) in self.env.iter().enumerate() {
            match entry.split_once('=') {
                Some((name, _)) if !name.is_empty() => {}
                _ => {
                    return Err(ValidationError::new(
                        format!("env[{i}]"),
                        "must be NAME=VALUE with a name",
                    ));
                }
            }
        }
        if let Some(cwd) = &self.cwd
            && !cwd.starts_with('/')
        {
            return Err(ValidationError::new("cwd", "must be an absolute path"));
        }
        match self.timeout_sec {
            Some(t) if !(1..=MAX_EXEC_TIMEOUT_SEC).contains(&t) => Err(ValidationError::new(
                "timeoutSec",
                format!("must be 1 to {MAX_EXEC_TIMEOUT_SEC}"),
            )),
            _ => Ok(()),
        }
    }

    /// The terminal's first size, with `tty`.
    pub fn window(&self) -> Option<WindowSize> {
        self.tty.then(|| WindowSize {
            cols: self.cols.filter(|c| *c > 0).unwrap_or(DEFAULT_WINDOW.cols),
            rows: self.rows.filter(|r| *r > 0).unwrap_or(DEFAULT_WINDOW.rows),
        })
    }

    /// The agent's start frame for stream `id` (the request validated).
    pub fn to_agent(&self, id: u64) -> ExecStart {
        let env: BTreeMap<String, String> = self
            .env
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ExecStart {
            id,
            argv: self.command.clone(),
            env,
            cwd: self.cwd.clone(),
            user: None,
            tty: self.window(),
            timeout_ms: self.timeout_sec.map(|s| s.saturating_mul(1000)),
        }
    }

    /// Reads the WebSocket endpoint's query pairs: `command` and `env`
    /// repeated, `tty` (`true`/`1`/`false`/`0`), `cwd`, `timeoutSec`,
    /// `cols`, `rows`. Unknown names are refused.
    pub fn from_query<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<ExecStreamRequest, ValidationError> {
        let mut req = ExecStreamRequest::default();
        for (name, value) in pairs {
            let number = |field: &str| {
                value
                    .parse::<u64>()
                    .map_err(|_| ValidationError::new(field.to_string(), "must be a whole number"))
            };
            let small = |field: &str| {
                value
                    .parse::<u16>()
                    .map_err(|_| ValidationError::new(field.to_string(), "must be 1 to 65535"))
            };
            match name {
                "command" => req.command.push(value.to_string()),
                "env" => req.env.push(value.to_string()),
                "cwd" => req.cwd = Some(value.to_string()),
                "tty" => {
                    req.tty = match value {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(ValidationError::new("tty", "must be true or false")),
                    }
                }
                "timeoutSec" => req.timeout_sec = Some(number("timeoutSec")?),
                "cols" => req.cols = Some(small("cols")?),
                "rows" => req.rows = Some(small("rows")?),
                other => {
                    return Err(ValidationError::new(
                        other.to_string(),
                        "unknown query parameter (command, env, cwd, tty, timeoutSec, cols, rows)",
                    ));
                }
            }
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(command: &[&str]) -> ExecStreamRequest {
        ExecStreamRequest {
            command: command.iter().map(|s| s.to_string()).collect(),
            ..ExecStreamRequest::default()
        }
    }

    #[test]
    fn a_query_string_becomes_a_request() {
        let pairs = [
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo $A"),
            ("env", "A=1=2"),
            ("tty", "true"),
            ("cwd", "/tmp"),
            ("timeoutSec", "5"),
            ("cols", "120"),
        ];
        let r = ExecStreamRequest::from_query(pairs).unwrap();
        r.validate().unwrap();
        let start = r.to_agent(9);
        assert_eq!(start.argv, ["sh", "-c", "echo $A"]);
        assert_eq!(start.env.get("A").map(String::as_str), Some("1=2"));
        assert_eq!(
            start.tty,
            Some(WindowSize {
                cols: 120,
                rows: 24
            })
        );
        assert_eq!((start.id, start.timeout_ms), (9, Some(5000)));
        assert_eq!(start.cwd.as_deref(), Some("/tmp"));
    }

    #[test]
    fn bad_requests_name_their_field() {
        let field = |r: ExecStreamRequest| r.validate().unwrap_err().field;
        assert_eq!(field(req(&[])), "command");
        let mut r = req(&["x"]);
        r.env = vec!["=v".into()];
        assert_eq!(field(r), "env[0]");
        let mut r = req(&["x"]);
        r.cwd = Some("tmp".into());
        assert_eq!(field(r), "cwd");
        let mut r = req(&["x"]);
        r.timeout_sec = Some(0);
        assert_eq!(field(r), "timeoutSec");
        assert_eq!(field(req(&["a\0b"])), "command");
        let err = ExecStreamRequest::from_query([("tty", "yes")]).unwrap_err();
        assert_eq!(err.field, "tty");
        let err = ExecStreamRequest::from_query([("bogus", "1")]).unwrap_err();
        assert_eq!(err.field, "bogus");
    }

    #[test]
    fn without_tty_there_is_no_window_and_json_refuses_unknown_fields() {
        assert_eq!(req(&["x"]).window(), None);
        let bad = serde_json::from_str::<ExecStreamRequest>(r#"{"command":["x"],"tyy":true}"#);
        assert!(bad.is_err());
    }
}
