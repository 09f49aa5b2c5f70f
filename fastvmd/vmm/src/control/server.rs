//! Serves the control socket: a thread accepts clients, one thread per client
//! reads requests line by line.

use crate::seccomp::ThreadKind;
use crate::threads;
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
