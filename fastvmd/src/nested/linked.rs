//! Dynamically linked host programs carried into L1 (`nft`, iproute2's
//! `ip`): the shared libraries `ldd` names, with the dynamic loader, each
//! at the path it has on the host, so the program runs there unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{NestedError, run};

/// The libraries (and loader) `ldd` reports for `program`, as absolute
/// host paths. The kernel's vDSO has no file and is left out.
pub fn libraries(program: &Path) -> Result<Vec<PathBuf>, NestedError> {
    let out = run("ldd", Command::new("ldd").arg(program))?;
    let libs = parse_ldd(&String::from_utf8_lossy(&out));
    if libs.is_empty() {
        return Err(NestedError::step(
            "ldd",
            format!("{} names no libraries", program.display()),
        ));
    }
    Ok(libs)
}

/// The absolute paths in `ldd` output: `name => /path (addr)` and
/// `/path (addr)` lines. A library `ldd` could not find fails nothing
/// here; the program then fails to start in L1 and says which.
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => line,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_library_and_the_loader_but_not_the_vdso() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibmnl.so.0 => /lib/x86_64-linux-gnu/libmnl.so.0 (0x00007f71)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f70)\n\
                    \tlibgone.so.1 => not found\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f72)\n";
        let libs = parse_ldd(text);
        assert_eq!(
            libs,
            [
                "/lib/x86_64-linux-gnu/libmnl.so.0",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_real_program_needs_libc_and_the_loader() {
        let libs = match libraries(Path::new("/bin/sh")) {
            Ok(libs) => libs,
            Err(e) => {
                println!("SKIP: cannot run ldd on /bin/sh: {e}");
                return;
            }
        };
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        assert!(libs.iter().all(|l| l.is_file()), "{libs:?}");
    }
}
