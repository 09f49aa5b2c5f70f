//! Answers control requests, one line at a time; the monitor's service
//! loop ([`crate::service`]) reads the lines and sends the answers.

use super::{ControlTarget, Request, Response, RunState, Status};

/// Longest request line accepted: room for a `setFirewall` with a policy
/// at the API's caps (1,000 rules, 4,096 source CIDRs: ~300 KB).
pub const MAX_LINE: usize = 1 << 20;

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
