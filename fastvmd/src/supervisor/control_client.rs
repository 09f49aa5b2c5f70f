//! Client of a monitor's control socket.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::vmm::control::{FirewallInfo, Request, Response, SnapshotInfo, Status};

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

/// Time a monitor has to answer a call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest answer line read from a monitor (a firewall report carries the
/// whole policy); a longer one is refused, however the monitor behaves.
pub const MAX_ANSWER: usize = 2 << 20;

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
        stream.set_read_timeout(Some(CALL_TIMEOUT))?;
        Ok(ControlClient {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    /// Sends one raw line and returns the parsed response, successful or not.
    pub fn raw(&mut self, line: &str) -> Result<Response, ControlError> {
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\n")?;
        let mut answer = Vec::new();
        let read = (&mut self.reader)
            .take(MAX_ANSWER as u64 + 1)
            .read_until(b'\n', &mut answer)
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
                ),
                _ => e,
            })?;
        if read == 0 {
            return Err(ControlError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "monitor closed the control socket",
            )));
        }
        if answer.last() != Some(&b'\n') && answer.len() > MAX_ANSWER {
            return Err(ControlError::Malformed(format!(
                "an answer longer than {MAX_ANSWER} bytes"
            )));
        }
        serde_json::from_slice(&answer).map_err(|e| ControlError::Malformed(e.to_string()))
    }

    /// Takes a snapshot into the VM directory as `name`; what was written,
    /// or the monitor's message. [`crate::vmm::snapshot::adopt`] moves it out.
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
            .filter(|n| crate::vmm::control::check_snapshot_name(n).is_ok())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::control::{ControlTarget, RunState};
    use crate::vmm::service::{ControlPart, MAX_CONTROL_CLIENTS, Service};
    use std::os::unix::net::UnixListener;
    use std::sync::Arc;
    use std::sync::Mutex;

    #[test]
    fn an_endless_answer_is_refused_without_reading_it_all() {
        let (ours, monitor) = UnixStream::pair().unwrap();
        let sent = std::thread::spawn(move || {
            let mut monitor = monitor;
            let chunk = vec![b'x'; 64 << 10];
            let mut sent = 0usize;
            while monitor.write_all(&chunk).is_ok() && sent < (64 << 20) {
                sent += chunk.len();
            }
            sent
        });
        let mut client = ControlClient::from_stream(ours).unwrap();
        match client.raw("{\"op\":\"status\"}") {
            Err(ControlError::Malformed(why)) => assert!(why.contains("longer than"), "{why}"),
            other => panic!("an endless answer: {:?}", other.map(|r| r.ok)),
        }
        drop(client);
        let sent = sent.join().unwrap();
        assert!(sent < 8 << 20, "read {sent} bytes of an endless answer");
    }

    struct Fake(Mutex<RunState>);
    impl ControlTarget for Fake {
        fn status(&self) -> Status {
            Status {
                state: *self.0.lock().unwrap(),
                vcpus: 2,
                memory_mib: 128,
                uptime_ms: 5,
                pid: 1,
                guest_warnings: Default::default(),
                jail_us: None,
            }
        }
        fn pause(&self) -> Result<(), String> {
            let mut s = self.0.lock().unwrap();
            if *s == RunState::Paused {
                return Err("already paused".into());
            }
            *s = RunState::Paused;
            Ok(())
        }
        fn resume(&self) -> Result<(), String> {
            *self.0.lock().unwrap() = RunState::Running;
            Ok(())
        }
        fn stop(&self) {
            *self.0.lock().unwrap() = RunState::Stopping;
        }
        fn snapshot(&self, name: &str, _resume: bool) -> Result<SnapshotInfo, String> {
            crate::vmm::control::check_snapshot_name(name)?;
            if name == "taken" {
                return Err(format!("{name} exists"));
            }
            Ok(SnapshotInfo {
                dir: name.into(),
                duration_us: 1,
                paused_us: 1,
                memory_bytes: 4096,
                disk_bytes: 0,
                disk_copy: "reflink".into(),
            })
        }
    }

    #[test]
    fn ops_and_errors_over_a_real_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let service = Service::start(None).unwrap();
        let target = Arc::new(Fake(Mutex::new(RunState::Running)));
        service
            .serve_control(ControlPart {
                listener,
                target,
                events: None,
            })
            .unwrap();
        let mut c = ControlClient::connect(&path).unwrap();
        let s = c.call(&Request::Status).unwrap();
        assert_eq!(
            (s.state, s.vcpus, s.memory_mib),
            (RunState::Running, 2, 128)
        );
        assert_eq!(c.call(&Request::Pause).unwrap().state, RunState::Paused);
        let err = c.call(&Request::Pause).unwrap_err().to_string();
        assert!(err.contains("already paused"), "{err}");
        assert_eq!(c.call(&Request::Resume).unwrap().state, RunState::Running);
        let snap = c.raw("{\"op\":\"snapshot\",\"name\":\"s1\"}").unwrap();
        assert!(snap.ok, "{snap:?}");
        assert_eq!(snap.snapshot.unwrap().memory_bytes, 4096);
        let refused = c.raw("{\"op\":\"snapshot\",\"name\":\"taken\"}").unwrap();
        assert!(!refused.ok && refused.error.unwrap().contains("exists"));
        // No control op takes a host path.
        for path in ["/tmp/x", "../x", "a/b"] {
            let line = format!("{{\"op\":\"snapshot\",\"name\":{path:?}}}");
            let refused = c.raw(&line).unwrap();
            assert!(
                !refused.ok
                    && refused
                        .error
                        .as_deref()
                        .unwrap_or("")
                        .contains("never a path"),
                "{path}: {refused:?}"
            );
        }
        let old = format!("{{\"op\":\"snapshot\",\"dir\":{:?}}}", dir.path());
        let refused = c.raw(&old).unwrap();
        assert!(!refused.ok && refused.error.unwrap().contains("bad request"));
        let raw = c.raw("{\"op\":\"dance\"}").unwrap();
        assert!(!raw.ok && raw.error.unwrap().contains("bad request"));
        assert_eq!(c.call(&Request::Stop).unwrap().state, RunState::Stopping);
        // The stop itself happened once the answer was sent.
        assert_eq!(c.call(&Request::Status).unwrap().state, RunState::Stopping);

        // Clients are capped; one more is told so, one leaving makes room.
        let mut others: Vec<_> = (1..MAX_CONTROL_CLIENTS)
            .map(|_| ControlClient::connect(&path).unwrap())
            .collect();
        for other in &mut others {
            assert_eq!(
                other.call(&Request::Status).unwrap().state,
                RunState::Stopping
            );
        }
        let mut extra = UnixStream::connect(&path).unwrap();
        let mut said = String::new();
        std::io::Read::read_to_string(&mut extra, &mut said).unwrap();
        assert!(said.contains("too many clients"), "{said}");
        drop(others.pop());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mut again = ControlClient::connect(&path).unwrap();
            if again.call(&Request::Status).is_ok() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no room after a client left"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }

        // A line past the limit is refused and ends the connection.
        let pad = "x".repeat(crate::vmm::control::server::MAX_LINE + 10);
        let long = format!("{{\"op\":\"status\",\"pad\":\"{pad}\"");
        let refused = c.raw(&long).unwrap();
        assert!(refused.error.unwrap().contains("longer than"));
        assert!(
            c.call(&Request::Status).is_err(),
            "the connection is closed"
        );
    }
}
