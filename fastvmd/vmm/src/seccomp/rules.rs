//! The allow list of each monitor thread kind, in one place. A syscall not
//! listed for a thread kills the monitor. Argument checks:
//!
//! - `ioctl`: only the request numbers of [`super::ioctls`] for the kind;
//! - `mmap`/`mprotect`: private anonymous memory, never executable (no
//!   file or shared mapping after the jail, no code the guest could plant);
//! - `tgkill`: only this process's threads (kicking a vCPU);
//! - `socket`: only `AF_UNIX` (a guest's vsock connection to the host);
//! - `prctl`: naming a thread and no_new_privs (set already), which a new
//!   thread does before it installs its own filter, as `seccomp` may only
//!   add one.
//! - `setgroups`, `setresgid`, `setresuid`: only to the jail's own ids
//!   (an empty group list; the jail's gid and uid as real, effective and
//!   saved ids): a thread installs its filter while it waits for the jail,
//!   then drops to those ids, and can never take any other.
//!
//! Arguments are checked on their lower 32 bits, which is all the kernel
//! reads of these: `int` and `unsigned int` (ioctl requests, descriptors,
//! pids, socket domains, prctl options) and the PROT_ and MAP_ bits of
//! `mmap`/`mprotect`. Each check is then half as long.

use std::collections::BTreeMap;

use seccompiler::{
    SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond, SeccompRule,
};

use super::{ThreadKind, ioctls};
use crate::jail::JailIds;

/// When one syscall is allowed.
#[derive(Debug, Clone, PartialEq)]
pub enum Allowed {
    /// Whatever its arguments.
    Always,
    /// When its 32-bit argument `arg` is one of `values`.
    OneOf { arg: u8, values: Vec<u32> },
    /// When one of these rules matches (seccompiler's conditions).
    Rules(Vec<SeccompRule>),
}

/// Each allowed syscall, by number.
pub type Rules = BTreeMap<i64, Allowed>;

/// What every thread does: memory, locks, its own signals, time, exit,
/// logging to stderr.
const COMMON: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_futex,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettid,
    libc::SYS_getpid,
    // A new thread checks it was born with the jail's ids and no capability.
    libc::SYS_geteuid,
    libc::SYS_capget,
    libc::SYS_getrandom,
    libc::SYS_restart_syscall,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
];

/// Socket I/O of the device backends and the service loop.
const SOCKETS: &[i64] = &[
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_accept4,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_fcntl,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
];

/// The disk, served from a vCPU thread (virtio-blk requests run where the
/// guest notifies).
const DISK_IO: &[i64] = &[
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_fdatasync,
    libc::SYS_fsync,
    libc::SYS_fallocate,
    libc::SYS_lseek,
];

/// Files a snapshot (service loop) or the exit record (main) writes inside
/// the jail, and the sockets the main thread removes.
const FILES: &[i64] = &[
    libc::SYS_openat,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_rename,
    libc::SYS_unlink,
    libc::SYS_rmdir,
    libc::SYS_mkdir,
    libc::SYS_statx,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_getdents64,
    libc::SYS_ftruncate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_lseek,
    libc::SYS_read,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_fallocate,
    libc::SYS_copy_file_range,
    libc::SYS_readahead,
    libc::SYS_fadvise64,
    libc::SYS_mincore,
];

fn allow(rules: &mut Rules, calls: &[i64]) {
    for call in calls {
        rules.insert(*call, Allowed::Always);
    }
}

/// `call` when its 32-bit argument `arg` is one of `values`.
fn one_of(rules: &mut Rules, call: i64, arg: u8, values: Vec<u32>) {
    rules.insert(call, Allowed::OneOf { arg, values });
}

/// A check of the lower 32 bits of an argument: `mmap`'s and `mprotect`'s
/// `prot` and `flags` are `unsigned long`s, but every PROT_ and MAP_ bit is
/// in the lower half and the kernel ignores the upper one.
fn cond(arg: u8, op: Op, value: u64) -> Cond {
    // Arguments 0-5 and these operators are always valid.
    Cond::new(arg, Len::Dword, op, value).expect("a valid seccomp condition")
}

fn rule(conds: Vec<Cond>) -> SeccompRule {
    SeccompRule::new(conds).expect("a valid seccomp rule")
}

/// `ioctl(fd, request, ...)` with `request` among `requests`.
fn ioctl(rules: &mut Rules, requests: Vec<u32>) {
    one_of(rules, libc::SYS_ioctl, 1, requests);
}

/// Private anonymous memory, never executable.
fn memory(rules: &mut Rules) {
    let no_exec = cond(2, Op::MaskedEq(libc::PROT_EXEC as u64), 0);
    let private = cond(
        3,
        Op::MaskedEq((libc::MAP_SHARED | libc::MAP_PRIVATE) as u64),
        libc::MAP_PRIVATE as u64,
    );
    let anonymous = cond(
        3,
        Op::MaskedEq(libc::MAP_ANONYMOUS as u64),
        libc::MAP_ANONYMOUS as u64,
    );
    rules.insert(
        libc::SYS_mmap,
        Allowed::Rules(vec![rule(vec![no_exec.clone(), private, anonymous])]),
    );
    rules.insert(
        libc::SYS_mprotect,
        Allowed::Rules(vec![rule(vec![no_exec])]),
    );
}

/// The log cap ([`crate::log_cap`]) empties stderr, from any thread.
fn stderr_truncation(rules: &mut Rules) {
    let stderr = || Allowed::OneOf {
        arg: 0,
        values: vec![libc::STDERR_FILENO as u32],
    };
    rules.insert(libc::SYS_ftruncate, stderr());
    rules.entry(libc::SYS_lseek).or_insert_with(stderr);
}

fn own_signals(rules: &mut Rules, pid: u32) {
    one_of(rules, libc::SYS_tgkill, 0, vec![pid]);
}

fn prctl(rules: &mut Rules) {
    let options = [libc::PR_SET_NAME, libc::PR_SET_NO_NEW_PRIVS];
    one_of(
        rules,
        libc::SYS_prctl,
        0,
        options.map(|o| o as u32).to_vec(),
    );
}

fn unix_sockets(rules: &mut Rules) {
    one_of(rules, libc::SYS_socket, 0, vec![libc::AF_UNIX as u32]);
    allow(rules, &[libc::SYS_connect]);
}

/// The allow list of `kind` in a process whose pid is `pid`.
/// Leaving uid 0 for `ids`, and for nothing else.
fn drop_to_ids(rules: &mut Rules, ids: JailIds) {
    one_of(rules, libc::SYS_setgroups, 0, vec![0]);
    for (call, id) in [
        (libc::SYS_setresgid, ids.gid),
        (libc::SYS_setresuid, ids.uid),
    ] {
        let all_three = (0..3).map(|arg| cond(arg, Op::Eq, id.into())).collect();
        rules.insert(call, Allowed::Rules(vec![rule(all_three)]));
    }
}

/// The allow list of `kind` in process `pid` jailed as `ids`.
pub fn for_kind(kind: ThreadKind, pid: u32, ids: JailIds) -> Rules {
    let mut rules = Rules::new();
    allow(&mut rules, COMMON);
    drop_to_ids(&mut rules, ids);
    memory(&mut rules);
    own_signals(&mut rules, pid);
    prctl(&mut rules);
    stderr_truncation(&mut rules);
    match kind {
        ThreadKind::Vcpu => {
            allow(&mut rules, DISK_IO);
            // A guest's notify runs the device's queue work here: the
            // console's and vsock's sockets are read, written and polled.
            allow(
                &mut rules,
                &[
                    libc::SYS_read,
                    libc::SYS_recvfrom,
                    libc::SYS_sendto,
                    libc::SYS_sendmsg,
                    libc::SYS_epoll_ctl,
                    libc::SYS_fcntl,
                ],
            );
            ioctl(&mut rules, ioctls::vcpu());
        }
        ThreadKind::Device => {
            allow(&mut rules, SOCKETS);
            unix_sockets(&mut rules);
            ioctl(&mut rules, ioctls::sockets());
        }
        ThreadKind::Service => {
            allow(&mut rules, SOCKETS);
            allow(&mut rules, FILES);
            ioctl(&mut rules, ioctls::control());
        }
        // Every thread is started before the main thread's filter goes on
        // (each installs its own): no kind may start one.
        ThreadKind::Main => {
            allow(&mut rules, FILES);
            allow(&mut rules, &[libc::SYS_epoll_ctl, libc::SYS_fcntl]);
        }
    }
    rules
}
