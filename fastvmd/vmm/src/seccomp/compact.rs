//! A thread kind's allow list as a short BPF program.
//!
//! A filter costs in proportion to its length when a thread installs it
//! (the kernel checks, converts and JIT-compiles every instruction: ~1 µs
//! each on a nested host, and a restore installs four filters). seccompiler
//! spends five instructions on each syscall number before any argument
//! check; here each number is one comparison, and the syscalls allowed
//! whatever their arguments share one "allow". Argument checks are
//! seccompiler's own rule programs (a [`SeccompRule`] into a
//! [`BpfProgram`]), except a set of values of one 32-bit argument, which
//! is one comparison per value. A test holds every verdict to the one
//! seccompiler's whole-filter compiler gives for the same list.
//!
//! Layout: the architecture check; the syscall number loaded; a comparison
//! per syscall allowed always, jumping to a shared `RET allow`; then per
//! syscall with conditions, a comparison that enters its block or jumps
//! over it (the block ends in a return, so the number stays loaded for
//! the next comparison); the mismatch action last.

use seccompiler::{BpfProgram, SeccompAction, sock_filter};

use super::rules::{Allowed, Rules};

/// `seccomp_data` offsets: syscall number, architecture, arguments.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
const ARGS_OFFSET: u32 = 16;
/// `AUDIT_ARCH_X86_64` (`EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`).
pub const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// The kernel refuses a filter longer than this.
const MAX_LEN: usize = 4096;
/// Comparisons that jump to one shared return (a jump spans ≤ 255).
const CHUNK: usize = 250;

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jeq(k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: JEQ,
        jt,
        jf,
        k,
    }
}

/// The lower half of argument `arg` (little-endian x86_64).
fn arg_low(arg: u8) -> u32 {
    ARGS_OFFSET + u32::from(arg) * 8
}

/// Compiles `rules` for x86_64: an allowed syscall returns `allow`, any
/// other `mismatch`, another architecture kills the process.
pub fn compile(
    rules: &Rules,
    mismatch: SeccompAction,
    allow: SeccompAction,
) -> Result<BpfProgram, String> {
    let (mismatch, allow) = (u32::from(mismatch), u32::from(allow));
    let mut program = vec![
        stmt(LD_ABS, ARCH_OFFSET),
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        stmt(RET, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(LD_ABS, NR_OFFSET),
    ];
    let always: Vec<u32> = rules
        .iter()
        .filter(|(_, a)| **a == Allowed::Always)
        .map(|(nr, _)| syscall_number(*nr))
        .collect::<Result<_, _>>()?;
    for chunk in always.chunks(CHUNK) {
        compare_each(&mut program, chunk);
        // No match: on to the next comparisons, the number still loaded.
        program.push(stmt(JA, 1));
        program.push(stmt(RET, allow));
    }
    for (nr, allowed) in rules {
        let block = match allowed {
            Allowed::Always => continue,
            Allowed::OneOf { arg, values } => {
                if values.len() > CHUNK {
                    return Err(format!("syscall {nr}: more than {CHUNK} values"));
                }
                let mut block = vec![stmt(LD_ABS, arg_low(*arg))];
                compare_each(&mut block, values);
                block.push(stmt(RET, mismatch));
                block.push(stmt(RET, allow));
                block
            }
            Allowed::Rules(each) => {
                let mut block = Vec::new();
                for rule in each {
                    // A condition that fails jumps past the rule's return,
                    // to the next rule.
                    block.extend(BpfProgram::from(rule.clone()));
                    block.push(stmt(RET, allow));
                }
                block.push(stmt(RET, mismatch));
                block
            }
        };
        let over = u32::try_from(block.len()).map_err(|_| "a block too long".to_string())?;
        program.push(jeq(syscall_number(*nr)?, 1, 0));
        program.push(stmt(JA, over));
        program.extend(block);
    }
    program.push(stmt(RET, mismatch));
    if program.len() > MAX_LEN {
        return Err(format!(
            "the filter has {} instructions (at most {MAX_LEN})",
            program.len()
        ));
    }
    Ok(program)
}

/// Compares the loaded word with each of `values` (at most [`CHUNK`]): a
/// match jumps over the rest and over the one instruction the caller puts
/// next (what runs on no match), to what the caller puts after that (the
/// return on a match).
fn compare_each(program: &mut BpfProgram, values: &[u32]) {
    let n = values.len();
    for (i, value) in values.iter().enumerate() {
        let jt = u8::try_from(n - i).expect("at most CHUNK values, fewer than 255");
        program.push(jeq(*value, jt, 0));
    }
}

fn syscall_number(nr: i64) -> Result<u32, String> {
    u32::try_from(nr).map_err(|_| format!("syscall number {nr} out of range"))
}
