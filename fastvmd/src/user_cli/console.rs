//! `fastvmd console VM`: this terminal on the VM's serial console (the
//! socket's `attachConsole`), in raw mode so every key reaches the guest;
//! Ctrl-] leaves.

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use fastvm_proto::socket::SocketRequest;

use super::terminal::RawMode;
use super::{Failure, SocketArg, finish, resolve, vms};

/// The key that leaves the console (Ctrl-], as telnet's).
const DETACH: u8 = 0x1d;

/// Arguments of `fastvmd console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// The VM (id, id prefix or name).
    pub vm: String,
}

/// Runs `fastvmd console`.
pub fn run(args: ConsoleArgs, socket: &SocketArg) -> ExitCode {
    let socket = socket.path();
    finish(console(&args, &socket))
}

fn console(args: &ConsoleArgs, socket: &Path) -> Result<(), Failure> {
    let all = vms(socket)?;
    let vm = resolve::resolve(&all, &args.vm, "VM").map_err(Failure::Said)?;
    let req = SocketRequest::new(1, "attachConsole").param("id", vm.id.to_string());
    let (_, stream, mut reader, _) = crate::call::open_switched(socket, &req)?;
    let raw = RawMode::enter();
    if raw.is_some() {
        eprint!("Connected to {}'s console; Ctrl-] leaves.\r\n", vm.name);
    }
    let to_vm = stream
        .try_clone()
        .map_err(|e| Failure::Unreachable(e.to_string()))?;
    std::thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let keys = &buf[..n];
            let (keys, leave) = match keys.iter().position(|b| *b == DETACH) {
                Some(at) => (&keys[..at], true),
                None => (keys, false),
            };
            if (&to_vm).write_all(keys).is_err() || leave {
                break;
            }
        }
        let _ = to_vm.shutdown(std::net::Shutdown::Both);
    });
    let mut out = io::stdout().lock();
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let _ = out.write_all(&buf[..n]);
                let _ = out.flush();
            }
        }
    }
    if raw.is_some() {
        drop(raw);
        eprintln!();
    }
    Ok(())
}
