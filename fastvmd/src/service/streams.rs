//! What every stream into a VM starts with (a streaming exec, a file, a
//! forward): one of the org's exec slots, the VM found running for the
//! caller, and an agent connection of the stream's own.

use super::exec_slots::Slot;
use super::vms::{find_vm, path_id, require_running};
use super::{Caller, Service, ServiceError};
use crate::agent::AgentError;
use crate::agent_stream::AgentStream;
use crate::store::VmRow;
use crate::supervisor::SupervisorError;

/// A stream's id on its own agent connection.
pub const STREAM_ID: u64 = 1;

/// A stream's start: the VM, its agent connection, the slot it holds.
pub struct Opened {
    pub row: VmRow,
    pub stream: AgentStream,
    pub slot: Slot,
}

impl Service {
    /// Opens a stream to VM `id` for `caller`, to `what` ("exec", "write a
    /// file", ...): 404, 409 when the VM is not running or its agent has no
    /// streams, 429 past the org's slots, 502 when the agent cannot be
    /// reached.
    pub(super) async fn open_stream(
        &self,
        caller: &Caller,
        id: &str,
        what: &'static str,
    ) -> Result<Opened, ServiceError> {
        let (caller, id) = (caller.clone(), path_id(id)?);
        let slot = self.inner.exec_slots.take(&caller.org_id)?;
        let row = self
            .db(move |inner| {
                let row = find_vm(inner, &caller, &id)?;
                require_running(&row, what)?;
                Ok(row)
            })
            .await?;
        let stream = self
            .inner
            .supervisor
            .open_stream(&row.id)
            .await
            .map_err(|e| match e {
                SupervisorError::Agent(AgentError::TooOld(_)) => {
                    ServiceError::Conflict(format!("VM {}: {e}", row.id))
                }
                e => ServiceError::Upstream(format!("VM {}: {e}", row.id)),
            })?;
        Ok(Opened { row, stream, slot })
    }
}

/// An agent failure on VM `vm_id`'s stream, as the caller is told it.
pub fn upstream(vm_id: &str, e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Upstream(format!("VM {vm_id}: {e}"))
}
