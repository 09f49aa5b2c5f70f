//! The console of a VM for a trusted local-socket caller: no token, just
//! org scoping and a running check, then the path of the monitor's
//! `console.sock` for the socket front end to splice.

use std::path::PathBuf;

use super::vms::{find_vm, path_id, require_running};
use super::{Caller, Service, ServiceError};
use crate::vmm::machine::CONSOLE_SOCKET;

impl Service {
    /// attachConsole: the console socket of the caller's running VM `id`.
    /// 400 for a malformed id, 404 for another org's or an unknown VM, 409
    /// when it is not running.
    pub async fn console_socket(&self, caller: &Caller, id: &str) -> Result<PathBuf, ServiceError> {
        let (caller, id) = (caller.clone(), path_id(id)?);
        self.db(move |inner| {
            let vm = find_vm(inner, &caller, &id)?;
            require_running(&vm, "open a console")?;
            Ok(inner.supervisor.vm_dir(&vm.id).join(CONSOLE_SOCKET))
        })
        .await
    }
}
