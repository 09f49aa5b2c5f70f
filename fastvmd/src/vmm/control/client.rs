//! Client of a monitor's control socket.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

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
    /// Connects to the control socket of the monitor holding VM directory
    /// `dir`, refusing a socket that monitor does not serve
    /// ([`crate::supervisor::peer`]).
    pub fn connect_to_monitor(dir: &Path) -> Result<Self, ControlError> {
        let stream = UnixStream::connect(dir.join(crate::vmm::machine::CONTROL_SOCKET))?;
        crate::supervisor::peer::ensure_monitor(&stream, dir)?;
        Self::from_stream(stream)
    }

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

    /// Takes a snapshot into the VM directory as `name`; what was written,
    /// or the monitor's message. [`super::adopt`] moves it out.
    pub fn snapshot(&mut self, name: &str, resume: bool) -> Result<SnapshotInfo, ControlError> {
        let name = name.to_string();
        let line = serde_json::to_string(&Request::Snapshot { name, resume })
            .map_err(|e| ControlError::Malformed(e.to_string()))?;
        let response = self.raw(&line)?;
        match (response.ok, response.snapshot, response.error) {
            (true, Some(info), _) => Ok(info),
            (_, _, Some(error)) => Err(ControlError::Refused(error)),
            _ => Err(ControlError::Malformed("response without snapshot".into())),
        }
    }

    /// Takes a snapshot of the monitor of `vm_dir` and moves it to `dest`
    /// ([`crate::vmm::snapshot::adopt`]), named inside the VM directory
    /// after `dest`'s last component.
    pub fn snapshot_into(
        &mut self,
        vm_dir: &Path,
        dest: &Path,
        resume: bool,
    ) -> Result<SnapshotInfo, ControlError> {
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| super::check_snapshot_name(n).is_ok())
            .unwrap_or("snapshot");
        let mut info = self.snapshot(name, resume)?;
        crate::vmm::snapshot::adopt::adopt(vm_dir, name, dest).map_err(ControlError::Io)?;
        info.dir = dest.to_path_buf();
        Ok(info)
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
