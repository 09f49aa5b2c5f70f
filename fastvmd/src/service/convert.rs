//! Store rows to API objects.

use fastvm_proto::api::{FirewallPolicy, OrgQuotaValues, SnapshotObject, VmInstance};

use super::ServiceError;
use crate::store::{QuotaValues, SnapshotRow, VmRow, format_rfc3339};

fn parse<T: std::str::FromStr>(what: &str, value: &str) -> Result<T, ServiceError> {
    value
        .parse()
        .map_err(|_| ServiceError::Internal(format!("stored {what} {value:?} is not valid")))
}

fn firewall(json: &str) -> Result<FirewallPolicy, ServiceError> {
    serde_json::from_str(json)
        .map_err(|e| ServiceError::Internal(format!("stored firewall policy: {e}")))
}

/// A VM row as the API shows it.
pub fn vm(row: &VmRow) -> Result<VmInstance, ServiceError> {
    Ok(VmInstance {
        id: parse("VM id", &row.id)?,
        name: row.name.clone(),
        org_id: row.org_id.clone(),
        machine_name: row.machine_name.clone(),
        source_name: row.source_name.clone(),
        firewall: firewall(&row.firewall_json)?,
        cpu: row.vcpus,
        memory_mib: row.memory_mib,
        disk_gib: row.disk_gib,
        public_ipv6: row.public_ipv6.clone(),
        status: row.status,
        created_at: format_rfc3339(row.created_at),
        deleted_at: row.deleted_at.map(format_rfc3339),
    })
}

/// A snapshot row as the API shows it.
pub fn snapshot(row: &SnapshotRow) -> Result<SnapshotObject, ServiceError> {
    Ok(SnapshotObject {
        id: parse("snapshot id", &row.id)?,
        name: row.name.clone(),
        org_id: row.org_id.clone(),
        vm_id: parse("VM id", &row.vm_id)?,
        firewall: firewall(&row.firewall_json)?,
        status: row.status,
        created_at: format_rfc3339(row.created_at),
    })
}

/// Quota values both ways.
pub fn quota(v: QuotaValues) -> OrgQuotaValues {
    OrgQuotaValues {
        vcpu: v.vcpu,
        memory_mib: v.memory_mib,
        disk_gib: v.disk_gib,
        snapshot_count: v.snapshot_count,
    }
}

/// API quota values as the store keeps them.
pub fn store_quota(v: &OrgQuotaValues) -> QuotaValues {
    QuotaValues {
        vcpu: v.vcpu,
        memory_mib: v.memory_mib,
        disk_gib: v.disk_gib,
        snapshot_count: v.snapshot_count,
    }
}
