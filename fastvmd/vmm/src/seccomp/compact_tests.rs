//! The compact filters ([`super::compact`]) give every verdict seccompiler's
//! own compiler gives for the same allow lists, checked by running both
//! programs in a classic-BPF interpreter over every syscall number and
//! arguments built from the values the lists name.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

use super::rules::{Allowed, Rules, for_kind};
use super::{SeccompMode, ThreadKind, compact, mismatch_action};

/// A 32-bit x86 process's syscalls (`EM_386 | __AUDIT_ARCH_LE`).
const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;

/// `struct seccomp_data` as the filter reads it.
struct Data {
    nr: u32,
    arch: u32,
    args: [u64; 6],
}

impl Data {
    fn word(&self, offset: u32) -> u32 {
        match offset {
            0 => self.nr,
            4 => self.arch,
            16..=60 if offset % 4 == 0 => {
                let arg = self.args[(offset as usize - 16) / 8];
                if offset % 8 == 0 {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            _ => panic!("load of seccomp_data offset {offset}"),
        }
    }
}

/// Runs `program` on `data` as the kernel would; panics on an instruction
/// seccomp filters here never use, or a jump out of the program.
fn run(program: &[sock_filter], data: &Data) -> u32 {
    let mut a = 0u32;
    let mut pc = 0usize;
    loop {
        let insn = &program[pc];
        let code = u32::from(insn.code);
        pc += 1;
        match code {
            c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => a = data.word(insn.k),
            c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => a &= insn.k,
            c if c == libc::BPF_RET | libc::BPF_K => return insn.k,
            c if c == libc::BPF_JMP | libc::BPF_JA => pc += insn.k as usize,
            c if c & 0x07 == libc::BPF_JMP => {
                let taken = match c & 0xf0 {
                    0x10 => a == insn.k,
                    0x20 => a > insn.k,
                    0x30 => a >= insn.k,
                    0x40 => a & insn.k != 0,
                    _ => panic!("jump code {c:#x}"),
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            _ => panic!("instruction code {code:#x}"),
        }
    }
}

/// The same list compiled by seccompiler alone.
fn reference(rules: &Rules, mode: SeccompMode) -> BpfProgram {
    let rules = rules
        .iter()
        .map(|(nr, allowed)| {
            let each = match allowed {
                Allowed::Always => Vec::new(),
                Allowed::OneOf { arg, values } => values
                    .iter()
                    .map(|v| {
                        let eq = SeccompCondition::new(
                            *arg,
                            SeccompCmpArgLen::Dword,
                            SeccompCmpOp::Eq,
                            u64::from(*v),
                        )
                        .unwrap();
                        SeccompRule::new(vec![eq]).unwrap()
                    })
                    .collect(),
                Allowed::Rules(each) => each.clone(),
            };
            (*nr, each)
        })
        .collect();
    let filter = SeccompFilter::new(
        rules,
        mismatch_action(mode),
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .unwrap();
    BpfProgram::try_from(filter).unwrap()
}

/// Argument values worth trying: those the lists name, their neighbours,
/// with and without upper halves, and the flag combinations of `mmap`.
fn interesting_values(rules: &Rules, pid: u32) -> Vec<u64> {
    let mut values = vec![0u64, 1, 2, u64::from(u32::MAX), u64::MAX, 1 << 32];
    for allowed in rules.values() {
        if let Allowed::OneOf { values: v, .. } = allowed {
            values.extend(v.iter().map(|v| u64::from(*v)));
        }
    }
    values.push(u64::from(pid));
    let prot = [libc::PROT_READ, libc::PROT_WRITE, libc::PROT_EXEC];
    let flags = [libc::MAP_PRIVATE, libc::MAP_SHARED, libc::MAP_ANONYMOUS];
    for bits in 0..8 {
        let pick = |set: &[i32]| {
            (0..3)
                .filter(|i| bits & (1 << i) != 0)
                .fold(0, |acc, i| acc | set[i])
        };
        values.push(pick(&prot) as u64);
        values.push(pick(&flags) as u64);
    }
    let mut more = Vec::new();
    for v in &values {
        more.extend([v.wrapping_add(1), v.wrapping_sub(1), v | (1 << 40)]);
    }
    values.extend(more);
    values.sort_unstable();
    values.dedup();
    values
}

#[test]
fn every_verdict_matches_seccompilers() {
    let pid = 4242;
    // A small deterministic generator for argument vectors.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for mode in [SeccompMode::Kill, SeccompMode::Log] {
        for kind in ThreadKind::ALL {
            let rules = for_kind(
                kind,
                pid,
                crate::jail::JailIds {
                    uid: 900_000_001,
                    gid: 900_000_002,
                },
            );
            let ours =
                compact::compile(&rules, mismatch_action(mode), SeccompAction::Allow).unwrap();
            let theirs = reference(&rules, mode);
            assert!(
                ours.len() * 2 < theirs.len(),
                "{kind:?}: {} instructions, seccompiler's {}",
                ours.len(),
                theirs.len()
            );
            let values = interesting_values(&rules, pid);
            let numbers = (0u32..=470).chain([0x4000_0000, 0x4000_0010, u32::MAX]);
            for nr in numbers {
                let mut cases: Vec<[u64; 6]> = vec![[0; 6]];
                for arg in 0..6 {
                    for v in &values {
                        let mut args = [0; 6];
                        args[arg] = *v;
                        cases.push(args);
                    }
                }
                for _ in 0..64 {
                    let pick = |r: u64| values[(r % values.len() as u64) as usize];
                    cases.push(std::array::from_fn(|_| pick(next())));
                }
                for args in cases {
                    for arch in [compact::AUDIT_ARCH_X86_64, AUDIT_ARCH_I386] {
                        let data = Data { nr, arch, args };
                        assert_eq!(
                            run(&ours, &data),
                            run(&theirs, &data),
                            "{kind:?} {mode:?}: syscall {nr} arch {arch:#x} args {args:x?}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn a_list_of_values_allows_exactly_those() {
    let mut rules = Rules::new();
    rules.insert(
        libc::SYS_ioctl,
        Allowed::OneOf {
            arg: 1,
            values: vec![7, 9],
        },
    );
    rules.insert(libc::SYS_getpid, Allowed::Always);
    let program =
        compact::compile(&rules, SeccompAction::KillProcess, SeccompAction::Allow).unwrap();
    let verdict = |nr: i64, arg1: u64| {
        let data = Data {
            nr: nr as u32,
            arch: compact::AUDIT_ARCH_X86_64,
            args: [0, arg1, 0, 0, 0, 0],
        };
        run(&program, &data)
    };
    let (allow, kill) = (libc::SECCOMP_RET_ALLOW, libc::SECCOMP_RET_KILL_PROCESS);
    assert_eq!(verdict(libc::SYS_ioctl, 7), allow);
    assert_eq!(verdict(libc::SYS_ioctl, 9), allow);
    // The kernel reads the request as 32 bits: the upper half is ignored.
    assert_eq!(verdict(libc::SYS_ioctl, (1 << 32) | 9), allow);
    assert_eq!(verdict(libc::SYS_ioctl, 8), kill);
    assert_eq!(verdict(libc::SYS_getpid, 123), allow);
    assert_eq!(verdict(libc::SYS_getppid, 0), kill);
}

#[test]
fn more_always_allowed_syscalls_than_one_jump_spans() {
    let rules: Rules = (0..600).map(|nr| (nr, Allowed::Always)).collect();
    let program =
        compact::compile(&rules, SeccompAction::KillProcess, SeccompAction::Allow).unwrap();
    for nr in 0..700u32 {
        let data = Data {
            nr,
            arch: compact::AUDIT_ARCH_X86_64,
            args: [0; 6],
        };
        let want = if nr < 600 {
            libc::SECCOMP_RET_ALLOW
        } else {
            libc::SECCOMP_RET_KILL_PROCESS
        };
        assert_eq!(run(&program, &data), want, "syscall {nr}");
    }
}
