//! Cache keys: the SHA-256 of everything that goes into an artefact, so a
//! changed input makes a new cache entry and an unchanged one is reused.

use sha2::{Digest, Sha256};

/// Version of the kernel recipe; bump it when the steps change in a way
/// that changes the kernel.
pub const KERNEL_RECIPE_VERSION: u32 = 1;
/// Version of the root filesystem recipe (layout, `/etc`, mkfs options).
pub const ROOTFS_RECIPE_VERSION: u32 = 2;
/// Hex digits of the hash used in directory names.
const KEY_LEN: usize = 16;

/// The kernel fragment kept in the project.
pub const KERNEL_FRAGMENT: &str = include_str!("kernel.config");

/// Hashes labelled parts (label and length included, so parts cannot run
/// into each other) into a short hex key.
pub fn hash_parts(parts: &[(&str, &[u8])]) -> String {
    let mut h = Sha256::new();
    for (label, bytes) in parts {
        h.update((label.len() as u64).to_le_bytes());
        h.update(label.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let digest = h.finalize();
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..KEY_LEN]
        .to_string()
}

/// Key of the kernel: recipe, source package and version, config fragment.
pub fn kernel_key(source_package: &str, source_version: &str, fragment: &str) -> String {
    hash_parts(&[
        ("recipe", &KERNEL_RECIPE_VERSION.to_le_bytes()),
        ("source-package", source_package.as_bytes()),
        ("source-version", source_version.as_bytes()),
        ("fragment", fragment.as_bytes()),
    ])
}

/// Key of the root filesystem: recipe, busybox version, agent binary, size.
pub fn rootfs_key(busybox_version: &str, agent_binary: &[u8], size_gib: u64) -> String {
    let agent = Sha256::digest(agent_binary);
    hash_parts(&[
        ("recipe", &ROOTFS_RECIPE_VERSION.to_le_bytes()),
        ("busybox-version", busybox_version.as_bytes()),
        ("agent-sha256", agent.as_slice()),
        ("size-gib", &size_gib.to_le_bytes()),
    ])
}

/// Key of an image: its kernel and root filesystem.
pub fn image_key(kernel_key: &str, rootfs_key: &str) -> String {
    hash_parts(&[
        ("kernel", kernel_key.as_bytes()),
        ("rootfs", rootfs_key.as_bytes()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_change_with_every_input_and_only_then() {
        let base = kernel_key("linux-source-6.1", "6.1.1-1", "CONFIG_A=y\n");
        assert_eq!(base.len(), KEY_LEN);
        assert_eq!(
            base,
            kernel_key("linux-source-6.1", "6.1.1-1", "CONFIG_A=y\n")
        );
        assert_ne!(
            base,
            kernel_key("linux-source-6.1", "6.1.1-2", "CONFIG_A=y\n")
        );
        assert_ne!(
            base,
            kernel_key("linux-source-6.1", "6.1.1-1", "CONFIG_B=y\n")
        );
        assert_ne!(
            base,
            kernel_key("linux-source-6.2", "6.1.1-1", "CONFIG_A=y\n")
        );
        let r = rootfs_key("1.35", b"agent", 10);
        assert_ne!(r, rootfs_key("1.36", b"agent", 10));
        assert_ne!(r, rootfs_key("1.35", b"agent2", 10));
        assert_ne!(r, rootfs_key("1.35", b"agent", 11));
        assert_ne!(image_key(&base, &r), image_key(&r, &base));
    }

    #[test]
    fn labelled_parts_cannot_run_into_each_other() {
        assert_ne!(
            hash_parts(&[("a", b"bc"), ("d", b"")]),
            hash_parts(&[("a", b"b"), ("d", b"c")])
        );
    }
}
