//! Host tests of the built-in commands against an in-memory disk.

use std::string::String;
use std::vec;
use std::vec::Vec;

use fastvm_proto::agent::{ExecRequest, ExecResult};

use crate::commands::{Action, Disk, Env, Memory, SECTOR};
use crate::files::FileStore;

/// Runs `req` with an empty file store.
fn run(req: &ExecRequest, memory: &mut Memory, disk: Option<&mut dyn Disk>) -> Action {
    let mut files = FileStore::default();
    let mut env = Env {
        memory,
        disk: match disk {
            Some(d) => Some(&mut *d),
            None => None,
        },
        files: &mut files,
    };
    crate::commands::run(req, &mut env)
}

struct RamDisk(Vec<u8>);

/// A disk that only counts the bad requests it is asked to post.
struct CountingDisk(u32);

impl Disk for CountingDisk {
    fn size_bytes(&self) -> u64 {
        0
    }
    fn read_sectors(&mut self, _: u64, _: &mut [u8]) -> Result<(), String> {
        Err("empty".into())
    }
    fn write_sectors(&mut self, _: u64, _: &[u8]) -> Result<(), String> {
        Err("empty".into())
    }
    fn post_bad_requests(&mut self, requests: u32) -> Result<(), String> {
        self.0 += requests;
        Ok(())
    }
}

impl Disk for RamDisk {
    fn size_bytes(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_sectors(&mut self, first: u64, buf: &mut [u8]) -> Result<(), String> {
        assert_eq!(buf.len() % SECTOR, 0);
        let at = first as usize * SECTOR;
        buf.copy_from_slice(&self.0[at..at + buf.len()]);
        Ok(())
    }
    fn write_sectors(&mut self, first: u64, buf: &[u8]) -> Result<(), String> {
        assert_eq!(buf.len() % SECTOR, 0);
        let at = first as usize * SECTOR;
        self.0[at..at + buf.len()].copy_from_slice(buf);
        Ok(())
    }
}

fn exec(argv: &[&str], mem: &mut Memory, disk: Option<&mut dyn Disk>) -> ExecResult {
    match run(&ExecRequest::new(argv.iter().copied()), mem, disk) {
        Action::Done(out) => out.finish(0),
        other => panic!("unexpected {other:?}"),
    }
}

fn simple(argv: &[&str]) -> ExecResult {
    exec(argv, &mut Memory::new(), None)
}

#[test]
fn echo_exit_stderr_unknown() {
    let r = simple(&["echo", "hello", "world"]);
    assert_eq!(
        (r.exit_code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "hello world\n", "")
    );
    assert_eq!(simple(&["echo"]).stdout, "\n");
    assert_eq!(simple(&["exit", "42"]).exit_code, 42);
    assert_eq!(simple(&["exit"]).exit_code, 0);
    assert_eq!(simple(&["exit", "x"]).exit_code, 2);
    let r = simple(&["stderr", "oops", "here"]);
    assert_eq!(
        (r.exit_code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "", "oops here\n")
    );
    let r = simple(&["frobnicate", "x"]);
    assert_eq!(r.exit_code, 127);
    assert_eq!(r.stderr, "test-guest: unknown command: frobnicate\n");
    assert_eq!(simple(&[]).exit_code, 127);
}

#[test]
fn yes_is_exact_and_capped() {
    let r = simple(&["yes", "1048576"]);
    assert_eq!(r.stdout.len(), 1 << 20);
    assert!(r.stdout.starts_with("y\ny\n"));
    assert!(!r.stdout_truncated);
    assert_eq!(simple(&["yes", "5"]).stdout, "y\ny\ny");
    assert_eq!(simple(&["yes", "0"]).stdout, "");
    let mut req = ExecRequest::new(["yes", "100000000000"]);
    req.max_stdout = 10;
    let Action::Done(out) = run(&req, &mut Memory::new(), None) else {
        panic!()
    };
    let r = out.finish(1);
    assert_eq!(
        (r.stdout.as_str(), r.stdout_truncated),
        ("y\ny\ny\ny\ny\n", true)
    );
}

#[test]
fn sleep_and_poweroff_are_deferred() {
    let mut mem = Memory::new();
    assert!(matches!(
        run(&ExecRequest::new(["sleep", "250"]), &mut mem, None),
        Action::Sleep { ms: 250, .. }
    ));
    assert!(matches!(
        run(&ExecRequest::new(["poweroff"]), &mut mem, None),
        Action::PowerOff(_)
    ));
    assert_eq!(simple(&["sleep", "soon"]).exit_code, 2);
    assert!(matches!(
        run(&ExecRequest::new(["crash"]), &mut mem, None),
        Action::Crash
    ));
    assert!(matches!(
        run(&ExecRequest::new(["mmio-spam", "1000"]), &mut mem, None),
        Action::BadMmio { writes: 1000, .. }
    ));
    let Action::Done(out) = run(&ExecRequest::new(["mmio-spam", "1000001"]), &mut mem, None) else {
        panic!("too many writes must be refused");
    };
    assert_eq!(out.exit_code, 2);
}

#[test]
fn memory_map() {
    let mut mem = Memory::new();
    assert_eq!(
        exec(&["mem-set", "k", "v", "w"], &mut mem, None).exit_code,
        0
    );
    assert_eq!(exec(&["mem-get", "k"], &mut mem, None).stdout, "v w\n");
    let r = exec(&["mem-get", "nope"], &mut mem, None);
    assert_eq!(r.exit_code, 1);
    assert!(r.stderr.contains("nope"));
}

#[test]
fn mem_fill_keeps_non_zero_bytes() {
    let mut mem = Memory::new();
    let r = exec(&["mem-fill", "big", "2"], &mut mem, None);
    assert_eq!((r.exit_code, r.stdout.as_str()), (0, "filled 2 MiB\n"));
    assert_eq!(mem["big"].len(), 2 << 20);
    assert!(mem["big"].bytes().all(|b| b == b'x'));
    assert_eq!(
        exec(&["mem-fill", "big", "lots"], &mut mem, None).exit_code,
        2
    );
    assert_eq!(
        exec(&["mem-fill", "big", "100000"], &mut mem, None).exit_code,
        2
    );
    assert_eq!(exec(&["mem-fill", "big"], &mut mem, None).exit_code, 2);
}

#[test]
fn disk_round_trip_across_sectors() {
    let mut disk = RamDisk(vec![b'.'; 4 * SECTOR]);
    let mut mem = Memory::new();
    let r = exec(
        &["disk-write", "510", "hello", "disk"],
        &mut mem,
        Some(&mut disk),
    );
    assert_eq!((r.exit_code, r.stderr.as_str()), (0, ""));
    assert_eq!(&disk.0[508..522], b"..hello disk..");
    let r = exec(&["disk-read", "510", "10"], &mut mem, Some(&mut disk));
    assert_eq!((r.exit_code, r.stdout.as_str()), (0, "hello disk"));
    let r = exec(&["disk-read", "0", "2048"], &mut mem, Some(&mut disk));
    assert_eq!(r.stdout.len(), 2048);
}

#[test]
fn disk_errors() {
    let mut disk = RamDisk(vec![0; 2 * SECTOR]);
    let mut mem = Memory::new();
    assert_eq!(
        exec(&["disk-write", "1020", "abcdef"], &mut mem, Some(&mut disk)).exit_code,
        1
    );
    assert_eq!(
        exec(&["disk-read", "1000", "100"], &mut mem, Some(&mut disk)).exit_code,
        1
    );
    assert_eq!(
        exec(&["disk-read", "x", "1"], &mut mem, Some(&mut disk)).exit_code,
        2
    );
    let r = exec(&["disk-write", "0", "x"], &mut mem, None);
    assert_eq!(
        (r.exit_code, r.stderr.as_str()),
        (1, "test-guest: disk-write: no disk\n")
    );
    assert_eq!(exec(&["disk-read", "0", "1"], &mut mem, None).exit_code, 1);
}

#[test]
fn desc_spam_posts_through_the_disk_and_checks_its_count() {
    let mut disk = CountingDisk(0);
    let out = exec(&["desc-spam", "300"], &mut Memory::new(), Some(&mut disk));
    assert_eq!(
        (out.exit_code, out.stdout.as_str()),
        (0, "posted 300 bad requests\n")
    );
    assert_eq!(disk.0, 300);
    let too_many = exec(
        &["desc-spam", "1000001"],
        &mut Memory::new(),
        Some(&mut disk),
    );
    assert_eq!(too_many.exit_code, 2, "{too_many:?}");
    assert_eq!(disk.0, 300);
    let no_disk = simple(&["desc-spam", "1"]);
    assert!(
        no_disk.exit_code == 1 && no_disk.stderr.contains("no disk"),
        "{no_disk:?}"
    );
    // A disk that cannot post them says so.
    let mut ram = RamDisk(vec![0; SECTOR]);
    let refused = exec(&["desc-spam", "1"], &mut Memory::new(), Some(&mut ram));
    assert!(
        refused.exit_code == 1 && refused.stderr.contains("cannot post"),
        "{refused:?}"
    );
}
