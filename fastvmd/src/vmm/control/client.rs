//! Client of a monitor's control socket.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use std::path::PathBuf;

use super::{FirewallInfo, Request, Response, SnapshotInfo, Status};

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be reached or broke mid-call.
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
    /// The monitor sent something that is not a response.
    #[error("malformed control response: {0}")]
    Malformed(String),
    /// The monitor refused the request.
    #[error("{0}")]
    Refused(String),
}

/// A connection to one monitor's `control.sock`.
pub struct ControlClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl ControlClient {
    /// Connects with a 10 s timeout per call.
    pub fn connect(path: &Path) -> Result<Self, ControlError> {
        Self::from_stream(UnixStream::connect(path)?)
    }

    /// A client on an open connection, with a 10 s timeout per call.
    pub fn from_stream(stream: UnixStream) -> Result<Self, ControlError> {
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(ControlClient {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    /// Sends one raw line and returns the parsed response, successful or not.
    pub fn raw(&mut self, line: &str) -> Result<Response, ControlError> {
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\n")?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            return Err(ControlError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "monitor closed the control socket",
            )));
        }
        serde_json::from_str(&answer).map_err(|e| ControlError::Malformed(e.to_string()))
    }

    /// Takes a snapshot into `dir`; what was written, or the monitor's message.
    pub fn snapshot(&mut self, dir: PathBuf, resume: bool) -> Result<SnapshotInfo, ControlError> {
        let line = serde_json::to_string(&Request::Snapshot { dir, resume })
            .map_err(|e| ControlError::Malformed(e.to_string()))?;
        let response = self.raw(&line)?;
        match (response.ok, response.snapshot, response.error) {
            (true, Some(info), _) => Ok(info),
            (_, _, Some(error)) => Err(ControlError::Refused(error)),
            _ => Err(ControlError::Malformed("response without snapshot".into())),
        }
    }

    /// Reads (`None`) or replaces (`Some`) the NIC's ingress policy.
    pub fn firewall(
        &mut self,
        policy: Option<fastvm_proto::api::FirewallPolicy>,
    ) -> Result<FirewallInfo, ControlError> {
        let request = match policy {
            Some(policy) => Request::SetFirewall { policy },
            None => Request::Firewall,
        };
        let line =
            serde_json::to_string(&request).map_err(|e| ControlError::Malformed(e.to_string()))?;
        let response = self.raw(&line)?;
        match (response.ok, response.firewall, response.error) {
            (true, Some(info), _) => Ok(info),
            (_, _, Some(error)) => Err(ControlError::Refused(error)),
            _ => Err(ControlError::Malformed("response without firewall".into())),
        }
    }

    /// Sends a request; the status on success, the monitor's message on refusal.
    pub fn call(&mut self, request: &Request) -> Result<Status, ControlError> {
        let line =
            serde_json::to_string(request).map_err(|e| ControlError::Malformed(e.to_string()))?;
        let response = self.raw(&line)?;
        match (response.ok, response.status, response.error) {
            (true, Some(status), _) => Ok(status),
            (_, _, Some(error)) => Err(ControlError::Refused(error)),
            _ => Err(ControlError::Malformed("response without status".into())),
        }
    }
}
