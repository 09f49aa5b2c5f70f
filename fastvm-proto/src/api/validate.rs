//! Validation of request bodies and path ids: every constraint in the spec,
//! one function per request type. Each error names the offending field with
//! its JSON path (`firewall.ingress[2].portEnd`), so the message can go to the
//! caller as is (HTTP 400).
//!
//! Name limits count Unicode scalar values (`chars()`), not bytes. The spec
//! sets only a maximum, so empty names are allowed here (the daemon may
//! substitute a generated name).

use uuid::Uuid;

use super::cidr::Ipv6Cidr;
use super::types::{
    CreateSnapshotRequest, CreateVmRequest, DEFAULT_DISK_GIB, ExecVmRequest, FirewallPolicy,
    FirewallRule, PatchVmFirewallRequest, UpdateSnapshotRequest, UpdateVmRequest,
};

/// Longest VM or snapshot name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest firewall rule description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 256;
/// Rules of one firewall policy.
pub const MAX_FIREWALL_RULES: usize = 1000;
/// Source CIDRs of one rule, and of a whole policy.
pub const MAX_RULE_CIDRS: usize = 64;
pub const MAX_POLICY_CIDRS: usize = 4096;
/// Longest an exec runs: one hour. The spec sets only a minimum, so a
/// longer `timeoutSec` is accepted and taken as this; an upper bound keeps
/// a forgotten request from pinning a connection to the agent for days.
pub const MAX_EXEC_TIMEOUT_SEC: u64 = 3600;

/// A request field that breaks a rule of the spec; shown as `field: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// JSON path of the field, e.g. `name` or `ingress[0].sourceCidrs[1]`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ValidationError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<ValidationError> for super::ErrorResponse {
    fn from(e: ValidationError) -> Self {
        super::ErrorResponse::new(e.to_string())
    }
}

/// Parses a `format: uuid` path parameter; the error names `field`.
pub fn parse_uuid(field: &str, s: &str) -> Result<Uuid, ValidationError> {
    Uuid::parse_str(s).map_err(|_| ValidationError::new(field, "must be a UUID"))
}

/// `diskGiB` may only grow: `requested` must be at least the `source` disk
/// (the snapshot's VM disk, or [`DEFAULT_DISK_GIB`] for a machine type).
pub fn check_disk_grow(requested: u64, source: u64) -> Result<(), ValidationError> {
    if requested < source {
        return Err(ValidationError::new(
            "diskGiB",
            format!("must be at least {source} (the source disk size; disks only grow)"),
        ));
    }
    Ok(())
}

/// `createVM` body: name length, exactly one of `machineType` / `snapshotId`,
/// `diskGiB >= 10`, and the firewall policy if given.
pub fn validate_create_vm(req: &CreateVmRequest) -> Result<(), ValidationError> {
    if let Some(name) = &req.name {
        check_name("name", name)?;
    }
    match (&req.machine_type, &req.snapshot_id) {
        (Some(_), Some(_)) => {
            return Err(ValidationError::new(
                "machineType/snapshotId",
                "give exactly one of machineType and snapshotId, not both",
            ));
        }
        (None, None) => {
            return Err(ValidationError::new(
                "machineType/snapshotId",
                "give exactly one of machineType and snapshotId",
            ));
        }
        _ => {}
    }
    if req.disk_gib.is_some_and(|disk| disk < DEFAULT_DISK_GIB) {
        return Err(ValidationError::new(
            "diskGiB",
            format!("must be at least {DEFAULT_DISK_GIB}"),
        ));
    }
    if let Some(fw) = &req.firewall {
        check_policy("firewall.", fw)?;
    }
    if let Some(image) = &req.image {
        if req.snapshot_id.is_some() {
            return Err(ValidationError::new(
                "image",
                "a clone boots its snapshot's image: give image with machineType only",
            ));
        }
        check_image_name(image).map_err(|why| ValidationError::new("image", why))?;
    }
    Ok(())
}

/// An image name: 1 to 63 of `a-z 0-9 . _ -`, starting with a letter or a
/// digit. `Err` says what is wrong.
pub fn check_image_name(name: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not an image name: use 1 to 63 of a-z, 0-9, '.', '_' and '-', \
             starting with a letter or digit"
        ))
    }
}

/// `createSnapshot` body: name length.
pub fn validate_create_snapshot(req: &CreateSnapshotRequest) -> Result<(), ValidationError> {
    match &req.name {
        Some(name) => check_name("name", name),
        None => Ok(()),
    }
}

/// `updateVM` body: name length.
pub fn validate_update_vm(req: &UpdateVmRequest) -> Result<(), ValidationError> {
    check_name("name", &req.name)
}

/// `updateSnapshot` body: name length.
pub fn validate_update_snapshot(req: &UpdateSnapshotRequest) -> Result<(), ValidationError> {
    check_name("name", &req.name)
}

/// `replaceVMFirewall` body: every rule (fields named `ingress[i].…`).
pub fn validate_firewall_policy(policy: &FirewallPolicy) -> Result<(), ValidationError> {
    check_policy("", policy)
}

/// `patchVMFirewall` body: every rule given (fields named `ingress[i].…`).
pub fn validate_patch_vm_firewall(req: &PatchVmFirewallRequest) -> Result<(), ValidationError> {
    check_rules("", req.ingress.as_deref().unwrap_or_default())
}

/// One firewall rule; `field_prefix` (e.g. `ingress[0].`) is put before
/// each field name in the error.
pub fn validate_firewall_rule(
    field_prefix: &str,
    rule: &FirewallRule,
) -> Result<(), ValidationError> {
    let field = |name: &str| format!("{field_prefix}{name}");
    if !(1..=65535).contains(&rule.port_start) {
        return Err(ValidationError::new(
            field("portStart"),
            "must be from 1 to 65535",
        ));
    }
    if let Some(end) = rule.port_end {
        if !(1..=65535).contains(&end) {
            return Err(ValidationError::new(
                field("portEnd"),
                "must be from 1 to 65535",
            ));
        }
        if end < rule.port_start {
            return Err(ValidationError::new(
                field("portEnd"),
                "must be at least portStart",
            ));
        }
    }
    let cidrs = rule.source_cidrs.as_ref().map_or(0, Vec::len);
    if cidrs > MAX_RULE_CIDRS {
        return Err(ValidationError::new(
            field("sourceCidrs"),
            format!("{cidrs} CIDRs: a rule has at most {MAX_RULE_CIDRS}"),
        ));
    }
    for (i, cidr) in rule.source_cidrs.iter().flatten().enumerate() {
        if let Err(e) = cidr.parse::<Ipv6Cidr>() {
            return Err(ValidationError::new(
                field(&format!("sourceCidrs[{i}]")),
                format!("{cidr:?} is not an IPv6 CIDR: {e}"),
            ));
        }
    }
    if rule
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
    {
        return Err(ValidationError::new(
            field("description"),
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    Ok(())
}

/// `execVM` body: a non-empty `command` (an empty program name is the
/// guest's to answer, as any program it cannot find: exit 127), and
/// `timeoutSec` at least 1 (more than [`MAX_EXEC_TIMEOUT_SEC`] is taken as
/// that).
pub fn validate_exec_vm(req: &ExecVmRequest) -> Result<(), ValidationError> {
    if req.command.is_empty() {
        return Err(ValidationError::new("command", "must not be empty"));
    }
    if req.timeout_sec.is_some_and(|t| t < 1) {
        return Err(ValidationError::new("timeoutSec", "must be at least 1"));
    }
    Ok(())
}

fn check_name(field: &str, name: &str) -> Result<(), ValidationError> {
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ValidationError::new(
            field,
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(())
}

fn check_policy(prefix: &str, policy: &FirewallPolicy) -> Result<(), ValidationError> {
    check_rules(prefix, &policy.ingress)
}

fn check_rules(prefix: &str, rules: &[FirewallRule]) -> Result<(), ValidationError> {
    if rules.len() > MAX_FIREWALL_RULES {
        return Err(ValidationError::new(
            format!("{prefix}ingress"),
            format!(
                "{} rules: a policy has at most {MAX_FIREWALL_RULES}",
                rules.len()
            ),
        ));
    }
    let cidrs: usize = rules
        .iter()
        .map(|r| r.source_cidrs.as_ref().map_or(0, Vec::len))
        .sum();
    if cidrs > MAX_POLICY_CIDRS {
        return Err(ValidationError::new(
            format!("{prefix}ingress"),
            format!("{cidrs} source CIDRs: a policy has at most {MAX_POLICY_CIDRS}"),
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        validate_firewall_rule(&format!("{prefix}ingress[{i}]."), rule)?;
    }
    Ok(())
}
