//! The serde types, one per schema in `openapi.yaml`, with the spec's JSON names.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// [`present`] for a size: an integer past what a u64 holds is still a
/// (very large) size, so it is taken as `u64::MAX` and refused by the
/// quota like any other size too large, rather than by the JSON decoder.
fn present_size<'de, D>(d: D) -> Result<Option<u64>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Exact(u64),
        Huge(f64),
    }
    match Size::deserialize(d)? {
        Size::Exact(n) => Ok(Some(n)),
        Size::Huge(f) if f >= 0.0 && f.fract() == 0.0 => Ok(Some(u64::MAX)),
        Size::Huge(_) => Err(serde::de::Error::custom(
            "a size must be a whole number of GiB, at least 0",
        )),
    }
}

/// A field that may be absent but, when present, holds a value: the
/// contract marks none of the request fields nullable, so `null` is as
/// wrong there as any other value of the wrong type.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}
use uuid::Uuid;

use crate::agent::ExecResult;

/// Smallest disk a VM may have, and the disk of every machine type, in GiB.
pub const DEFAULT_DISK_GIB: u64 = 10;

/// Defines a string enum with `as_str`, `ALL`, `Display` and `FromStr`, whose
/// serde names are the given strings.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $s:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $s)] $variant,)+
        }

        impl $name {
            /// Every value, in the spec's order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The JSON (and spec) spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $s,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(UnknownVariant { kind: stringify!($name), value: s.into() }),
                }
            }
        }
    };
}

/// A string that names no value of a string enum (from `FromStr`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind}: {value:?}")]
pub struct UnknownVariant {
    /// The enum's Rust name, e.g. `VmStatus`.
    pub kind: &'static str,
    /// The string that did not match.
    pub value: String,
}

/// `ErrorResponse`: the body of every non-2xx answer, over HTTP and the socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// Human-readable message.
    pub error: String,
}

impl ErrorResponse {
    /// An error body carrying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        ErrorResponse {
            error: message.into(),
        }
    }
}

string_enum! {
    /// `VMStatus`: `provisioning -> running -> (stopped | error) -> deleting -> gone`.
    VmStatus {
        /// The monitor is starting or the VM is queued for capacity.
        Provisioning = "provisioning",
        /// The guest agent answered; exec and console work.
        Running = "running",
        /// The VM is not running and can be deleted.
        Stopped = "stopped",
        /// Delete in progress.
        Deleting = "deleting",
        /// Its monitor died or failed to start.
        Error = "error",
    }
}

string_enum! {
    /// `SnapshotStatus`.
    SnapshotStatus {
        /// Being written.
        Creating = "creating",
        /// Usable as a `snapshotId` in `createVM`.
        Ready = "ready",
        /// Writing failed.
        Error = "error",
    }
}

string_enum! {
    /// `MachineType`: `cXmY` = X vCPUs and Y GiB of memory; every type has a
    /// [`DEFAULT_DISK_GIB`] disk unless `diskGiB` asks for more.
    MachineType {
        /// 1 vCPU, 2048 MiB.
        C1m2 = "c1m2",
        /// 2 vCPUs, 4096 MiB.
        C2m4 = "c2m4",
        /// 4 vCPUs, 8192 MiB.
        C4m8 = "c4m8",
        /// 8 vCPUs, 16384 MiB.
        C8m16 = "c8m16",
    }
}

impl MachineType {
    /// Number of vCPUs.
    pub const fn vcpus(self) -> u32 {
        match self {
            MachineType::C1m2 => 1,
            MachineType::C2m4 => 2,
            MachineType::C4m8 => 4,
            MachineType::C8m16 => 8,
        }
    }

    /// Guest memory in MiB (2048 per vCPU).
    pub const fn memory_mib(self) -> u64 {
        self.vcpus() as u64 * 2048
    }

    /// Disk size in GiB when the request gives no `diskGiB`.
    pub const fn default_disk_gib(self) -> u64 {
        DEFAULT_DISK_GIB
    }
}

string_enum! {
    /// `FirewallRule.protocol`.
    FirewallProtocol {
        /// TCP.
        Tcp = "tcp",
        /// UDP.
        Udp = "udp",
    }
}

string_enum! {
    /// `FirewallPolicy.mode`.
    FirewallMode {
        /// All public IPv6 ingress is allowed; `ingress` is ignored.
        Open = "open",
        /// Only traffic matching an `ingress` rule (plus essential ICMPv6) is allowed.
        Restricted = "restricted",
    }
}

/// `FirewallRule`: one allow rule for public IPv6 ingress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallRule {
    /// Transport protocol.
    pub protocol: FirewallProtocol,
    /// First allowed port, 1..=65535.
    #[serde(rename = "portStart")]
    pub port_start: u32,
    /// Last allowed port (inclusive), 1..=65535 and >= `portStart`; `portStart` when absent.
    #[serde(
        rename = "portEnd",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub port_end: Option<u32>,
    /// Allowed IPv6 sources (CIDR, or a bare address meaning /128). Absent or
    /// empty means `::/0`.
    #[serde(
        rename = "sourceCidrs",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_cidrs: Option<Vec<String>>,
    /// Free text, at most 256 characters.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub description: Option<String>,
}

impl FirewallRule {
    /// The inclusive port range; call after validation (ports are then in `u16`).
    pub fn port_range(&self) -> (u32, u32) {
        (self.port_start, self.port_end.unwrap_or(self.port_start))
    }
}

/// `FirewallPolicy`: public IPv6 ingress policy of a VM or snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallPolicy {
    /// `open` or `restricted`.
    pub mode: FirewallMode,
    /// Allow rules, used only when `mode` is `restricted`. Always serialized;
    /// absent reads as empty.
    #[serde(default)]
    pub ingress: Vec<FirewallRule>,
}

impl Default for FirewallPolicy {
    /// `restricted` with no rules: every public port closed.
    fn default() -> Self {
        FirewallPolicy {
            mode: FirewallMode::Restricted,
            ingress: Vec::new(),
        }
    }
}

/// `PatchVMFirewallRequest`: each field present replaces the policy's field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchVmFirewallRequest {
    /// New mode, if given.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub mode: Option<FirewallMode>,
    /// New rule list (replaces the whole list), if given.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub ingress: Option<Vec<FirewallRule>>,
}

impl PatchVmFirewallRequest {
    /// The policy after this patch: given fields replace, absent ones are kept.
    pub fn apply_to(&self, current: &FirewallPolicy) -> FirewallPolicy {
        FirewallPolicy {
            mode: self.mode.unwrap_or(current.mode),
            ingress: self
                .ingress
                .clone()
                .unwrap_or_else(|| current.ingress.clone()),
        }
    }
}

/// `VMInstance`: a VM as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInstance {
    /// VM id.
    pub id: Uuid,
    /// Display name, at most 64 characters.
    pub name: String,
    /// Owning organization.
    #[serde(rename = "orgId")]
    pub org_id: String,
    /// Machine type name (e.g. `c1m2`), also for VMs restored from a snapshot.
    #[serde(rename = "machineName")]
    pub machine_name: String,
    /// What the VM was made from (e.g. the base image or the snapshot's name).
    #[serde(
        rename = "sourceName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_name: Option<String>,
    /// Public IPv6 ingress policy; always present in our answers.
    #[serde(default)]
    pub firewall: FirewallPolicy,
    /// vCPUs.
    pub cpu: u32,
    /// Memory in MiB.
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
    /// Disk in GiB.
    #[serde(rename = "diskGiB")]
    pub disk_gib: u64,
    /// Public IPv6 address, when the VM has a NIC.
    #[serde(
        rename = "publicIpv6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub public_ipv6: Option<String>,
    /// Lifecycle state.
    pub status: VmStatus,
    /// RFC 3339 creation time.
    #[serde(rename = "createdAt")]
    pub created_at: String,
    /// RFC 3339 deletion time; `null` while the VM exists.
    #[serde(rename = "deletedAt", default)]
    pub deleted_at: Option<String>,
}

/// `SnapshotObject`: a snapshot as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotObject {
    /// Snapshot id.
    pub id: Uuid,
    /// Display name, at most 64 characters.
    pub name: String,
    /// Owning organization.
    #[serde(rename = "orgId")]
    pub org_id: String,
    /// The VM it was taken from.
    #[serde(rename = "vmId")]
    pub vm_id: Uuid,
    /// The source VM's firewall policy at snapshot time; always present in our answers.
    #[serde(default)]
    pub firewall: FirewallPolicy,
    /// Lifecycle state.
    pub status: SnapshotStatus,
    /// RFC 3339 creation time.
    #[serde(rename = "createdAt")]
    pub created_at: String,
}

/// `CreateVMRequest`: exactly one of `machineType` and `snapshotId`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateVmRequest {
    /// Display name; the daemon picks one when absent.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<String>,
    /// Boot the base image on this machine type.
    #[serde(
        rename = "machineType",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub machine_type: Option<MachineType>,
    /// Restore this snapshot.
    #[serde(
        rename = "snapshotId",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub snapshot_id: Option<Uuid>,
    /// Grow-only disk size in GiB: >= 10, and >= the snapshot's disk (see [`crate::api::check_disk_grow`]).
    #[serde(
        rename = "diskGiB",
        default,
        deserialize_with = "present_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub disk_gib: Option<u64>,
    /// Ingress policy; absent = the snapshot's policy, or the default for a new machine.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub firewall: Option<FirewallPolicy>,
    /// A named image to boot (`fastvmd image ls`) instead of the default
    /// one, with `machineType`. Not in the OpenAPI contract: an extension
    /// that clients which do not know it never send.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub image: Option<String>,
}

/// `CreateSnapshotRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSnapshotRequest {
    /// The VM to snapshot.
    #[serde(rename = "vmId")]
    pub vm_id: Uuid,
    /// Display name; the daemon picks one when absent.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<String>,
}

/// `UpdateVMRequest`: rename a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateVmRequest {
    /// New name, at most 64 characters.
    pub name: String,
}

/// `UpdateSnapshotRequest`: rename a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSnapshotRequest {
    /// New name, at most 64 characters.
    pub name: String,
}

/// `ExecVMRequest`: run one command (argv, no shell) in a running VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecVmRequest {
    /// Program and arguments; at least one element (an empty program is
    /// answered like a missing one: exit 127).
    pub command: Vec<String>,
    /// Deadline in seconds, at least 1 (at most [`crate::api::MAX_EXEC_TIMEOUT_SEC`]
    /// is used); the daemon's default when absent.
    #[serde(
        rename = "timeoutSec",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_sec: Option<u64>,
}

impl ExecVmRequest {
    /// The agent request for this command (default output caps, no env, no cwd),
    /// with `timeout_sec` (or `default_timeout_sec` when absent), at most
    /// [`crate::api::MAX_EXEC_TIMEOUT_SEC`], in milliseconds.
    pub fn to_agent_request(&self, default_timeout_sec: u64) -> crate::agent::ExecRequest {
        let mut req = crate::agent::ExecRequest::new(self.command.iter().cloned());
        let secs = self
            .timeout_sec
            .unwrap_or(default_timeout_sec)
            .min(crate::api::MAX_EXEC_TIMEOUT_SEC);
        req.timeout_ms = Some(secs.saturating_mul(1000));
        req
    }
}

/// `ExecVMResponse`: the outcome of an exec; the same fields as [`ExecResult`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecVmResponse {
    /// Exit status; negative for a signal-killed process (`-signal`) or a timeout.
    #[serde(rename = "exitCode")]
    pub exit_code: i32,
    /// Captured stdout (lossy UTF-8).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8).
    pub stderr: String,
    /// The command ran past its deadline and was killed.
    #[serde(rename = "timedOut")]
    pub timed_out: bool,
    /// stdout passed its cap; the rest was dropped.
    #[serde(rename = "stdoutTruncated")]
    pub stdout_truncated: bool,
    /// stderr passed its cap; the rest was dropped.
    #[serde(rename = "stderrTruncated")]
    pub stderr_truncated: bool,
    /// Wall time in milliseconds.
    #[serde(rename = "durationMs")]
    pub duration_ms: u64,
}

impl From<ExecResult> for ExecVmResponse {
    fn from(r: ExecResult) -> Self {
        ExecVmResponse {
            exit_code: r.exit_code,
            stdout: r.stdout,
            stderr: r.stderr,
            timed_out: r.timed_out,
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            duration_ms: r.duration_ms,
        }
    }
}

impl From<ExecVmResponse> for ExecResult {
    /// The result of exec 0 (the id is not the API's).
    fn from(r: ExecVmResponse) -> Self {
        ExecResult {
            id: 0,
            exit_code: r.exit_code,
            stdout: r.stdout,
            stderr: r.stderr,
            timed_out: r.timed_out,
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            duration_ms: r.duration_ms,
        }
    }
}

/// `ConsoleTokenResponse`: a one-time token for the console WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleTokenResponse {
    /// Pass as the `session` query parameter.
    pub token: String,
    /// Seconds until the token expires unused.
    #[serde(rename = "expiresInSec")]
    pub expires_in_sec: u64,
    /// Path to connect to, e.g. `/v1/vms/<id>/console/ws`.
    #[serde(rename = "websocketPath")]
    pub websocket_path: String,
}

/// `DeleteResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResponse {
    /// Id of the deleted object.
    pub id: String,
    /// Always `true` on success.
    pub deleted: bool,
}

/// `OrgQuotaValues`: either limits or current usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgQuotaValues {
    /// vCPUs.
    pub vcpu: u64,
    /// Memory in MiB.
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
    /// Disk in GiB.
    #[serde(rename = "diskGiB")]
    pub disk_gib: u64,
    /// Number of snapshots.
    #[serde(rename = "snapshotCount")]
    pub snapshot_count: u64,
}

/// `OrgQuotaUsage`: an organization's limits and what it uses now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgQuotaUsage {
    /// The organization.
    #[serde(rename = "orgId")]
    pub org_id: String,
    /// Limits.
    pub limits: OrgQuotaValues,
    /// Current usage.
    pub usage: OrgQuotaValues,
}
