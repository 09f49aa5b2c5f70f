//! Console access: one-time tokens that expire, and resolving a token to
//! the VM's console socket for the WebSocket bridge, at most
//! [`MAX_SESSIONS`] sessions per VM at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use fastvm_proto::api::ConsoleTokenResponse;

use super::vms::{find_vm, path_id, require_running};
use super::{Caller, Service, ServiceError};
use crate::auth;
use crate::store::now_ms;
use crate::vmm::machine::CONSOLE_SOCKET;

/// WebSocket console sessions of one VM open at once (the monitor serves
/// as many console clients).
pub const MAX_SESSIONS: usize = crate::vmm::console::MAX_CLIENTS;

/// Console sessions open, per VM.
#[derive(Debug, Default, Clone)]
pub struct Sessions(Arc<Mutex<HashMap<String, usize>>>);

impl Sessions {
    /// Counts a new session of `vm_id`, unless it has [`MAX_SESSIONS`].
    fn open(&self, vm_id: &str) -> Result<Session, ServiceError> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(vm_id.to_string()).or_default();
        if *count >= MAX_SESSIONS {
            return Err(ServiceError::TooMany(format!(
                "VM {vm_id} has {MAX_SESSIONS} console sessions open, the most it serves; \
                 close one first"
            )));
        }
        *count += 1;
        Ok(Session {
            sessions: self.clone(),
            vm_id: vm_id.to_string(),
        })
    }
}

/// One open console session; its end is counted when it is dropped.
#[derive(Debug)]
pub struct Session {
    sessions: Sessions,
    vm_id: String,
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut open = self.sessions.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.vm_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.vm_id);
            }
        }
    }
}

/// The console a valid token opens, counted among its VM's sessions while
/// this lives.
#[derive(Debug)]
pub struct ConsoleTarget {
    pub vm_id: String,
    pub socket: PathBuf,
    pub session: Session,
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
        self.blocking(move |inner| {
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
        self.blocking(move |inner| {
            let gone =
                || ServiceError::NotFound("console session not found, used or expired".into());
            let (vm_id, org_id) = inner
                .store
                .consume_console_token(&hash, now_ms())?
                .ok_or_else(gone)?;
            if vm_id != id {
                return Err(gone());
            }
            let vm = find_vm(inner, &Caller { org_id }, &vm_id)?;
            require_running(&vm, "open a console")?;
            Ok(ConsoleTarget {
                socket: inner.supervisor.vm_dir(&vm.id).join(CONSOLE_SOCKET),
                session: inner.console_sessions.open(&vm.id)?,
                vm_id: vm.id,
            })
        })
        .await
    }
}
