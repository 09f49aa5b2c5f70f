//! `fastvmd exec VM [-i] [-t] -- CMD...`: a command in a VM with its output
//! as it comes (the socket's `execStream`). `-i` sends this terminal's
//! stdin, `-t` runs the command on a terminal: this one in raw mode, its
//! size passed on when it changes. The exit status is the command's; 125
//! when the daemon could not run it or the session failed.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use fastvm_proto::exec_channel::{
    self, CLOSE, MessageDecoder, RESIZE, STATUS, STDERR, STDIN, STDOUT, TerminalSize,
};
use fastvm_proto::socket::SocketRequest;
use serde_json::{Value, json};

use super::terminal::{RawMode, terminal_size};
use super::{SocketArg, resolve, vms};

/// Exit status when the command could not be run or its session failed.
const EXIT_NOT_RUN: u8 = 125;
/// How often a terminal's size is looked at.
const RESIZE_POLL: Duration = Duration::from_millis(200);

/// Arguments of `fastvmd exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The VM (id, id prefix or name).
    pub vm: String,
    /// Send this terminal's stdin to the command (without it the command's
    /// stdin is closed at once).
    #[arg(short, long)]
    pub interactive: bool,
    /// Run the command on a terminal (stderr joins stdout; this terminal
    /// goes into raw mode while it runs, and its size follows).
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable (repeatable).
    #[arg(short, long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Working directory in the guest (absolute).
    #[arg(short, long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// End the command after this many seconds.
    #[arg(long, value_name = "SEC")]
    pub timeout: Option<u64>,
    /// The command and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Runs `fastvmd exec`.
pub fn run(args: ExecArgs, socket: &SocketArg) -> ExitCode {
    match exec(args, &socket.path()) {
        Ok(code) => code,
        Err(why) => {
            eprintln!("fastvmd exec: {why}");
            ExitCode::from(EXIT_NOT_RUN)
        }
    }
}

fn exec(args: ExecArgs, socket: &Path) -> Result<ExitCode, String> {
    let all = vms(socket).map_err(|f| f.text())?;
    let vm = resolve::resolve(&all, &args.vm, "VM")?;
    let tty = args.tty && terminal_size().is_some();
    let size = terminal_size().filter(|_| tty);
    let mut body = json!({
        "command": args.command,
        "tty": tty,
        "env": args.env,
    });
    if let Some(size) = size {
        body["cols"] = json!(size.width);
        body["rows"] = json!(size.height);
    }
    if let Some(dir) = &args.workdir {
        body["cwd"] = json!(dir);
    }
    if let Some(sec) = args.timeout {
        body["timeoutSec"] = json!(sec);
    }
    let req = SocketRequest::new(1, "execStream")
        .param("id", vm.id.to_string())
        .body(body);
    let (_, stream, reader, _) =
        crate::call::open_switched(socket, &req).map_err(|e| e.to_string())?;
    let _raw = if tty { RawMode::enter() } else { None };
    let sender = stream.try_clone().map_err(|e| e.to_string())?;
    if args.interactive {
        std::thread::spawn(move || send_stdin(sender));
    } else {
        let _ = (&sender).write_all(&exec_channel::frame(CLOSE, &[STDIN]));
    }
    if tty {
        let resizer = stream.try_clone().map_err(|e| e.to_string())?;
        std::thread::spawn(move || follow_size(resizer, size));
    }
    receive(reader)
}

/// Copies stdin to the command, then closes its stdin.
fn send_stdin(stream: UnixStream) {
    let mut stdin = io::stdin().lock();
    let mut buf = [0u8; 16 << 10];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if (&stream)
                    .write_all(&exec_channel::frame(STDIN, &buf[..n]))
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    let _ = (&stream).write_all(&exec_channel::frame(CLOSE, &[STDIN]));
}

/// Sends the terminal's size whenever it changes.
fn follow_size(stream: UnixStream, mut last: Option<TerminalSize>) {
    loop {
        std::thread::sleep(RESIZE_POLL);
        let now = terminal_size();
        if now.is_some() && now != last {
            last = now;
            let body = serde_json::to_vec(&now).unwrap_or_default();
            if (&stream)
                .write_all(&exec_channel::frame(RESIZE, &body))
                .is_err()
            {
                return;
            }
        }
    }
}

/// Prints the command's output until its status; the exit status it gives.
fn receive(mut reader: impl Read) -> Result<ExitCode, String> {
    let mut decoder = MessageDecoder::default();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        while let Some((channel, bytes)) = decoder.next_message().map_err(|e| e.to_string())? {
            match channel {
                STDOUT => write_out(&mut io::stdout(), &bytes),
                STDERR => write_out(&mut io::stderr(), &bytes),
                STATUS => return status(&bytes),
                _ => {}
            }
        }
        match reader.read(&mut buf) {
            Ok(0) => return Err("the daemon closed the session before the command ended".into()),
            Ok(n) => decoder.push(&buf[..n]),
            Err(e) => return Err(format!("reading from the daemon: {e}")),
        }
    }
}

fn write_out(out: &mut dyn Write, bytes: &[u8]) {
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

/// The exit status a status message gives.
fn status(bytes: &[u8]) -> Result<ExitCode, String> {
    let status: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("a status that does not read: {e}"))?;
    match exec_channel::exit_code_of(&status) {
        Some(code) => Ok(ExitCode::from(code.clamp(0, 255) as u8)),
        None => Err(status
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("the session failed")
            .to_string()),
    }
}
