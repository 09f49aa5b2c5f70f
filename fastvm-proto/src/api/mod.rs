//! The public API's schemas (`openapi.yaml`, `components/schemas`) as serde
//! types, plus their validation. This is the one source of truth for what the
//! HTTP front end and the socket front end accept and return.
//!
//! Choices the spec leaves open, made here once:
//!
//! - **JSON names** are exactly the spec's (`memoryMiB`, `diskGiB`,
//!   `publicIpv6`, ...); each struct says so with explicit renames where
//!   `camelCase` would get an acronym wrong.
//! - **Unknown fields** in request bodies are accepted and ignored (the spec
//!   does not forbid them; clients built against a newer spec keep working).
//! - **Optional fields** are omitted when `None`, except `deletedAt`, which the
//!   spec marks `nullable`: it is always present, `null` until the VM is gone.
//!   `firewall` on [`VmInstance`] and [`SnapshotObject`] is always present
//!   (the daemon always knows the policy); a missing one reads as the default.
//! - **Timestamps** are RFC 3339 strings (UTC, `Z`), kept as `String` so rows
//!   round-trip through the store untouched; make them with [`now_rfc3339`]
//!   or [`format_rfc3339`].
//! - **Ids** with `format: uuid` are [`Uuid`]; ids the spec leaves as plain
//!   strings (`orgId`, `DeleteResponse.id`) are `String`. Path ids are parsed
//!   with [`parse_uuid`] so the error names the parameter.
//! - **Integers**: vCPU counts are `u32`, sizes and counts `u64`, ports `u32`
//!   (so that 0 and 65536 reach validation and get a message naming the field).

mod cidr;
mod exec_stream;
mod files;
mod forwards;
mod images;
mod types;
mod validate;

#[cfg(test)]
mod tests;

pub use cidr::{CidrError, Ipv6Cidr};
pub use exec_stream::{
    DEFAULT_WINDOW, ExecStreamRequest, MAX_STREAM_ARGS, MAX_STREAM_REQUEST_BYTES,
};
pub use files::{FileInfo, FileMoved, FileRequest, MAX_GUEST_PATH};
pub use forwards::{ForwardInfo, ForwardList, ForwardRequest};
pub use images::{ImageList, ImageRunDefaults, ImageSummary};
pub use types::*;
pub use uuid::Uuid;
pub use validate::{
    MAX_DESCRIPTION_CHARS, MAX_EXEC_TIMEOUT_SEC, MAX_FIREWALL_RULES, MAX_NAME_CHARS,
    MAX_POLICY_CIDRS, MAX_RULE_CIDRS, ValidationError, check_disk_grow, check_image_name,
    parse_uuid, validate_create_snapshot, validate_create_vm, validate_exec_vm,
    validate_firewall_policy, validate_firewall_rule, validate_patch_vm_firewall,
    validate_update_snapshot, validate_update_vm,
};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The current time as an RFC 3339 string in UTC, e.g. `2026-11-28T13:38:34.123456789Z`.
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
        .expect("the current time has a 4-digit year and formats as RFC 3339")
}

/// Formats `t` as RFC 3339, converted to UTC (`Z` suffix). Fails only for
/// years outside 0..=9999, which RFC 3339 cannot express.
pub fn format_rfc3339(t: OffsetDateTime) -> Result<String, time::error::Format> {
    t.to_offset(time::UtcOffset::UTC).format(&Rfc3339)
}

/// Parses an RFC 3339 timestamp such as the ones in `createdAt`.
pub fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(s, &Rfc3339)
}
