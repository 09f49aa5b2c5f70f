//! cgroup v2 needs the controllers enabled in every parent's
//! `cgroup.subtree_control`, and a group with processes in it cannot enable
//! them for its children: a daemon whose own group is not the root moves
//! itself into a leaf (`fastvmd`) beside the VMs' `fastvm` first, as a
//! service given its own subtree does.

use std::fs;
use std::path::{Path, PathBuf};

use super::detect::{CONTROLLERS, PARENT};

/// Prepares `own/fastvm/scope` for VM groups; returns it.
pub fn prepare(own: &Path, scope: &str) -> Result<PathBuf, String> {
    let available = fs::read_to_string(own.join("cgroup.controllers"))
        .map_err(|e| format!("{}: {e}", own.display()))?;
    let missing: Vec<&str> = CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !available.split_whitespace().any(|a| a == *c))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "cgroup v2 controllers {missing:?} are not available in {}",
            own.display()
        ));
    }
    let enable = CONTROLLERS.map(|c| format!("+{c}")).join(" ");
    if fs::write(own.join("cgroup.subtree_control"), &enable).is_err() {
        // Processes in `own` (this daemon) block it: move out of the way.
        let leaf = own.join("fastvmd");
        fs::create_dir_all(&leaf).map_err(|e| format!("{}: {e}", leaf.display()))?;
        fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())
            .map_err(|e| format!("cannot move into {}: {e}", leaf.display()))?;
        fs::write(own.join("cgroup.subtree_control"), &enable)
            .map_err(|e| format!("{}/cgroup.subtree_control: {e}", own.display()))?;
    }
    let mut parent = own.to_path_buf();
    for level in [PARENT, scope] {
        parent.push(level);
        fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        fs::write(parent.join("cgroup.subtree_control"), &enable)
            .map_err(|e| format!("{}/cgroup.subtree_control: {e}", parent.display()))?;
    }
    Ok(parent)
}
