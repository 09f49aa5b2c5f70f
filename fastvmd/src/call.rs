//! `fastvmd call`: the scripting client of the daemon's local socket.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;

use fastvm_proto::socket::{
    FrameError, Op, ServerFrame, SocketRequest, SocketResponse, encode_frame, read_frame,
};
use serde_json::{Map, Value};

/// Help text of `fastvmd call`, usable as its `--help`.
pub const HELP: &str = "\
Run one socket operation and print its answer.

Usage: fastvmd call OP [JSON]

OP is an OpenAPI operationId (listVMs, createVM, getVM, updateVM, deleteVM,
replaceVMFirewall, patchVMFirewall, createVMConsoleToken, execVM,
createSnapshot, listSnapshots, updateSnapshot, deleteSnapshot, getOrgQuotas,
getHealthz, getLivez, getReadyz) or a socket-only op (watch, attachConsole,
execStream, writeFile, readFile, forwardPort, listForwards, closeForward,
createOrg, createApiKey, revokeApiKey, setQuotaLimits, mintToken,
listImages, importImage, deleteImage).

JSON is an object in one of two forms:
  explicit   {\"params\": {\"id\": \"...\"}, \"body\": {...}, \"apiKey\": \"hlm_...\"}
             (used when the object has a \"params\" or \"body\" member; every
             member optional)
  shorthand  {\"id\": \"...\", \"name\": \"dev\"}: \"id\" becomes the path
             parameter, \"apiKey\" the key to act as, every other member
             goes into the body.

The answer's body is printed as pretty JSON on stdout; the exit status is 0
for a 2xx answer and 1 otherwise, with the error message on stderr.
`watch` prints each event as one JSON line ({\"event\", \"op\", \"data\"}) as it
arrives, until interrupted. `attachConsole` connects stdin and stdout to the
VM's console (no terminal raw mode) until either side closes. For
`execStream` use `fastvmd exec`, for `writeFile` and `readFile` `fastvmd cp`:
they speak their channels.

Examples:
  fastvmd call listVMs
  fastvmd call createVM '{\"machineType\": \"c1m2\", \"name\": \"dev\"}'
  fastvmd call execVM '{\"id\": \"6f1c...\", \"command\": [\"uname\", \"-a\"]}'
  fastvmd call watch '{\"events\": [\"vm\"]}'
";

/// Why a call could not be made (as opposed to an error answer, which is
/// exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The JSON argument is not valid JSON or not an object of either form.
    #[error("bad JSON argument: {0}")]
    Argument(String),
    /// The daemon's socket cannot be reached.
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// The socket path.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// Sending, receiving or decoding a frame failed.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The daemon closed the connection before answering.
    #[error("the daemon closed the connection without answering")]
    NoAnswer,
    /// Copying console or output bytes failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The daemon answered with an error (or, to an operation that
    /// switches the connection over, with anything but 101).
    #[error("error {status}: {message}")]
    Refused {
        /// The answer's status.
        status: u16,
        /// Its error message, else its whole body.
        message: String,
    },
}

impl CallError {
    /// The answer `resp`, as an error.
    pub fn refused(resp: &SocketResponse) -> CallError {
        CallError::Refused {
            status: resp.status,
            message: resp
                .error_message()
                .map_or_else(|| resp.body.to_string(), str::to_string),
        }
    }
}

/// The request for `op` with the JSON argument (see [`HELP`] for its forms).
pub fn build_request(op: &str, json: Option<&str>) -> Result<SocketRequest, CallError> {
    let mut req = SocketRequest::new(1, op);
    let Some(json) = json else {
        return Ok(req);
    };
    let value: Value =
        serde_json::from_str(json).map_err(|e| CallError::Argument(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(CallError::Argument("must be a JSON object".into()));
    };
    if let Some(key) = obj.remove("apiKey") {
        let Value::String(key) = key else {
            return Err(CallError::Argument("apiKey: must be a string".into()));
        };
        req.api_key = Some(key);
    }
    if obj.contains_key("params") || obj.contains_key("body") {
        if let Some(extra) = obj.keys().find(|k| *k != "params" && *k != "body") {
            return Err(CallError::Argument(format!(
                "{extra}: unexpected next to params/body (use body.{extra})"
            )));
        }
        match obj.remove("params") {
            Some(Value::Object(params)) => req.params = params,
            Some(Value::Null) | None => {}
            Some(_) => return Err(CallError::Argument("params: must be an object".into())),
        }
        req.body = obj.remove("body");
    } else {
        if let Some(id) = obj.remove("id") {
            let mut params = Map::new();
            params.insert("id".into(), id);
            req.params = params;
        }
        if !obj.is_empty() {
            req.body = Some(Value::Object(obj));
        }
    }
    Ok(req)
}

/// Runs `op` on the daemon at `socket` and prints the answer (see
/// [`HELP`]). `Ok` carries the exit status: 0 for a 2xx (or 101) answer, 1
/// for an error answer.
pub fn call(socket: &Path, op: &str, json: Option<&str>) -> Result<ExitCode, CallError> {
    let req = build_request(op, json)?;
    let (resp, stream, mut reader, mut buf) = send(socket, &req)?;
    if !resp.is_success() {
        return Ok(fail(&resp));
    }
    match Op::from_name(op) {
        Some(Op::Watch) => watch(&mut reader, &mut buf),
        Some(Op::AttachConsole) => console(reader, &stream),
        _ => {
            let pretty = serde_json::to_string_pretty(&resp.body).map_err(FrameError::from)?;
            println!("{pretty}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A connection that sent one request and read its answer, with what is
/// left to read after it.
pub type Answered = (SocketResponse, UnixStream, BufReader<UnixStream>, Vec<u8>);

/// Sends `req` on a new connection to `socket` and reads its answer; the
/// connection goes on (after a 101, with what the operation streams).
pub fn open(socket: &Path, req: &SocketRequest) -> Result<Answered, CallError> {
    send(socket, req)
}

/// [`open`] for an operation that switches the connection over
/// (`execStream`, `writeFile`, `attachConsole`, ...): an answer other
/// than 101 is [`CallError::Refused`].
pub fn open_switched(socket: &Path, req: &SocketRequest) -> Result<Answered, CallError> {
    let answered = send(socket, req)?;
    if answered.0.status != 101 {
        return Err(CallError::refused(&answered.0));
    }
    Ok(answered)
}

/// Sends `req` on a new connection to `socket` and reads its answer.
fn send(socket: &Path, req: &SocketRequest) -> Result<Answered, CallError> {
    let stream = UnixStream::connect(socket).map_err(|source| CallError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    (&stream).write_all(&encode_frame(req)?)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut buf = Vec::new();
    loop {
        match read_frame::<_, ServerFrame>(&mut reader, &mut buf)? {
            Some(ServerFrame::Response(resp)) => return Ok((resp, stream, reader, buf)),
            Some(ServerFrame::Event(_)) => continue,
            None => return Err(CallError::NoAnswer),
        }
    }
}

/// One operation that answers once: its answer, whatever its status.
pub fn request(socket: &Path, req: &SocketRequest) -> Result<SocketResponse, CallError> {
    send(socket, req).map(|(resp, ..)| resp)
}

/// Prints an error answer to stderr; exit status 1.
fn fail(resp: &SocketResponse) -> ExitCode {
    eprintln!("{}", CallError::refused(resp));
    ExitCode::from(1)
}

/// Prints each event line until the daemon closes or ends the watch.
fn watch<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>) -> Result<ExitCode, CallError> {
    let mut out = io::stdout().lock();
    loop {
        match read_frame::<_, ServerFrame>(reader, buf)? {
            Some(ServerFrame::Event(ev)) => {
                let line = serde_json::json!({ "event": ev.event, "op": ev.op, "data": ev.data });
                writeln!(out, "{line}")?;
                out.flush()?;
            }
            Some(ServerFrame::Response(resp)) if !resp.is_success() => return Ok(fail(&resp)),
            Some(ServerFrame::Response(_)) => {}
            None => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// Copies stdin to the console and the console to stdout until either
/// side closes. `reader` may hold console bytes read past the 101 answer.
fn console<R: Read>(mut reader: R, stream: &UnixStream) -> Result<ExitCode, CallError> {
    let mut to_console = stream.try_clone()?;
    std::thread::spawn(move || {
        let _ = io::copy(&mut io::stdin().lock(), &mut to_console);
        let _ = to_console.shutdown(std::net::Shutdown::Write);
    });
    let mut out = io::stdout().lock();
    let mut chunk = [0u8; 8192];
    loop {
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            return Ok(ExitCode::SUCCESS);
        }
        out.write_all(&chunk[..n])?;
        out.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shorthand_splits_id_key_and_body() {
        let req = build_request("updateVM", Some(r#"{"id":"x","name":"n","apiKey":"k"}"#)).unwrap();
        assert_eq!(req.param_str("id"), Some("x"));
        assert_eq!(req.body, Some(json!({"name": "n"})));
        assert_eq!(req.api_key.as_deref(), Some("k"));
        let req = build_request("getVM", Some(r#"{"id":"x"}"#)).unwrap();
        assert_eq!(req.body, None);
    }

    #[test]
    fn explicit_form_and_errors() {
        let req = build_request("getVM", Some(r#"{"params":{"id":"x"},"body":{"a":1}}"#)).unwrap();
        assert_eq!(req.param_str("id"), Some("x"));
        assert_eq!(req.body, Some(json!({"a": 1})));
        assert!(build_request("getVM", None).unwrap().params.is_empty());
        for bad in ["[1]", "{", r#"{"params":1}"#, r#"{"body":{},"name":"x"}"#] {
            assert!(
                matches!(build_request("x", Some(bad)), Err(CallError::Argument(_))),
                "{bad}"
            );
        }
    }
}
