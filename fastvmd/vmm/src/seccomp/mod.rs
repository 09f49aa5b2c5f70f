//! Seccomp-bpf filters of a jailed monitor's threads (`seccompiler`): each
//! thread kind has an allow list ([`rules`]), compiled once when the jail
//! is entered and installed by every thread on itself before it does its
//! work ([`crate::threads`]); a syscall off its list kills the
//! monitor (`--seccomp log` lets it through and logs it to the kernel's
//! audit log instead, to find what a list lacks).

pub mod compact;
#[cfg(test)]
mod compact_tests;
pub mod ioctls;
pub mod rules;

use std::sync::OnceLock;

use seccompiler::{BpfProgram, SeccompAction};

use crate::jail::JailIds;

/// What a monitor thread is for; each has its own allow list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ThreadKind {
    /// The main thread once the VM runs: waits for its end, cleans up.
    Main,
    /// Runs guest code (`KVM_RUN`) and the device work a guest's exit asks
    /// for (MMIO, port I/O, disk requests).
    Vcpu,
    /// virtio backends (vsock, net): epoll, eventfds, sockets, the tap.
    Device,
    /// The service loop ([`crate::service`]): console and control clients,
    /// snapshots (files inside the jail), termination signals.
    Service,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 4] = [
        ThreadKind::Main,
        ThreadKind::Vcpu,
        ThreadKind::Device,
        ThreadKind::Service,
    ];
}

/// What happens on a syscall off the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SeccompMode {
    /// The monitor is killed (SIGSYS).
    #[default]
    Kill,
    /// The syscall goes through and is logged in the kernel's audit log
    /// (for finding what an allow list lacks; never for production).
    Log,
}

/// The mode, pid and jail ids filters are compiled for, set once the
/// monitor knows them (before the jail is entered).
static SETTINGS: OnceLock<(SeccompMode, u32, JailIds)> = OnceLock::new();
/// Each kind's filter, compiled by the first thread of that kind (threads
/// compile in parallel, off the main thread's path to a running guest).
static PROGRAMS: [OnceLock<Result<BpfProgram, String>>; ThreadKind::ALL.len()] =
    [const { OnceLock::new() }; ThreadKind::ALL.len()];

/// What a syscall off the list does in `mode`.
fn mismatch_action(mode: SeccompMode) -> SeccompAction {
    match mode {
        SeccompMode::Kill => SeccompAction::KillProcess,
        SeccompMode::Log => SeccompAction::Log,
    }
}

/// The compiled filter of `kind` for process `pid` jailed as `ids`.
pub fn compile(
    kind: ThreadKind,
    pid: u32,
    ids: JailIds,
    mode: SeccompMode,
) -> Result<BpfProgram, String> {
    compact::compile(
        &rules::for_kind(kind, pid, ids),
        mismatch_action(mode),
        SeccompAction::Allow,
    )
    .map_err(|e| format!("seccomp filter of {kind:?}: {e}"))
}

/// Filters from now on are compiled for this process, jailed as `ids`,
/// with `mode` (the first call decides).
pub fn prepare(mode: SeccompMode, ids: JailIds) {
    let _ = SETTINGS.set((mode, std::process::id(), ids));
}

/// Whether [`prepare`] was called: threads may install their filters.
pub fn is_prepared() -> bool {
    SETTINGS.get().is_some()
}

/// Installs `kind`'s filter on the calling thread.
pub fn install(kind: ThreadKind) -> Result<(), String> {
    let (mode, pid, ids) = *SETTINGS.get().ok_or("seccomp filters are not prepared")?;
    let program = PROGRAMS[kind as usize]
        .get_or_init(|| compile(kind, pid, ids, mode))
        .as_ref()
        .map_err(Clone::clone)?;
    seccompiler::apply_filter(program).map_err(|e| format!("seccomp filter of {kind:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids the test filters drop to.
    const TEST_IDS: JailIds = JailIds {
        uid: 900_000_123,
        gid: 900_000_124,
    };

    /// Runs `body` in a forked child under `kind`'s real filter; returns
    /// how the child ended (its exit code, or the signal that killed it).
    fn in_filtered_child(kind: ThreadKind, body: fn()) -> Result<i32, i32> {
        // Compiled before the fork: the child must not allocate.
        let program = compile(kind, std::process::id(), TEST_IDS, SeccompMode::Kill).unwrap();
        // SAFETY: the child only makes raw syscalls and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            if seccompiler::apply_filter(&program).is_err() {
                // SAFETY: _exit ends the child without running anything else.
                unsafe { libc::_exit(99) };
            }
            body();
            // SAFETY: as above.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked; status is a valid pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        if libc::WIFSIGNALED(status) {
            Err(libc::WTERMSIG(status))
        } else {
            Ok(libc::WEXITSTATUS(status))
        }
    }

    #[test]
    fn every_kind_compiles() {
        for kind in ThreadKind::ALL {
            let program = compile(kind, 1, TEST_IDS, SeccompMode::Kill).unwrap();
            assert!(!program.is_empty(), "{kind:?}");
        }
    }

    #[test]
    fn a_syscall_off_the_list_kills_with_sigsys() {
        // A vCPU thread has no business opening files.
        let killed = in_filtered_child(ThreadKind::Vcpu, || {
            // SAFETY: a raw openat of a NUL-terminated path.
            unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, c"/".as_ptr(), 0) };
        });
        assert_eq!(killed, Err(libc::SIGSYS));
        // Nor a device thread an Internet socket (only AF_UNIX).
        let killed = in_filtered_child(ThreadKind::Device, || {
            // SAFETY: a raw socket call with integer arguments.
            unsafe { libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0) };
        });
        assert_eq!(killed, Err(libc::SIGSYS));
        // A KVM ioctl other than KVM_RUN on a vCPU thread.
        let killed = in_filtered_child(ThreadKind::Vcpu, || {
            let set_regs = 0x4090_ae82u64;
            // SAFETY: a raw ioctl on an invalid descriptor.
            unsafe { libc::syscall(libc::SYS_ioctl, -1, set_regs, 0) };
        });
        assert_eq!(killed, Err(libc::SIGSYS));
        // A new thread, from any kind: every thread is started before the
        // filters go on.
        for kind in [ThreadKind::Service, ThreadKind::Main] {
            let killed = in_filtered_child(kind, || {
                // SAFETY: clone3 with a null argument fails (or is killed)
                // before it creates anything.
                unsafe { libc::syscall(libc::SYS_clone3, 0, 0) };
            });
            assert_eq!(killed, Err(libc::SIGSYS), "{kind:?}");
        }
        // Executable memory, for any kind.
        let killed = in_filtered_child(ThreadKind::Service, || {
            let prot = libc::PROT_READ | libc::PROT_EXEC;
            let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
            // SAFETY: a raw mmap of fresh anonymous memory.
            unsafe { libc::syscall(libc::SYS_mmap, 0, 4096, prot, flags, -1, 0) };
        });
        assert_eq!(killed, Err(libc::SIGSYS));
    }

    #[test]
    fn a_thread_may_drop_to_the_jails_ids_and_to_no_other() {
        for kind in ThreadKind::ALL {
            let ended = in_filtered_child(kind, || {
                let (uid, gid) = (u64::from(TEST_IDS.uid), u64::from(TEST_IDS.gid));
                // SAFETY: raw syscalls with integer arguments (a null list
                // of no groups).
                unsafe {
                    libc::syscall(libc::SYS_setgroups, 0, 0);
                    libc::syscall(libc::SYS_setresgid, gid, gid, gid);
                    libc::syscall(libc::SYS_setresuid, uid, uid, uid);
                }
            });
            assert_eq!(ended, Ok(0), "{kind:?}");
        }
        let root_kept: [fn(); 4] = [
            // Root kept as the saved uid could be taken back later.
            || {
                let uid = u64::from(TEST_IDS.uid);
                // SAFETY: integers only.
                unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, 0) };
            },
            || {
                // SAFETY: integers only.
                unsafe { libc::syscall(libc::SYS_setresuid, 0, 0, 0) };
            },
            || {
                let gid = u64::from(TEST_IDS.gid);
                // SAFETY: integers only.
                unsafe { libc::syscall(libc::SYS_setresgid, 0, gid, gid) };
            },
            || {
                let groups = [0u32];
                // SAFETY: a one-group list that outlives the call.
                unsafe { libc::syscall(libc::SYS_setgroups, 1, groups.as_ptr()) };
            },
        ];
        for (i, body) in root_kept.into_iter().enumerate() {
            assert_eq!(
                in_filtered_child(ThreadKind::Vcpu, body),
                Err(libc::SIGSYS),
                "case {i}"
            );
        }
    }

    #[test]
    fn what_the_list_allows_goes_through() {
        let ended = in_filtered_child(ThreadKind::Vcpu, || {
            let kvm_run = 0xae80u64;
            // SAFETY: raw syscalls with integer arguments on invalid fds.
            unsafe {
                libc::syscall(libc::SYS_ioctl, -1, kvm_run, 0);
                libc::syscall(libc::SYS_getpid);
                libc::syscall(libc::SYS_write, -1, 0, 0);
            }
        });
        assert_eq!(ended, Ok(0));
        let ended = in_filtered_child(ThreadKind::Device, || {
            // SAFETY: a raw socket call; the descriptor is closed at exit.
            unsafe { libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        });
        assert_eq!(ended, Ok(0));
    }
}
