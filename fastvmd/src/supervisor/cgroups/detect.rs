//! Where VM cgroups can go: read from `/proc/self/mountinfo` (which
//! hierarchies are mounted where) and `/proc/self/cgroup` (the daemon's own
//! place in each), then prepared (the `fastvm` parent made, v2 controllers
//! enabled).

use std::fs;
use std::path::{Path, PathBuf};

use super::{Cgroups, v2};

/// The controllers VM limits need.
pub const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
/// The directory VM cgroups go in, under the daemon's own cgroup, one
/// subdirectory per data directory (daemons side by side never touch each
/// other's VMs).
pub const PARENT: &str = "fastvm";

/// A mounted cgroup hierarchy: where, v2 or not, and its v1 controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub point: PathBuf,
    pub v2: bool,
    pub controllers: Vec<String>,
}

/// cgroup mounts in a mountinfo text.
pub fn mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let point = before.split(' ').nth(4)?;
            let mut after = after.split(' ');
            let fstype = after.next()?;
            let options = after.nth(1).unwrap_or("");
            match fstype {
                "cgroup2" => Some(Mount {
                    point: point.into(),
                    v2: true,
                    controllers: Vec::new(),
                }),
                "cgroup" => Some(Mount {
                    point: point.into(),
                    v2: false,
                    controllers: options.split(',').map(str::to_string).collect(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// The process's cgroup path for v1 `controller`, or for v2 (`None`).
pub fn own_path(proc_cgroup: &str, controller: Option<&str>) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, list, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = match controller {
            None => id == "0" && list.is_empty(),
            Some(c) => list.split(',').any(|l| l == c),
        };
        hit.then(|| path.to_string())
    })
}

fn under(mount: &Path, own: &str) -> PathBuf {
    mount.join(own.trim_start_matches('/'))
}

pub fn detect(scope: &str) -> Cgroups {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let proc_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mounts = mounts(&mountinfo);
    let v1 = |controller: &str| -> Result<PathBuf, String> {
        let mount = mounts
            .iter()
            .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
            .ok_or_else(|| format!("no cgroup v1 {controller} hierarchy"))?;
        let own = own_path(&proc_cgroup, Some(controller))
            .ok_or_else(|| format!("not in a {controller} cgroup"))?;
        let parent = under(&mount.point, &own).join(PARENT).join(scope);
        fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        Ok(parent)
    };
    let all_v1 = CONTROLLERS.iter().all(|c| {
        mounts
            .iter()
            .any(|m| !m.v2 && m.controllers.iter().any(|x| x == c))
    });
    if all_v1 {
        return match (v1("memory"), v1("pids"), v1("cpu")) {
            (Ok(memory), Ok(pids), Ok(cpu)) => Cgroups::V1 { memory, pids, cpu },
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Cgroups::Off(e),
        };
    }
    let Some(unified) = mounts.iter().find(|m| m.v2) else {
        return Cgroups::Off("no cgroup file system mounted".into());
    };
    let Some(own) = own_path(&proc_cgroup, None) else {
        return Cgroups::Off("not in a cgroup v2 group".into());
    };
    match v2::prepare(&under(&unified.point, &own), scope) {
        Ok(parent) => Cgroups::V2 { parent },
        Err(e) => Cgroups::Off(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn reads_mounts_and_own_paths() {
        let found = mounts(MOUNTINFO);
        assert_eq!(found.len(), 4);
        assert!(found[3].v2);
        assert_eq!(found[1].controllers, vec!["rw", "memory"]);
        let own = "4:memory:/svc/a\n8:pids:/\n1:cpu,cpuacct:/x\n0::/user.slice\n";
        assert_eq!(own_path(own, Some("memory")).as_deref(), Some("/svc/a"));
        assert_eq!(own_path(own, Some("cpu")).as_deref(), Some("/x"));
        assert_eq!(own_path(own, None).as_deref(), Some("/user.slice"));
        assert_eq!(own_path(own, Some("blkio")), None);
        assert_eq!(
            under(Path::new("/sys/fs/cgroup/memory"), "/svc/a"),
            Path::new("/sys/fs/cgroup/memory/svc/a")
        );
    }
}
