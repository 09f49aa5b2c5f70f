//! Serves the control socket: a thread accepts clients, one thread per client
//! reads requests line by line.

use crate::vmm::seccomp::ThreadKind;
use crate::vmm::threads;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

use super::{ControlTarget, Request, Response, RunState, Status};

/// Longest request line accepted.
const MAX_LINE: usize = 64 << 10;

/// Answers one request line. A `stop` is answered first and carried out by
/// the caller once the answer is sent (the process ends soon after), so the
/// second value says whether to call [`ControlTarget::stop`].
pub fn handle_line(target: &dyn ControlTarget, line: &str) -> (Response, bool) {
    let request: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => {
            let message =
                format!("bad request ({e}); expected {{\"op\":\"status|pause|resume|stop\"}}");
            return (Response::error(message), false);
        }
    };
    let result = match request {
        Request::Snapshot { name, resume } => {
            return match target.snapshot(&name, resume) {
                Ok(info) => {
                    let mut response = Response::ok(target.status());
                    response.snapshot = Some(info);
                    (response, false)
                }
                Err(e) => (Response::error(e), false),
            };
        }
        Request::Firewall | Request::SetFirewall { .. } => {
            let info = match request {
                Request::SetFirewall { policy } => target.set_firewall(policy),
                _ => target.firewall(),
            };
            return match info {
                Ok(info) => {
                    let mut response = Response::ok(target.status());
                    response.firewall = Some(info);
                    (response, false)
                }
                Err(e) => (Response::error(e), false),
            };
        }
        Request::Status => Ok(()),
        Request::Pause => target.pause(),
        Request::Resume => target.resume(),
        Request::Stop => {
            let status = Status {
                state: RunState::Stopping,
                ..target.status()
            };
            return (Response::ok(status), true);
        }
    };
    match result {
        Ok(()) => (Response::ok(target.status()), false),
        Err(e) => (Response::error(e), false),
    }
}

fn serve_client(stream: UnixStream, target: Arc<dyn ControlTarget>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        let n = match (&mut reader).take(MAX_LINE as u64).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let (response, stop) = if n == MAX_LINE && !line.ends_with('\n') {
            let message = format!("request longer than {MAX_LINE} bytes");
            (Response::error(message), false)
        } else if line.trim().is_empty() {
            continue;
        } else {
            handle_line(target.as_ref(), line.trim())
        };
        let Ok(mut out) = serde_json::to_vec(&response) else {
            return;
        };
        out.push(b'\n');
        let sent = writer.write_all(&out);
        if stop {
            target.stop();
        }
        if sent.is_err() {
            return;
        }
    }
}

/// Serves `listener` on a background thread until the process ends.
pub fn serve(listener: UnixListener, target: Arc<dyn ControlTarget>) -> std::io::Result<()> {
    threads::spawn(ThreadKind::Control, "control", move || {
        for conn in listener.incoming().flatten() {
            let target = target.clone();
            let _ = threads::spawn(ThreadKind::Control, "control-client", move || {
                serve_client(conn, target)
            });
        }
    })
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::super::SnapshotInfo;
    use super::*;
    use std::sync::Mutex;

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
        serve(listener, Arc::new(Fake(Mutex::new(RunState::Running)))).unwrap();
        let mut c = super::super::client::ControlClient::connect(&path).unwrap();
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
    }
}
