//! `fastvmd cp SRC DST`: a file into a VM (`fastvmd cp ./app.tar dev:/srv/app.tar`)
//! or out of one (`fastvmd cp dev:/etc/os-release .`), over the socket's
//! `writeFile` / `readFile`, in chunks. `-` is stdin or stdout. A file
//! into a VM keeps its permission bits; one out of it too, written beside
//! its destination and renamed into place once whole.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use fastvm_proto::exec_channel::{self, CLOSE, MessageDecoder, STATUS, STDIN, STDOUT};
use fastvm_proto::socket::SocketRequest;
use serde_json::{Value, json};

use super::{Failure, SocketArg, finish, resolve, vms};

/// Bytes sent in one message.
const CHUNK: usize = 256 << 10;
/// How often progress is shown.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Arguments of `fastvmd cp`.
#[derive(Debug, Args)]
pub struct CpArgs {
    /// What to copy: a local path, `-` (stdin), or VM:PATH (an absolute
    /// path in the VM named by id, id prefix or name).
    pub source: String,
    /// Where to: a local path (a directory takes the file's name), `-`
    /// (stdout), or VM:PATH.
    pub destination: String,
}

/// One side of a copy.
#[derive(Debug, PartialEq)]
enum Side {
    Local(String),
    Vm { vm: String, path: String },
}

/// `NAME:/path` (NAME without a `/`) is a VM's file; anything else local.
fn side(arg: &str) -> Side {
    match arg.split_once(':') {
        Some((vm, path)) if !vm.is_empty() && !vm.contains('/') && path.starts_with('/') => {
            Side::Vm {
                vm: vm.to_string(),
                path: path.to_string(),
            }
        }
        _ => Side::Local(arg.to_string()),
    }
}

/// Runs `fastvmd cp`.
pub fn run(args: CpArgs, socket: &SocketArg) -> ExitCode {
    let socket = socket.path();
    finish(match (side(&args.source), side(&args.destination)) {
        (Side::Local(from), Side::Vm { vm, path }) => upload(&socket, &from, &vm, &path),
        (Side::Vm { vm, path }, Side::Local(to)) => download(&socket, &vm, &path, &to),
        _ => Err(Failure::Said(
            "cp: exactly one of SOURCE and DESTINATION must be VM:/absolute/path".into(),
        )),
    })
}

fn said(e: impl std::fmt::Display) -> Failure {
    Failure::Said(format!("cp: {e}"))
}

/// Opens `req` on the socket; the connection once answered 101.
fn open(socket: &Path, req: &SocketRequest) -> Result<(Value, crate::call::Answered), Failure> {
    let answered = crate::call::open_switched(socket, req)?;
    Ok((answered.0.body.clone(), answered))
}

/// The id of the VM `wanted` names.
fn vm_id(socket: &Path, wanted: &str) -> Result<String, Failure> {
    let all = vms(socket)?;
    let vm = resolve::resolve(&all, wanted, "VM").map_err(Failure::Said)?;
    Ok(vm.id.to_string())
}

fn upload(socket: &Path, from: &str, vm: &str, path: &str) -> Result<(), Failure> {
    let (mut input, mode, total): (Box<dyn Read>, u32, Option<u64>) = if from == "-" {
        (Box::new(io::stdin().lock()), 0o644, None)
    } else {
        let file = File::open(from).map_err(|e| said(format!("{from}: {e}")))?;
        let meta = file.metadata().map_err(|e| said(format!("{from}: {e}")))?;
        if meta.is_dir() {
            return Err(said(format!("{from} is a directory; cp copies one file")));
        }
        (
            Box::new(file),
            meta.permissions().mode() & 0o7777,
            Some(meta.len()),
        )
    };
    let req = SocketRequest::new(1, "writeFile")
        .param("id", vm_id(socket, vm)?)
        .body(json!({ "path": path, "mode": mode }));
    let (_, (_, stream, reader, _)) = open(socket, &req)?;
    let mut progress = Progress::new(total);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = input
            .read(&mut buf)
            .map_err(|e| said(format!("{from}: {e}")))?;
        if n == 0 {
            break;
        }
        if (&stream)
            .write_all(&exec_channel::frame(STDIN, &buf[..n]))
            .is_err()
        {
            // The daemon stopped taking bytes: its status says why.
            break;
        }
        progress.add(n as u64);
    }
    let _ = (&stream).write_all(&exec_channel::frame(CLOSE, &[STDIN]));
    progress.done();
    let body = final_status(reader, |_| Ok(()))?;
    if io::stderr().is_terminal() {
        eprintln!("{} bytes to {vm}:{path}", body["bytes"]);
    }
    Ok(())
}

fn download(socket: &Path, vm: &str, path: &str, to: &str) -> Result<(), Failure> {
    let req = SocketRequest::new(1, "readFile")
        .param("id", vm_id(socket, vm)?)
        .body(json!({ "path": path }));
    let (info, (_, _stream, reader, _)) = open(socket, &req)?;
    let mode = info["mode"].as_u64().unwrap_or(0o644) as u32;
    if to == "-" {
        let mut out = io::stdout().lock();
        final_status(reader, |bytes| out.write_all(bytes).map_err(said))?;
        let _ = out.flush();
        return Ok(());
    }
    let target = destination(to, path);
    let partial = partial_name(&target);
    let mut file =
        File::create(&partial).map_err(|e| said(format!("{}: {e}", partial.display())))?;
    let mut progress = Progress::new(info["size"].as_u64());
    let written = final_status(reader, |bytes| {
        progress.add(bytes.len() as u64);
        file.write_all(bytes)
            .map_err(|e| said(format!("{}: {e}", partial.display())))
    });
    progress.done();
    let placed = written.and_then(|_| {
        file.sync_all().map_err(said)?;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(mode)).map_err(said)?;
        std::fs::rename(&partial, &target).map_err(|e| said(format!("{}: {e}", target.display())))
    });
    if placed.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    placed
}

/// `to`, or `to/<the file's name>` when `to` is a directory.
fn destination(to: &str, guest_path: &str) -> PathBuf {
    let to = PathBuf::from(to);
    if to.is_dir() {
        let name = Path::new(guest_path).file_name().unwrap_or_default();
        return to.join(name);
    }
    to
}

/// Where a download is written until it is whole.
fn partial_name(target: &Path) -> PathBuf {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    target.with_file_name(format!(".{name}.fastvm-partial"))
}

/// Reads messages to the status, handing each data message to `data`; the
/// status's body when it is a success.
fn final_status(
    mut reader: impl Read,
    mut data: impl FnMut(&[u8]) -> Result<(), Failure>,
) -> Result<Value, Failure> {
    let mut decoder = MessageDecoder::default();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        while let Some((channel, bytes)) = decoder.next_message().map_err(said)? {
            match channel {
                STDOUT => data(&bytes)?,
                STATUS => {
                    let status: Value = serde_json::from_slice(&bytes).map_err(said)?;
                    let code = status["status"].as_u64().unwrap_or(500);
                    if code == 200 {
                        return Ok(status["body"].clone());
                    }
                    let msg = status["body"]["error"].as_str().unwrap_or("failed");
                    return Err(Failure::Said(format!("error {code}: {msg}")));
                }
                _ => {}
            }
        }
        match reader.read(&mut buf) {
            Ok(0) => return Err(said("the daemon closed the connection before the end")),
            Ok(n) => decoder.push(&buf[..n]),
            Err(e) => return Err(said(e)),
        }
    }
}

/// Bytes moved so far, shown on a terminal's stderr.
struct Progress {
    total: Option<u64>,
    moved: u64,
    shown: Instant,
    on: bool,
}

impl Progress {
    fn new(total: Option<u64>) -> Progress {
        Progress {
            total,
            moved: 0,
            shown: Instant::now(),
            on: io::stderr().is_terminal(),
        }
    }

    fn add(&mut self, n: u64) {
        self.moved += n;
        if self.on && self.shown.elapsed() >= PROGRESS_EVERY {
            self.shown = Instant::now();
            self.show();
        }
    }

    fn show(&self) {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        match self.total {
            Some(t) => eprint!("\r{:.1} / {:.1} MiB", mib(self.moved), mib(t)),
            None => eprint!("\r{:.1} MiB", mib(self.moved)),
        }
    }

    fn done(&self) {
        if self.on && self.moved > 0 {
            self.show();
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_side_is_name_colon_absolute_path() {
        assert_eq!(
            side("dev:/etc/hosts"),
            Side::Vm {
                vm: "dev".into(),
                path: "/etc/hosts".into()
            }
        );
        assert_eq!(side("./a:b"), Side::Local("./a:b".into()));
        assert_eq!(side("dev:relative"), Side::Local("dev:relative".into()));
        assert_eq!(side("dir/x:/y"), Side::Local("dir/x:/y".into()));
        assert_eq!(side("-"), Side::Local("-".into()));
    }

    #[test]
    fn a_directory_destination_takes_the_files_name() {
        let tmp = tempfile::tempdir().unwrap();
        let to = tmp.path().to_str().unwrap();
        assert_eq!(
            destination(to, "/etc/os-release"),
            tmp.path().join("os-release")
        );
        assert_eq!(
            partial_name(&tmp.path().join("x")),
            tmp.path().join(".x.fastvm-partial")
        );
    }
}
