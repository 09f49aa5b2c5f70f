//! The contract between the daemon and a VM's monitor (`fastvm-vmm`): the
//! names of what the monitor keeps in its VM directory, its exit statuses,
//! and its control socket's requests and answers (one JSON object per line
//! each way): `{"op":"status"}`, `{"op":"pause"}`, `{"op":"resume"}`,
//! `{"op":"stop"}`, `{"op":"snapshot","name":"snap-1","resume":true}`
//! (written into the VM directory as `name`: no control op takes a host
//! path), `{"op":"firewall"}` (the NIC's policy and frame counters),
//! `{"op":"setFirewall","policy":{"mode":"restricted","ingress":[...]}}`
//! (replaces the policy at once). The monitor's arguments are its own
//! crate's `VmmArgs`, which the daemon builds (it links that crate).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::api::FirewallPolicy;

/// The control socket, in the VM directory.
pub const CONTROL_SOCKET: &str = "control.sock";
/// The console socket (serial output replayed, then live; input typed).
pub const CONSOLE_SOCKET: &str = "console.sock";
/// The host end of the guest's vsock (Firecracker's hybrid protocol).
pub const VSOCK_SOCKET: &str = "vsock.sock";
/// The lock a live monitor holds on its VM directory, holding its pid.
pub const LOCK_FILE: &str = "monitor.lock";
/// How the monitor ended, left in the VM directory as it exits.
pub const EXIT_RECORD: &str = "exit.json";

/// Exit status: stopped by the host.
pub const EXIT_STOPPED: i32 = 0;
/// Exit status: the monitor could not start or failed (bad input, KVM error).
pub const EXIT_ERROR: i32 = 1;
/// Exit status: the guest powered off.
pub const EXIT_POWER_OFF: i32 = 10;
/// Exit status: the guest rebooted (a microVM does not restart itself).
pub const EXIT_REBOOT: i32 = 11;
/// Exit status: the guest crashed.
pub const EXIT_CRASHED: i32 = 12;

/// A request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// Report state, vCPUs, memory and uptime.
    Status,
    /// Stop running guest code; devices keep their state.
    Pause,
    /// Continue after a pause.
    Resume,
    /// Stop the VM and end the monitor.
    Stop,
    /// Write a snapshot into the VM directory as `name` (a plain name that
    /// must not exist there yet; see [`check_snapshot_name`]), then resume
    /// unless `resume` is false (a VM paused before stays paused).
    Snapshot {
        name: String,
        #[serde(default = "resume_default")]
        resume: bool,
    },
    /// Report the NIC's ingress policy and frame counters.
    Firewall,
    /// Replace the NIC's ingress policy; frames from now on are judged by it.
    SetFirewall { policy: FirewallPolicy },
}

/// What `firewall` and `setFirewall` report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirewallInfo {
    pub policy: FirewallPolicy,
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// Frames from the host delivered to the guest.
    pub rx_passed: u64,
    /// Frames from the host the filter dropped.
    pub rx_dropped: u64,
    /// Frames the guest sent.
    pub tx_frames: u64,
    /// Connections the guest opened that the filter tracks now (their
    /// answers pass in `restricted` mode).
    #[serde(default)]
    pub flows_live: u64,
    /// Flows dropped to make room (the table holds at most 4,096).
    #[serde(default)]
    pub flows_evicted: u64,
    /// Frames that passed as answers to a flow.
    #[serde(default)]
    pub rx_replies: u64,
}

fn resume_default() -> bool {
    true
}

/// What a snapshot wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotInfo {
    pub dir: PathBuf,
    /// Wall time from pause to the directory in place, in microseconds.
    pub duration_us: u64,
    /// Time the vCPUs were paused for, in microseconds.
    pub paused_us: u64,
    /// Guest memory bytes written (zero pages are holes).
    pub memory_bytes: u64,
    /// Disk bytes allocated in the snapshot.
    pub disk_bytes: u64,
    /// "reflink" or "sparse copy".
    pub disk_copy: String,
}

/// The run state of the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunState {
    Running,
    Paused,
    Stopping,
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub state: RunState,
    pub vcpus: u8,
    pub memory_mib: u64,
    pub uptime_ms: u64,
    pub pid: u32,
    /// Warnings the guest caused so far, by kind
    /// (the monitor's `guest_warn`); each kind logs a line per second.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub guest_warnings: std::collections::BTreeMap<String, u64>,
    /// Work the monitor spent entering its jail, in microseconds: both
    /// steps and every thread's ids and seccomp filter, summed over
    /// threads (absent when it runs unconfined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail_us: Option<u64>,
}

/// The answer to one request: `{"ok":true,...}` or `{"ok":false,"error":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<FirewallInfo>,
}

impl Response {
    /// Success carrying the current status.
    pub fn ok(status: Status) -> Self {
        Response {
            ok: true,
            error: None,
            status: Some(status),
            snapshot: None,
            firewall: None,
        }
    }

    /// Failure with a message.
    pub fn error(message: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(message.into()),
            status: None,
            snapshot: None,
            firewall: None,
        }
    }
}

/// Longest snapshot name the control op takes.
pub const MAX_SNAPSHOT_NAME: usize = 64;

/// A snapshot name names a directory inside the VM directory and nothing
/// else: 1 to 64 ASCII letters, digits, `-` and `_`, not starting with `-`.
pub fn check_snapshot_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SNAPSHOT_NAME
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad snapshot name {:?}: 1 to {MAX_SNAPSHOT_NAME} letters, digits, '-' or '_' \
             (a directory inside the VM directory, never a path)",
            name.chars().take(80).collect::<String>()
        ))
    }
}
