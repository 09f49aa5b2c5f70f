//! `manifest.json`: what a snapshot is, where it may be restored, and the
//! size of every file in it (so truncation is caught by a `stat`, without
//! reading or hashing guest memory).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::SnapshotError;

/// The manifest format version this build writes and reads.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// The content of `manifest.json` (camelCase JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// [`MANIFEST_FORMAT_VERSION`] when written; anything else is refused.
    pub format_version: u32,
    /// When the snapshot was taken (milliseconds since the Unix epoch).
    pub created_unix_ms: u64,
    /// [`cpu_fingerprint`] of the host that took it; must match on restore.
    pub cpu_fingerprint: String,
    /// Guest RAM size in MiB.
    pub memory_mib: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Kernel command line the VM booted with (informative).
    pub cmdline: String,
    /// Kernel the VM booted from (informative, not used on restore).
    pub kernel: String,
    /// File name in the snapshot directory -> size in bytes (the logical
    /// size for the sparse `memory` and `disk`). Filled by
    /// [`super::SnapshotWriter::commit`].
    pub files: BTreeMap<String, u64>,
}

impl Manifest {
    /// A manifest for a snapshot taken now on this host, with no files yet.
    pub fn for_host(memory_mib: u64, vcpus: u32, cmdline: &str, kernel: &str) -> Self {
        let created_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            created_unix_ms,
            cpu_fingerprint: cpu_fingerprint(),
            memory_mib,
            vcpus,
            cmdline: cmdline.to_owned(),
            kernel: kernel.to_owned(),
            files: BTreeMap::new(),
        }
    }

    /// Parses a manifest (JSON text read from `path`, named in errors) and
    /// checks its format version.
    pub fn parse(path: &Path, text: &[u8]) -> Result<Self, SnapshotError> {
        let manifest: Manifest =
            serde_json::from_slice(text).map_err(|e| SnapshotError::ManifestParse {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        if manifest.format_version != MANIFEST_FORMAT_VERSION {
            return Err(SnapshotError::ManifestVersion {
                found: manifest.format_version,
                supported: MANIFEST_FORMAT_VERSION,
            });
        }
        Ok(manifest)
    }

    /// The manifest as pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a manifest always serializes");
        out.push(b'\n');
        out
    }
}

/// This host's CPU identity, as far as restoring vCPU state cares:
/// `"<vendor>-<family>-<model>-<stepping>-<hash>"`, e.g.
/// `"GenuineIntel-6-85-7-3f1c0a2b9d4e5f60"`.
///
/// * vendor: CPUID leaf 0 (EBX, EDX, ECX);
/// * family/model/stepping: CPUID leaf 1 EAX, with the extended family and
///   model folded in as the SDM/APM describe (decimal);
/// * hash: 64-bit FNV-1a (hex) over the feature registers KVM exposes and
///   saved state depends on: leaf 1 ECX/EDX, leaf 7 subleaf 0 EBX/ECX/EDX,
///   leaf 0xd subleaf 0 EAX/ECX/EDX (XSAVE features and area size) and leaf
///   0x80000001 ECX/EDX. Leaf 1 EBX (APIC id, varies per core) and leaf
///   0xd EBX (depends on the current XCR0) are left out so every core of a
///   host gives the same answer.
///
/// On non-x86_64 builds this is `"unknown"`.
pub fn cpu_fingerprint() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        x86::fingerprint()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "unknown".to_owned()
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{__cpuid_count, CpuidResult};

    #[allow(unused_unsafe)]
    fn cpuid(leaf: u32, sub: u32) -> CpuidResult {
        // SAFETY: CPUID is available on every x86_64 CPU and has no side
        // effects; unknown leaves just return zeros or the highest leaf.
        unsafe { __cpuid_count(leaf, sub) }
    }

    fn fnv1a(hash: &mut u64, word: u32) {
        for b in word.to_le_bytes() {
            *hash ^= u64::from(b);
            *hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub(super) fn fingerprint() -> String {
        let l0 = cpuid(0, 0);
        let max = l0.eax;
        let mut vendor = Vec::with_capacity(12);
        for r in [l0.ebx, l0.edx, l0.ecx] {
            vendor.extend_from_slice(&r.to_le_bytes());
        }
        let vendor: String = String::from_utf8_lossy(&vendor)
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();

        let l1 = cpuid(1, 0);
        let base_family = (l1.eax >> 8) & 0xf;
        let ext_family = (l1.eax >> 20) & 0xff;
        let base_model = (l1.eax >> 4) & 0xf;
        let ext_model = (l1.eax >> 16) & 0xf;
        let stepping = l1.eax & 0xf;
        let family = if base_family == 0xf {
            base_family + ext_family
        } else {
            base_family
        };
        let model = if base_family == 0x6 || base_family == 0xf {
            (ext_model << 4) | base_model
        } else {
            base_model
        };

        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for r in [l1.ecx, l1.edx] {
            fnv1a(&mut hash, r);
        }
        let l7 = if max >= 7 { cpuid(7, 0) } else { cpuid_zero() };
        for r in [l7.ebx, l7.ecx, l7.edx] {
            fnv1a(&mut hash, r);
        }
        let ld = if max >= 0xd {
            cpuid(0xd, 0)
        } else {
            cpuid_zero()
        };
        for r in [ld.eax, ld.ecx, ld.edx] {
            fnv1a(&mut hash, r);
        }
        let ext_max = cpuid(0x8000_0000, 0).eax;
        let le = if ext_max >= 0x8000_0001 {
            cpuid(0x8000_0001, 0)
        } else {
            cpuid_zero()
        };
        for r in [le.ecx, le.edx] {
            fnv1a(&mut hash, r);
        }
        format!("{vendor}-{family}-{model}-{stepping}-{hash:016x}")
    }

    fn cpuid_zero() -> CpuidResult {
        CpuidResult {
            eax: 0,
            ebx: 0,
            ecx: 0,
            edx: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_shaped() {
        let a = cpu_fingerprint();
        assert_eq!(a, cpu_fingerprint());
        // Same on every core we may be scheduled on.
        let b = std::thread::spawn(cpu_fingerprint).join().unwrap();
        assert_eq!(a, b);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(a.split('-').count(), 5, "{a}");
        println!("cpu fingerprint: {a}");
    }

    #[test]
    fn json_round_trip_is_camel_case() {
        let mut m = Manifest::for_host(2048, 2, "console=ttyS0", "/boot/vmlinux");
        m.files.insert("memory".into(), 2 << 30);
        let json = m.to_json();
        let text = std::str::from_utf8(&json).unwrap();
        for key in [
            "formatVersion",
            "createdUnixMs",
            "cpuFingerprint",
            "memoryMib",
        ] {
            assert!(text.contains(key), "{text}");
        }
        assert_eq!(Manifest::parse(Path::new("m"), &json).unwrap(), m);
    }

    #[test]
    fn parse_refusals() {
        let p = Path::new("manifest.json");
        assert!(matches!(
            Manifest::parse(p, b"{not json"),
            Err(SnapshotError::ManifestParse { .. })
        ));
        let mut m = Manifest::for_host(1, 1, "", "");
        m.format_version = 9;
        let err = Manifest::parse(p, &m.to_json()).unwrap_err();
        assert!(
            matches!(
                err,
                SnapshotError::ManifestVersion {
                    found: 9,
                    supported: 1
                }
            ),
            "{err}"
        );
    }
}
