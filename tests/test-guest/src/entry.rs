//! The CPL 0 entry point and the switch to CPL 3.
//!
//! Under PVM, CPL 0 code is instruction-emulated (slow, and SSE/xsave/
//! cmpxchg16b are unsupported), so this part is a few integer-only
//! instructions: identity-map the first GiB of RAM and the virtio-mmio
//! windows with 2 MiB user pages at 0x30000, read the CPUID leaves the boot
//! checks need, load
//! our GDT (user code 0x23, user data 0x1b), enable SSE in CR0/CR4, then
//! `iretq` to CPL 3 with IOPL 3 and interrupts off. Everything after runs at
//! CPL 3 with native speed.
//!
//! An IDT for the 32 CPU exceptions (at 0x36000) makes a fault at CPL 3
//! print `test-guest fault: vector=... error=... rip=... cr2=...` on the
//! serial port, then triple-fault so the host sees a crash. `ltr` is not
//! emulated under PVM, so the TSS is the one the monitor's TR already points
//! at: base 0, as Firecracker sets it (RSP0 is written at address 4).

use core::arch::global_asm;

/// Page tables: PML4 at 0x30000, PDPT at 0x31000, PD0 at 0x32000, PD3 at 0x33000.
const PAGE_TABLES: u64 = 0x30000;
/// Base of the TSS the monitor loaded into TR (Firecracker's convention).
const TSS: u64 = 0;
/// The IDT: 32 interrupt gates of 16 bytes, right after the page tables.
const IDT: u64 = 0x36000;

global_asm!(
    r#"
    .section .text._start, "ax", @progbits
    .global _start
    .code64
_start:
    cli
    mov r15, rsi

    /* Page tables. Every instruction here is emulated, so the fewer the
       better. FastVM's monitor sets the user bit in its boot identity map
       (first GiB, 2 MiB pages): then those tables are kept and only the
       virtio-mmio windows are added (PDPT[3] -> PD3, entry 128 = the 2 MiB
       at 0xd0000000). A monitor that does not (Firecracker) gets our own
       map of the first GiB, built below. Guest RAM starts zeroed, so only
       the used entries are written. (1 GiB pages would be fewer stores, but
       PVM's shadow paging refuses them.) */
    mov rax, cr3
    and rax, -4096
    mov rbx, qword ptr [rax]
    test ebx, 4
    jz 3f
    and rbx, -4096
    mov qword ptr [rbx + 0x18], {pt} + 0x3007
    jmp 5f
3:  mov qword ptr [{pt}], {pt} + 0x1007
    mov qword ptr [{pt} + 0x1000], {pt} + 0x2007
    mov qword ptr [{pt} + 0x1018], {pt} + 0x3007
    mov edi, {pt} + 0x2000
    mov eax, 0x87
    mov ecx, 512
4:  mov qword ptr [rdi], rax
    add rdi, 8
    add eax, 0x200000
    dec ecx
    jnz 4b
    mov eax, {pt}
    mov cr3, rax
5:  mov eax, 0xd0000087
    mov qword ptr [{pt} + 0x3000 + 128 * 8], rax

    /* CPUID as the monitor configured it. At CPL 3 under PVM the CPUID
       instruction is not intercepted and reports the host's values, so the
       leaves the boot checks need are read here and kept in cpuid_cache. */
    lea r14, [rip + cpuid_cache]
    .irp leaf, 0x0, 0x1, 0x40000000, 0x40000010
    mov eax, \leaf
    xor ecx, ecx
    cpuid
    mov dword ptr [r14], eax
    mov dword ptr [r14 + 4], ebx
    mov dword ptr [r14 + 8], ecx
    mov dword ptr [r14 + 12], edx
    add r14, 16
    .endr

    lgdt [rip + gdt_ptr_label]

    /* TSS.RSP0 = exception stack. The IDT's gates are written at CPL 3
       by install_idt() before anything can fault; loading it here costs
       one instruction instead of a loop. */
    lea rax, [rip + exc_stack_top]
    mov qword ptr [{tss} + 4], rax
    lidt [rip + idt_ptr_label]

    /* CR4.OSFXSR | CR4.OSXMMEXCPT; CR0.MP set, CR0.EM and CR0.TS clear. */
    mov rax, cr4
    or rax, 0x600
    mov cr4, rax
    mov rax, cr0
    and rax, -13
    or rax, 2
    mov cr0, rax

    /* iretq to CPL 3: SS, RSP, RFLAGS (IOPL 3, IF 0), CS, RIP. */
    lea rsp, [rip + stack_top_label]
    push 0x1b
    lea rax, [rip + stack_top_label]
    push rax
    push 0x3002
    push 0x23
    lea rax, [rip + user_entry]
    push rax
    mov rdi, r15
    iretq

    /* CPL 3 from here on: set up the FPU/SSE state, then call Rust. */
    .section .text.user_entry, "ax", @progbits
user_entry:
    fninit
    push 0x1f80
    ldmxcsr [rsp]
    add rsp, 8
    and rsp, -16
    call {main}
    ud2

    /* Exception entry (CPL 0, emulated: integer only). One 16-byte stub per
       vector pushes a zero error code where the CPU pushes none, then the vector. */
    .section .text.exceptions, "ax", @progbits
    .balign 16
    .global exc_stubs
exc_stubs:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .balign 16
    .if (\v == 8) || ((\v >= 10) && (\v <= 14)) || (\v == 17) || (\v == 21) || (\v == 29) || (\v == 30)
    .else
    push 0
    .endif
    push \v
    jmp exc_common
    .endr

exc_common:
    lea rsi, [rip + msg_vector]
    call exc_puts
    mov rax, qword ptr [rsp]
    call exc_puthex
    lea rsi, [rip + msg_error]
    call exc_puts
    mov rax, qword ptr [rsp + 8]
    call exc_puthex
    lea rsi, [rip + msg_rip]
    call exc_puts
    mov rax, qword ptr [rsp + 16]
    call exc_puthex
    lea rsi, [rip + msg_cr2]
    call exc_puts
    mov rax, cr2
    call exc_puthex
    mov al, 10
    call exc_putc
    /* Triple fault: the host reports a crashed guest. */
    lidt [rip + null_idt_label]
    ud2

exc_puts:
    movzx eax, byte ptr [rsi]
    test al, al
    jz 9f
    call exc_putc
    inc rsi
    jmp exc_puts
9:  ret

exc_putc:
    mov dx, 0x3f8
    out dx, al
    ret

exc_puthex:
    mov r8, rax
    mov ecx, 16
8:  rol r8, 4
    mov eax, r8d
    and eax, 15
    cmp eax, 10
    jb 7f
    add eax, 39
7:  add eax, 48
    call exc_putc
    dec ecx
    jnz 8b
    ret

    .section .rodata.exceptions, "a", @progbits
msg_vector:
    .asciz "\ntest-guest fault: vector=0x"
msg_error:
    .asciz " error=0x"
msg_rip:
    .asciz " rip=0x"
msg_cr2:
    .asciz " cr2=0x"
    .balign 16
idt_ptr_label:
    .word 32 * 16 - 1
    .quad {idt}
    .balign 16
null_idt_label:
    .word 0
    .quad 0

    .section .rodata.gdt, "a", @progbits
    .balign 16
gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF /* 0x08 kernel code */
    .quad 0x00CF92000000FFFF /* 0x10 kernel data */
    .quad 0x00CFF2000000FFFF /* 0x18 user data (0x1b) */
    .quad 0x00AFFA000000FFFF /* 0x20 user code (0x23) */
gdt_end:
    .balign 16
gdt_ptr_label:
    .word gdt_end - gdt - 1
    .quad gdt

    .section .bss.cpuid, "aw", @nobits
    .balign 16
    .global cpuid_cache
cpuid_cache:
    .skip 4 * 16

    .section .bss.stack, "aw", @nobits
    .balign 4096
    .skip 16 * 1024
exc_stack_top:
    .skip 1024 * 1024
stack_top_label:
    "#,
    pt = const PAGE_TABLES,
    tss = const TSS,
    idt = const IDT,
    main = sym crate::rust_main,
);

unsafe extern "C" {
    /// First of the 32 exception stubs, 16 bytes apart (in the asm above).
    static exc_stubs: u8;
}

/// Writes the 32 exception gates of the IDT the entry code loaded. Runs at
/// CPL 3 (native speed): the IDT is ordinary RAM mapped writable.
pub fn install_idt() {
    let stubs = core::ptr::addr_of!(exc_stubs) as u64;
    for vector in 0..32u64 {
        let handler = stubs + 16 * vector;
        let low =
            (handler & 0xffff) | (0x08 << 16) | (0x8e << 40) | (((handler >> 16) & 0xffff) << 48);
        let gate = (IDT + 16 * vector) as *mut u64;
        // SAFETY: 0x36000..0x36200 is RAM set aside for the IDT, identity-mapped
        // and writable at CPL 3; nothing else uses it.
        unsafe {
            gate.write_volatile(low);
            gate.add(1).write_volatile(handler >> 32);
        }
    }
}
