//! The built-in commands that end at once (or after a plain sleep), for
//! `Exec` and `ExecStart` alike ([`crate::program`] runs them and the ones
//! that take input or time). Pure: the disk is a trait and time is the
//! caller's, so all of it is tested on the host.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;

use fastvm_proto::agent::{CappedOutput, ExecRequest, ExecResult};

use crate::files::FileStore;

/// Disk sector size in bytes.
pub const SECTOR: usize = 512;
/// Largest single disk transfer, in bytes.
const CHUNK: usize = 64 * 1024;

/// A block device addressed in 512-byte sectors.
pub trait Disk {
    /// Capacity in bytes.
    fn size_bytes(&self) -> u64;
    /// Reads whole sectors starting at `first`; `buf.len()` is a multiple of [`SECTOR`].
    fn read_sectors(&mut self, first: u64, buf: &mut [u8]) -> Result<(), String>;
    /// Writes whole sectors starting at `first`; `buf.len()` is a multiple of [`SECTOR`].
    fn write_sectors(&mut self, first: u64, buf: &[u8]) -> Result<(), String>;
    /// Hands the device `requests` requests whose descriptors point outside
    /// guest memory (`desc-spam`), then makes the disk usable again.
    fn post_bad_requests(&mut self, requests: u32) -> Result<(), String> {
        let _ = requests;
        Err("this disk cannot post raw requests".into())
    }
}

/// Largest `mem-fill`, in MiB (the heap ends at 1 GiB).
const MAX_FILL_MIB: usize = 512;

/// Values kept in guest memory by `mem-set` (and `mem-fill`) and read by `mem-get`.
pub type Memory = BTreeMap<String, String>;

/// What commands act on: the guest's memory map, its disk (if any) and
/// its files.
pub struct Env<'a> {
    pub memory: &'a mut Memory,
    pub disk: Option<&'a mut dyn Disk>,
    pub files: &'a mut FileStore,
}

/// What a command produced so far.
#[derive(Debug)]
pub struct Output {
    /// The request's exec id, for its result.
    pub id: u64,
    /// Exit status.
    pub exit_code: i32,
    /// Captured stdout, capped by the request.
    pub stdout: CappedOutput,
    /// Captured stderr, capped by the request.
    pub stderr: CappedOutput,
}

impl Output {
    /// Empty output with the caps of `req`, exit status 0.
    pub fn new(req: &ExecRequest) -> Self {
        Output {
            id: req.id,
            exit_code: 0,
            stdout: CappedOutput::new(req.max_stdout),
            stderr: CappedOutput::new(req.max_stderr),
        }
    }

    /// Sets the exit status and appends `msg` to stderr.
    pub(crate) fn fail(mut self, code: i32, msg: &str) -> Self {
        self.exit_code = code;
        self.stderr.push(msg.as_bytes());
        self
    }

    /// The protocol result, once the command took `duration_ms`.
    pub fn finish(self, duration_ms: u64) -> ExecResult {
        ExecResult {
            id: self.id,
            exit_code: self.exit_code,
            stdout_truncated: self.stdout.truncated,
            stderr_truncated: self.stderr.truncated,
            stdout: self.stdout.into_string(),
            stderr: self.stderr.into_string(),
            timed_out: false,
            duration_ms,
        }
    }
}

/// What the caller must do with a command's outcome.
#[derive(Debug)]
pub enum Action {
    /// Reply now.
    Done(Output),
    /// Reply after `ms` milliseconds, without blocking anything else.
    Sleep { ms: u64, output: Output },
    /// Reply, make sure the host got it, then power the VM off.
    PowerOff(Output),
    /// Fault at once (no reply), so the host sees a crashed guest.
    Crash,
    /// Make `writes` bad MMIO writes (to a read-only register of a
    /// virtio-mmio device), then reply: proves the monitor's guest warnings
    /// are rate-limited and counted.
    BadMmio { writes: u32, output: Output },
}

/// Most bad MMIO writes one `mmio-spam` makes.
pub const MAX_BAD_MMIO: u32 = 1_000_000;
/// Most bad requests one `desc-spam` posts.
pub const MAX_BAD_REQUESTS: u32 = 1_000_000;

/// Runs `req` against the guest's memory map, disk and files.
pub fn run(req: &ExecRequest, env: &mut Env<'_>) -> Action {
    let memory = &mut *env.memory;
    let disk: Option<&mut dyn Disk> = match env.disk {
        Some(ref mut d) => Some(&mut **d),
        None => None,
    };
    let out = Output::new(req);
    let Some(name) = req.argv.first() else {
        return Action::Done(out.fail(127, "test-guest: empty argv\n"));
    };
    let args = &req.argv[1..];
    match name.as_str() {
        "echo" => Action::Done(print(out, &args.join(" "))),
        "stderr" => {
            let mut out = out;
            out.stderr.push(args.join(" ").as_bytes());
            out.stderr.push(b"\n");
            Action::Done(out)
        }
        "exit" => Action::Done(exit(out, args)),
        "sleep" => match args.first().map(|a| a.parse::<u64>()) {
            Some(Ok(ms)) => Action::Sleep { ms, output: out },
            _ => Action::Done(out.fail(2, "test-guest: usage: sleep MS\n")),
        },
        "yes" => Action::Done(yes(out, args)),
        "disk-write" => Action::Done(disk_write(out, args, disk)),
        "disk-read" => Action::Done(disk_read(out, args, disk)),
        "mem-set" => match args.split_first() {
            Some((key, value)) => {
                memory.insert(key.clone(), value.join(" "));
                Action::Done(out)
            }
            None => Action::Done(out.fail(2, "test-guest: usage: mem-set KEY VALUE\n")),
        },
        "mem-fill" => match args {
            [key, mib] => match mib.parse::<usize>() {
                Ok(mib) if mib <= MAX_FILL_MIB => {
                    memory.insert(key.clone(), "x".repeat(mib << 20));
                    Action::Done(print(out, &format!("filled {mib} MiB")))
                }
                _ => Action::Done(out.fail(
                    2,
                    &format!("test-guest: mem-fill: MIB must be 0..={MAX_FILL_MIB}\n"),
                )),
            },
            _ => Action::Done(out.fail(2, "test-guest: usage: mem-fill KEY MIB\n")),
        },
        "mem-get" => match args.first().map(|k| memory.get(k)) {
            Some(Some(value)) => Action::Done(print(out, value)),
            Some(None) => {
                let msg = format!("test-guest: mem-get: no such key: {}\n", args[0]);
                Action::Done(out.fail(1, &msg))
            }
            None => Action::Done(out.fail(2, "test-guest: usage: mem-get KEY\n")),
        },
        "poweroff" => Action::PowerOff(out),
        "crash" => Action::Crash,
        "mmio-spam" => match args.first().map(|n| n.parse::<u32>()) {
            Some(Ok(writes)) if writes <= MAX_BAD_MMIO => Action::BadMmio {
                writes,
                output: out,
            },
            _ => Action::Done(out.fail(
                2,
                &format!("test-guest: usage: mmio-spam N (N at most {MAX_BAD_MMIO})\n"),
            )),
        },
        "desc-spam" => Action::Done(desc_spam(out, args, disk)),
        "file-size" | "file-sha256" => {
            Action::Done(crate::file_cmds::run(out, name, args, env.files))
        }
        other => {
            let msg = format!("test-guest: unknown command: {other}\n");
            Action::Done(out.fail(127, &msg))
        }
    }
}

/// Writes `text` and a newline to stdout.
pub(crate) fn print(mut out: Output, text: &str) -> Output {
    out.stdout.push(text.as_bytes());
    out.stdout.push(b"\n");
    out
}

fn exit(out: Output, args: &[String]) -> Output {
    match args.first().map(|a| a.parse::<i32>()) {
        None => out,
        Some(Ok(code)) => Output {
            exit_code: code,
            ..out
        },
        Some(Err(_)) => out.fail(2, "test-guest: usage: exit CODE\n"),
    }
}

fn yes(mut out: Output, args: &[String]) -> Output {
    let Some(Ok(mut left)) = args.first().map(|a| a.parse::<u64>()) else {
        return out.fail(2, "test-guest: usage: yes BYTES\n");
    };
    let chunk = "y\n".repeat(CHUNK / 2);
    while left > 0 && !out.stdout.truncated {
        let n = left.min(chunk.len() as u64) as usize;
        out.stdout.push(&chunk.as_bytes()[..n]);
        left -= n as u64;
    }
    out
}

/// Parses `OFFSET` and checks `[offset, offset + len)` lies on the disk;
/// on failure, the exit status and message to report.
fn disk_range(
    cmd: &str,
    offset: Option<&String>,
    len: u64,
    disk: &dyn Disk,
) -> Result<u64, (i32, String)> {
    let Some(offset) = offset.and_then(|o| crate::cmdline::parse_u64(o)) else {
        return Err((2, format!("test-guest: {cmd}: bad or missing OFFSET\n")));
    };
    match offset.checked_add(len) {
        Some(end) if end <= disk.size_bytes() => Ok(offset),
        _ => Err((
            1,
            format!(
                "test-guest: {cmd}: range {offset}+{len} is beyond the disk ({} bytes)\n",
                disk.size_bytes()
            ),
        )),
    }
}

/// `desc-spam N`: N disk requests with descriptors outside guest memory.
fn desc_spam(out: Output, args: &[String], disk: Option<&mut dyn Disk>) -> Output {
    let requests = match args.first().map(|n| n.parse::<u32>()) {
        Some(Ok(n)) if n <= MAX_BAD_REQUESTS => n,
        _ => {
            let usage = format!("test-guest: usage: desc-spam N (N at most {MAX_BAD_REQUESTS})\n");
            return out.fail(2, &usage);
        }
    };
    let Some(disk) = disk else {
        return out.fail(1, "test-guest: desc-spam: no disk\n");
    };
    match disk.post_bad_requests(requests) {
        Ok(()) => print(out, &format!("posted {requests} bad requests")),
        Err(e) => out.fail(1, &format!("test-guest: desc-spam: {e}\n")),
    }
}

fn disk_write(out: Output, args: &[String], disk: Option<&mut dyn Disk>) -> Output {
    let Some(disk) = disk else {
        return out.fail(1, "test-guest: disk-write: no disk\n");
    };
    let text = args.get(1..).map(|t| t.join(" ")).unwrap_or_default();
    let data = text.as_bytes();
    let offset = match disk_range("disk-write", args.first(), data.len() as u64, disk) {
        Ok(offset) => offset,
        Err((code, msg)) => return out.fail(code, &msg),
    };
    if data.is_empty() {
        return out;
    }
    let first = offset / SECTOR as u64;
    let last = (offset + data.len() as u64 - 1) / SECTOR as u64;
    let mut buf = vec![0u8; ((last - first + 1) as usize) * SECTOR];
    let skip = (offset - first * SECTOR as u64) as usize;
    let result = disk.read_sectors(first, &mut buf).and_then(|()| {
        buf[skip..skip + data.len()].copy_from_slice(data);
        disk.write_sectors(first, &buf)
    });
    match result {
        Ok(()) => out,
        Err(e) => out.fail(1, &format!("test-guest: disk-write: {e}\n")),
    }
}

fn disk_read(mut out: Output, args: &[String], disk: Option<&mut dyn Disk>) -> Output {
    let Some(disk) = disk else {
        return out.fail(1, "test-guest: disk-read: no disk\n");
    };
    let Some(len) = args.get(1).and_then(|l| crate::cmdline::parse_u64(l)) else {
        return out.fail(2, "test-guest: usage: disk-read OFFSET LEN\n");
    };
    let mut pos = match disk_range("disk-read", args.first(), len, disk) {
        Ok(offset) => offset,
        Err((code, msg)) => return out.fail(code, &msg),
    };
    let end = pos + len;
    let mut buf = vec![0u8; CHUNK];
    while pos < end && !out.stdout.truncated {
        let first = pos / SECTOR as u64;
        let skip = (pos - first * SECTOR as u64) as usize;
        let want = ((end - pos) as usize).min(CHUNK - skip);
        let sectors = (skip + want).div_ceil(SECTOR);
        if let Err(e) = disk.read_sectors(first, &mut buf[..sectors * SECTOR]) {
            return out.fail(1, &format!("test-guest: disk-read: {e}\n"));
        }
        out.stdout.push(&buf[skip..skip + want]);
        pos += want as u64;
    }
    out
}

#[cfg(test)]
#[path = "commands_tests.rs"]
mod tests;
