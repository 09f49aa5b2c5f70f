//! A scripted stand-in for the monitors ([`Machines`]), for unit tests of
//! the service's failure paths: each call does what the test's [`Script`]
//! says and is noted in [`FakeMachines::calls`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fastvm_proto::agent::{ExecRequest, ExecResult};
use fastvm_proto::api::FirewallPolicy;
use futures_util::future::BoxFuture;

use crate::supervisor::{Machines, MonitorSpec, NicSpec, Readiness, SupervisorError};
use crate::vmm::control::SnapshotInfo;

/// What the fake does when called.
pub struct Script {
    /// Why `start` fails, or `None` to start.
    pub start_fails: Option<String>,
    /// What `wait_agent` finds.
    pub readiness: Readiness,
    /// Why `snapshot` fails, or `None` to write one.
    pub snapshot_fails: Option<String>,
    /// How many of the next `set_firewall` calls fail.
    pub firewall_failures: usize,
    /// What `exec` answers: its output after `exec_takes`, or, past the
    /// request's timeout, a timed-out result.
    pub exec_takes: Duration,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            start_fails: None,
            readiness: Readiness::Ready,
            snapshot_fails: None,
            firewall_failures: 0,
            exec_takes: Duration::ZERO,
        }
    }
}

/// Holds a call (about VM `vm`, or any) until the test lets it go:
/// `entered` hears of each call held (with its VM id), `release` lets one
/// finish. Calls about other VMs pass.
pub struct Gate {
    pub vm: Option<String>,
    pub entered: Sender<String>,
    pub release: Mutex<Receiver<()>>,
}

impl Gate {
    /// A gate for calls about `vm` (any VM with `None`), and the test's
    /// ends of it: where held calls are announced, and what releases one.
    pub fn new(vm: Option<&str>) -> (Arc<Gate>, Receiver<String>, Sender<()>) {
        let (entered, announced) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel();
        let gate = Gate {
            vm: vm.map(str::to_string),
            entered,
            release: Mutex::new(released),
        };
        (Arc::new(gate), announced, release)
    }
}

/// The fake monitors of one service.
pub struct FakeMachines {
    vms_dir: PathBuf,
    pub script: Mutex<Script>,
    /// Holds `start`.
    pub start_gate: Mutex<Option<Arc<Gate>>>,
    /// Holds `set_firewall`.
    pub firewall_gate: Mutex<Option<Arc<Gate>>>,
    alive: Mutex<HashSet<String>>,
    calls: Mutex<Vec<String>>,
    /// The disk image each booted VM's disk was copied from.
    pub base_disks: Mutex<Vec<Option<PathBuf>>>,
    /// The last exec request, as the agent would get it.
    pub last_exec: Mutex<Option<ExecRequest>>,
}

impl FakeMachines {
    /// Fake monitors whose VM directories would be under `vms_dir`.
    pub fn new(vms_dir: &Path, script: Script) -> FakeMachines {
        FakeMachines {
            vms_dir: vms_dir.to_path_buf(),
            script: Mutex::new(script),
            start_gate: Mutex::new(None),
            firewall_gate: Mutex::new(None),
            alive: Mutex::new(HashSet::new()),
            calls: Mutex::new(Vec::new()),
            base_disks: Mutex::new(Vec::new()),
            last_exec: Mutex::new(None),
        }
    }

    /// Every call so far, as `"<method> <vm id>[ <detail>]"`.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn note(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn script<T>(&self, f: impl FnOnce(&mut Script) -> T) -> T {
        f(&mut self.script.lock().unwrap())
    }
}

/// Waits at `gate`, if one is set for VM `id`, until the test releases
/// this call.
fn pass(gate: &Mutex<Option<Arc<Gate>>>, id: &str) {
    let gate = gate.lock().unwrap().clone();
    if let Some(gate) = gate
        && gate.vm.as_deref().is_none_or(|vm| vm == id)
    {
        let _ = gate.entered.send(id.to_string());
        let _ = gate.release.lock().unwrap().recv();
    }
}

impl Machines for FakeMachines {
    fn vms_dir(&self) -> &Path {
        &self.vms_dir
    }

    fn vm_dir(&self, id: &str) -> PathBuf {
        self.vms_dir.join(id)
    }

    fn cgroups_unavailable(&self) -> Option<&str> {
        Some("fake monitors")
    }

    fn start(&self, spec: &MonitorSpec) -> Result<u32, SupervisorError> {
        self.note(format!("start {}", spec.id));
        if let crate::supervisor::MonitorSource::Boot { base_disk, .. } = &spec.source {
            self.base_disks.lock().unwrap().push(base_disk.clone());
        }
        pass(&self.start_gate, &spec.id);
        if let Some(why) = self.script(|s| s.start_fails.clone()) {
            return Err(SupervisorError::StartFailed(why));
        }
        self.alive.lock().unwrap().insert(spec.id.clone());
        Ok(4242)
    }

    fn destroy(&self, id: &str) -> Result<(), SupervisorError> {
        self.note(format!("destroy {id}"));
        self.alive.lock().unwrap().remove(id);
        Ok(())
    }

    fn is_alive(&self, id: &str) -> bool {
        self.alive.lock().unwrap().contains(id)
    }

    fn release(&self, id: &str) -> bool {
        self.note(format!("release {id}"));
        true
    }

    fn monitor_pid(&self, id: &str) -> Option<u32> {
        self.is_alive(id).then_some(4242)
    }

    fn snapshot(&self, id: &str, dir: &Path) -> Result<SnapshotInfo, SupervisorError> {
        self.note(format!("snapshot {id}"));
        if let Some(why) = self.script(|s| s.snapshot_fails.clone()) {
            return Err(SupervisorError::StartFailed(why));
        }
        std::fs::create_dir_all(dir).map_err(|e| SupervisorError::Prepare {
            path: dir.display().to_string(),
            source: e,
        })?;
        Ok(SnapshotInfo {
            dir: dir.to_path_buf(),
            duration_us: 0,
            paused_us: 0,
            memory_bytes: 0,
            disk_bytes: 0,
            disk_copy: "none".into(),
        })
    }

    fn set_firewall(&self, id: &str, policy: &FirewallPolicy) -> Result<bool, SupervisorError> {
        let rules = policy.ingress.len();
        self.note(format!("set_firewall {id} {rules} rules"));
        pass(&self.firewall_gate, id);
        let fails = self.script(|s| {
            let fails = s.firewall_failures > 0;
            s.firewall_failures = s.firewall_failures.saturating_sub(1);
            fails
        });
        if fails {
            return Err(SupervisorError::StartFailed(
                "the monitor refused it".into(),
            ));
        }
        Ok(true)
    }

    fn wait_agent<'a>(
        &'a self,
        id: &'a str,
        wait: Duration,
        _nic: Option<&'a NicSpec>,
    ) -> BoxFuture<'a, Readiness> {
        self.note(format!("wait_agent {id}"));
        let readiness = self.script(|s| s.readiness.clone());
        Box::pin(async move {
            // An agent that never answers is waited for, at a hundredth of
            // the time: the create's own wait ends well before the one
            // that follows in the background.
            if matches!(readiness, Readiness::NotReady(_)) {
                tokio::time::sleep(wait / 100).await;
            }
            readiness
        })
    }

    fn exec<'a>(
        &'a self,
        id: &'a str,
        request: &'a ExecRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecResult, SupervisorError>> {
        self.note(format!("exec {id} {}", request.argv.join(" ")));
        *self.last_exec.lock().unwrap() = Some(request.clone());
        let takes = self.script(|s| s.exec_takes);
        Box::pin(async move {
            tokio::time::sleep(takes.min(timeout)).await;
            if takes > timeout {
                return Ok(crate::agent::timed_out(timeout));
            }
            Ok(ExecResult {
                stdout: format!("{}\n", request.argv.join(" ")),
                duration_ms: takes.as_millis() as u64,
                ..ExecResult::default()
            })
        })
    }

    fn open_stream<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<crate::agent_stream::AgentStream, SupervisorError>> {
        self.note(format!("open stream {id}"));
        Box::pin(async move { Err(SupervisorError::Agent(crate::agent::AgentError::TooOld(1))) })
    }
}
