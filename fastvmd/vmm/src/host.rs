//! What kind of KVM host this is, and what it can run.
//!
//! - hardware KVM (VMX or SVM): every guest, the Linux image included;
//! - PVM (KVM without VMX/SVM, `kvm_pvm` module): guest CPL 3 code runs at
//!   native speed but CPL 0 is emulated and cannot run a stock Linux kernel,
//!   so only the test guest runs;
//! - no usable `/dev/kvm`: no VM at all.

use std::fs;
use std::path::Path;

/// The host's virtualisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    /// KVM on VMX or SVM.
    Hardware,
    /// KVM through PVM (nested, no VMX/SVM).
    Pvm,
    /// `/dev/kvm` missing or not usable; the reason says why.
    NoKvm(String),
}

impl HostKind {
    /// Whether the freestanding test guest can run.
    pub fn can_run_test_guest(&self) -> bool {
        !matches!(self, HostKind::NoKvm(_))
    }

    /// Whether a stock Linux guest kernel can boot.
    pub fn can_boot_linux(&self) -> bool {
        matches!(self, HostKind::Hardware)
    }

    /// One line saying what the host is and what it can run.
    pub fn describe(&self) -> String {
        match self {
            HostKind::Hardware => "hardware KVM: runs Linux guests and the test guest".into(),
            HostKind::Pvm => "PVM (KVM without VMX/SVM): runs the test guest; cannot boot a Linux \
                 guest kernel (guest CPL 0 is emulated)"
                .into(),
            HostKind::NoKvm(why) => format!("no usable KVM ({why}): cannot run VMs"),
        }
    }
}

/// Looks at `/dev/kvm`, the loaded modules and the CPU flags.
pub fn detect() -> HostKind {
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return HostKind::NoKvm(format!("/dev/kvm: {e}"));
    }
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    classify(Path::new("/sys/module/kvm_pvm").exists(), &cpuinfo)
}

fn classify(pvm_loaded: bool, cpuinfo: &str) -> HostKind {
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if pvm_loaded || !hw {
        HostKind::Pvm
    } else {
        HostKind::Hardware
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_module_and_flags() {
        assert_eq!(
            classify(false, "flags\t: fpu vmx sse\n"),
            HostKind::Hardware
        );
        assert_eq!(classify(false, "flags\t: fpu svm\n"), HostKind::Hardware);
        assert_eq!(classify(true, "flags\t: fpu vmx\n"), HostKind::Pvm);
        assert_eq!(classify(false, "flags\t: fpu hypervisor\n"), HostKind::Pvm);
        assert!(!HostKind::Pvm.can_boot_linux());
        assert!(HostKind::Pvm.can_run_test_guest());
        assert!(!HostKind::NoKvm("x".into()).can_run_test_guest());
    }
}
