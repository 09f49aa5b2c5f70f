//! Console access: one-time tokens that expire, and resolving a token to
//! the VM's console socket for the WebSocket bridge, at most
//! [`MAX_SESSIONS`] sessions per VM at once.

use std::path::PathBuf;

use fastvm_proto::api::ConsoleTokenResponse;

use super::per_key::{Held, PerKey};
use super::vms::{find_vm, path_id, require_running};
use super::{Caller, Service, ServiceError};
use crate::auth;
use crate::store::now_ms;
use crate::vmm::machine::CONSOLE_SOCKET;

/// WebSocket console sessions of one VM open at once (the monitor serves
/// as many console clients).
pub const MAX_SESSIONS: usize = crate::vmm::console::MAX_CLIENTS;

/// Console sessions open, per VM, at most [`MAX_SESSIONS`] each.
pub fn sessions() -> PerKey {
    PerKey::new(MAX_SESSIONS)
}

/// Counts a new console session of `vm_id`, unless it has [`MAX_SESSIONS`].
fn open_session(sessions: &PerKey, vm_id: &str) -> Result<Held, ServiceError> {
    sessions.take(vm_id).ok_or_else(|| {
        ServiceError::TooMany(format!(
            "VM {vm_id} has {MAX_SESSIONS} console sessions open, the most it serves; \
             close one first"
        ))
    })
}

/// The console a valid token opens, counted among its VM's sessions while
/// this lives.
#[derive(Debug)]
pub struct ConsoleTarget {
    pub vm_id: String,
    pub socket: PathBuf,
    pub session: Held,
}

impl Service {
    /// createVMConsoleToken.
    pub async fn create_vm_console_token(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<ConsoleTokenResponse, ServiceError> {
        let (caller, id) = (caller.clone(), path_id(id)?);
        let ttl = self.inner.config.console_token_ttl;
        self.db(move |inner| {
            let vm = find_vm(inner, &caller, &id)?;
            require_running(&vm, "open a console")?;
            let (token, hash) = auth::generate_token();
            let expires = now_ms() + ttl.as_millis() as i64;
            inner
                .store
                .insert_console_token(&hash, &vm.id, &caller.org_id, expires)?;
            Ok(ConsoleTokenResponse {
                websocket_path: format!("/v1/vms/{}/console/ws?session={token}", vm.id),
                token,
                expires_in_sec: ttl.as_secs(),
            })
        })
        .await
    }

    /// connectVMConsoleWebsocket: spends the token (one use) and returns the
    /// console to bridge. Unknown, used or expired tokens are 404.
    pub async fn connect_vm_console(
        &self,
        id: &str,
        token: &str,
    ) -> Result<ConsoleTarget, ServiceError> {
        let id = path_id(id)?;
        let hash = auth::hash_api_key(token);
        self.db(move |inner| {
            let gone =
                || ServiceError::NotFound("console session not found, used or expired".into());
            let (vm_id, org_id) = inner
                .store
                .consume_console_token(&hash, now_ms())?
                .ok_or_else(gone)?;
            if vm_id != id {
                return Err(gone());
            }
            let caller = Caller {
                org_id,
                admin: false,
            };
            let vm = find_vm(inner, &caller, &vm_id)?;
            require_running(&vm, "open a console")?;
            Ok(ConsoleTarget {
                socket: inner.supervisor.vm_dir(&vm.id).join(CONSOLE_SOCKET),
                session: open_session(&inner.console_sessions, &vm.id)?,
                vm_id: vm.id,
            })
        })
        .await
    }
}
