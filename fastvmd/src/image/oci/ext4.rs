//! The file system step: a tree and its guest attributes ([`Tree`]) become
//! a sparse ext4 image with no privilege and no mount — `mkfs.ext4 -d`
//! copies the tree's contents, then one `debugfs -w` script sets what the
//! host tree does not carry: each entry's mode (set-id bits included),
//! owner and group, extended attributes, and device nodes and FIFOs in
//! place of their placeholders. `e2fsck -fn` then checks the result.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use super::ImportError;
use super::layers::{Kind, Meta, Tree};

/// The file type bits of `kind` in an inode's mode.
fn type_bits(kind: &Kind) -> u32 {
    match kind {
        Kind::File => 0o100000,
        Kind::Dir => 0o040000,
        Kind::Symlink => 0o120000,
        Kind::CharDevice { .. } => 0o020000,
        Kind::BlockDevice { .. } => 0o060000,
        Kind::Fifo => 0o010000,
    }
}

fn failed(step: &str) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        what: step.to_string(),
        source,
    }
}

/// A path as a debugfs argument: quoted; names debugfs cannot take (a
/// quote, a backslash or a control character in them) are refused.
fn quoted(path: &str) -> Result<String, ImportError> {
    if path
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return Err(ImportError::Malformed(format!(
            "the file name {path:?} cannot be written to the image (quote, backslash or control \
             character)"
        )));
    }
    Ok(format!("\"{path}\""))
}

/// The debugfs commands that give every entry its guest attributes;
/// extended attribute values are written under `values`.
fn script(tree: &Tree, values: &Path) -> Result<String, ImportError> {
    let mut out = String::new();
    for (n, (path, meta)) in tree.meta.iter().enumerate() {
        let q = quoted(path)?;
        let Meta {
            kind,
            mode,
            uid,
            gid,
            xattrs,
        } = meta;
        let node = match kind {
            Kind::CharDevice { major, minor } => Some(format!("c {major} {minor}")),
            Kind::BlockDevice { major, minor } => Some(format!("b {major} {minor}")),
            Kind::Fifo => Some("p".to_string()),
            _ => None,
        };
        if let Some(node) = node {
            // mknod takes a name in the current directory.
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
            let parent = if parent.is_empty() { "/" } else { parent };
            let _ = writeln!(out, "rm {q}");
            let _ = writeln!(out, "cd {}", quoted(parent)?);
            let _ = writeln!(out, "mknod {} {node}", quoted(name)?);
            let _ = writeln!(out, "cd /");
        }
        let _ = writeln!(out, "sif {q} mode 0{:o}", type_bits(kind) | (mode & 0o7777));
        let _ = writeln!(out, "sif {q} uid {uid}");
        let _ = writeln!(out, "sif {q} gid {gid}");
        for (i, (name, value)) in xattrs.iter().enumerate() {
            let file = values.join(format!("{n}-{i}"));
            fs::write(&file, value).map_err(failed("an extended attribute"))?;
            let _ = writeln!(
                out,
                "ea_set -f {} {q} {}",
                quoted(&file.display().to_string())?,
                quoted(name)?
            );
        }
    }
    Ok(out)
}

/// Runs `cmd`; its stderr when it fails.
fn run(cmd: &mut Command, what: &str) -> Result<String, ImportError> {
    let output = cmd.output().map_err(failed(what))?;
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    if !output.status.success() {
        return Err(ImportError::Malformed(format!(
            "{what} failed: {}",
            stderr.trim()
        )));
    }
    Ok(stderr)
}

/// Writes `tree` as a sparse ext4 image of `size` bytes at `out` (which
/// must not exist), using `scratch` (an empty private directory) for the
/// script and attribute values.
pub fn write(tree: &Tree, out: &Path, size: u64, scratch: &Path) -> Result<(), ImportError> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(failed("the image file"))?;
    file.set_len(size).map_err(failed("the image file"))?;
    drop(file);
    run(
        Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-L",
                "fastvm-root",
                "-E",
                "root_owner=0:0",
                "-d",
            ])
            .arg(tree.root())
            .arg(out),
        "mkfs.ext4",
    )?;
    let commands = scratch.join("attributes.debugfs");
    fs::write(&commands, script(tree, scratch)?).map_err(failed("the debugfs script"))?;
    let stderr = run(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&commands)
            .arg(out),
        "debugfs",
    )?;
    // debugfs answers 0 whatever its commands did: its stderr says more
    // than its version only when one failed.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !complaints.is_empty() {
        return Err(ImportError::Malformed(format!(
            "setting the files' attributes failed: {}",
            complaints.join("; ")
        )));
    }
    run(Command::new("e2fsck").arg("-fn").arg(out), "e2fsck")?;
    Ok(())
}
