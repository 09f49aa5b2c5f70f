//! `fastvmd port-forward VM [HOSTPORT:]GUESTPORT`: a port of this host
//! (127.0.0.1) reaching a port inside the VM through its agent, for as long
//! as the command runs (like `kubectl port-forward`): Ctrl-C closes it,
//! and it ends by itself when the daemon drops the forward (the VM
//! deleted).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use fastvm_proto::api::{ForwardInfo, ForwardList};
use fastvm_proto::socket::SocketRequest;
use serde_json::json;

use super::{Failure, SocketArg, ask, decode, finish, resolve, vms};

/// How often the forward is looked for (the VM may be deleted meanwhile).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Arguments of `fastvmd port-forward`.
#[derive(Debug, Args)]
pub struct PortForwardArgs {
    /// The VM (id, id prefix or name).
    pub vm: String,
    /// `GUESTPORT` (this host gets a free port) or `HOSTPORT:GUESTPORT`.
    #[arg(value_name = "[HOSTPORT:]GUESTPORT")]
    pub ports: String,
}

/// (host port or 0 for a free one, guest port).
fn ports(spec: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("{spec}: {p:?} is not a port (1 to 65535)"))
    };
    match spec.split_once(':') {
        Some(("", guest)) => Ok((0, port(guest)?)),
        Some((host, guest)) => Ok((port(host)?, port(guest)?)),
        None => Ok((0, port(spec)?)),
    }
}

/// Runs `fastvmd port-forward`.
pub fn run(args: PortForwardArgs, socket: &SocketArg) -> ExitCode {
    let socket = socket.path();
    finish(forward(&args, &socket))
}

fn forward(args: &PortForwardArgs, socket: &Path) -> Result<(), Failure> {
    let (host_port, guest_port) = ports(&args.ports).map_err(Failure::Said)?;
    let all = vms(socket)?;
    let vm = resolve::resolve(&all, &args.vm, "VM").map_err(Failure::Said)?;
    let stop = interrupted()?;
    let mut body = json!({ "guestPort": guest_port });
    if host_port != 0 {
        body["hostPort"] = json!(host_port);
    }
    let req = SocketRequest::new(1, "forwardPort")
        .param("id", vm.id.to_string())
        .body(body);
    let info: ForwardInfo = decode(ask(socket, req)?, "forward")?;
    println!(
        "Forwarding from {} -> {}:{} (Ctrl-C to stop)",
        info.host_address, vm.name, info.guest_port
    );
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(CHECK_EVERY);
        let list: ForwardList = decode(
            ask(socket, SocketRequest::new(1, "listForwards"))?,
            "forwards",
        )?;
        if !list.forwards.iter().any(|f| f.id == info.id) {
            return Err(Failure::Said(format!(
                "the forward to {}:{} ended (the VM was deleted, or the daemon restarted)",
                vm.name, info.guest_port
            )));
        }
    }
    let req = SocketRequest::new(1, "closeForward").param("id", &info.id);
    ask(socket, req)?;
    Ok(())
}

/// Set once SIGINT or SIGTERM arrives (they are taken by a thread of
/// their own instead of ending the process, so the forward is closed).
fn interrupted() -> Result<Arc<AtomicBool>, Failure> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: the set is a valid sigset_t; the signals are valid numbers;
    // pthread_sigmask blocks them in this thread, which every thread made
    // after inherits.
    let rc = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(Failure::Unreachable(
            "cannot take SIGINT and SIGTERM".into(),
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let mut signal = 0;
        // SAFETY: sigwait reads the set and writes one int.
        unsafe { libc::sigwait(&set, &mut signal) };
        flag.store(true, Ordering::SeqCst);
    });
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs() {
        assert_eq!(ports("8080:80"), Ok((8080, 80)));
        assert_eq!(ports("80"), Ok((0, 80)));
        assert_eq!(ports(":80"), Ok((0, 80)));
        assert!(ports("x:80").unwrap_err().contains("not a port"));
        assert!(ports("70000").is_err());
    }
}
