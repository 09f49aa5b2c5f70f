//! Port forwards: a listener on the daemon's host (127.0.0.1) per forward,
//! each connection to it carried to a TCP port inside the VM on an agent
//! stream of its own (`Connect`), so a forward needs no NIC and no
//! firewall rule. Each connection holds one of the org's exec slots while
//! it lasts. Forwards live in the daemon's memory: a VM's go when it is
//! deleted, and none outlives the daemon.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fastvm_proto::agent::Frame;
use fastvm_proto::agent_stream::{CHANNEL_IN, CHANNEL_OUT};
use fastvm_proto::api::{ForwardInfo, ForwardList, ForwardRequest};
use std::os::fd::{AsRawFd, RawFd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use tokio::task::AbortHandle;

use super::streams::{Opened, STREAM_ID, upstream};
use super::vms::{find_vm, path_id, require_running};
use super::{Caller, Service, ServiceError};

/// Most forwards one VM has at once.
pub const MAX_FORWARDS_PER_VM: usize = 16;
/// Most forwards the daemon has at once.
pub const MAX_FORWARDS: usize = 1024;
/// Bytes read from a forwarded connection at a time.
const READ_CHUNK: usize = 32 << 10;

/// One forward.
struct Forward {
    org_id: String,
    vm_id: String,
    guest_port: u16,
    host_address: String,
    connections: Arc<AtomicU64>,
    listener: AbortHandle,
    /// The listening socket the task owns, shut down when the forward is
    /// closed: connections are refused from then on, not once the
    /// aborted task happens to be dropped.
    listening: RawFd,
}

/// The daemon's forwards, by id.
#[derive(Default)]
pub struct Forwards {
    by_id: Mutex<HashMap<String, Forward>>,
}

impl Forward {
    /// Stops listening at once, then ends the task and its connections.
    fn stop(&self) {
        // SAFETY: shutdown of the listening socket the task still owns
        // (it ends only by the abort below, once).
        unsafe { libc::shutdown(self.listening, libc::SHUT_RDWR) };
        self.listener.abort();
    }

    fn info(&self, id: &str) -> ForwardInfo {
        ForwardInfo {
            id: id.to_string(),
            vm_id: self.vm_id.clone(),
            guest_port: self.guest_port,
            host_address: self.host_address.clone(),
            connections: self.connections.load(Ordering::Relaxed),
        }
    }
}

impl Forwards {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Forward>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes every forward of VM `vm_id` (it is being deleted).
    pub fn close_vm(&self, vm_id: &str) {
        self.lock().retain(|_, f| {
            let keep = f.vm_id != vm_id;
            if !keep {
                f.stop();
            }
            keep
        });
    }
}

impl Service {
    /// forwardPort: a listener on 127.0.0.1 (`hostPort`, or a free one)
    /// whose connections reach `guestPort` in VM `id`.
    pub async fn forward_port(
        &self,
        caller: &Caller,
        id: &str,
        req: ForwardRequest,
    ) -> Result<ForwardInfo, ServiceError> {
        req.validate()?;
        let (who, vm_id) = (caller.clone(), path_id(id)?);
        let row = self
            .db(move |inner| {
                let row = find_vm(inner, &who, &vm_id)?;
                require_running(&row, "forward a port")?;
                Ok(row)
            })
            .await?;
        // The agent must speak streams: better said now than at the first
        // connection.
        drop(self.open_stream(caller, &row.id, "forward a port").await?);
        {
            let forwards = self.inner.forwards.lock();
            if forwards.len() >= MAX_FORWARDS {
                return Err(ServiceError::TooMany(format!(
                    "the daemon has {MAX_FORWARDS} port forwards, the most it keeps; close one (closeForward)"
                )));
            }
            if forwards.values().filter(|f| f.vm_id == row.id).count() >= MAX_FORWARDS_PER_VM {
                return Err(ServiceError::TooMany(format!(
                    "VM {} has {MAX_FORWARDS_PER_VM} port forwards, the most one VM has; close one (closeForward)",
                    row.id
                )));
            }
        }
        let port = req.host_port.unwrap_or(0);
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AddrInUse => ServiceError::Conflict(format!(
                    "hostPort {port}: in use on the daemon's host; pick another, or leave it out for a free one"
                )),
                _ => ServiceError::BadRequest(format!("hostPort {port}: cannot listen: {e}")),
            })?;
        let host_address = listener
            .local_addr()
            .map_err(|e| ServiceError::Internal(format!("a listener without an address: {e}")))?
            .to_string();
        let listening = listener.as_raw_fd();
        let forward_id = uuid::Uuid::new_v4().to_string();
        let connections = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept(
            self.clone(),
            caller.clone(),
            row.id.clone(),
            req.guest_port,
            listener,
            connections.clone(),
        ));
        let forward = Forward {
            org_id: caller.org_id.clone(),
            vm_id: row.id.clone(),
            guest_port: req.guest_port,
            host_address,
            connections,
            listener: task.abort_handle(),
            listening,
        };
        let info = forward.info(&forward_id);
        self.inner.forwards.lock().insert(forward_id, forward);
        tracing::info!(
            "forward {} -> VM {} port {}",
            info.host_address,
            row.id,
            info.guest_port
        );
        Ok(info)
    }

    /// listForwards: the caller's org's forwards.
    pub fn list_forwards(&self, caller: &Caller) -> ForwardList {
        let forwards = self.inner.forwards.lock();
        let mut list: Vec<ForwardInfo> = forwards
            .iter()
            .filter(|(_, f)| f.org_id == caller.org_id)
            .map(|(id, f)| f.info(id))
            .collect();
        list.sort_by(|a, b| (&a.vm_id, a.guest_port).cmp(&(&b.vm_id, b.guest_port)));
        ForwardList { forwards: list }
    }

    /// closeForward: stops listening; connections under way end too.
    pub fn close_forward(&self, caller: &Caller, id: &str) -> Result<ForwardInfo, ServiceError> {
        let mut forwards = self.inner.forwards.lock();
        match forwards.get(id) {
            Some(f) if f.org_id == caller.org_id => {
                let f = forwards.remove(id).expect("just found");
                f.stop();
                Ok(f.info(id))
            }
            _ => Err(ServiceError::NotFound(format!(
                "port forward {id} not found"
            ))),
        }
    }
}

/// Accepts connections until the forward is closed (the task aborted,
/// which ends the connections it started too).
async fn accept(
    service: Service,
    caller: Caller,
    vm_id: String,
    guest_port: u16,
    listener: TcpListener,
    connections: Arc<AtomicU64>,
) {
    let mut carried = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                connections.fetch_add(1, Ordering::Relaxed);
                let (service, caller, vm_id) = (service.clone(), caller.clone(), vm_id.clone());
                carried.spawn(async move {
                    if let Err(e) = carry(&service, &caller, &vm_id, guest_port, tcp).await {
                        tracing::info!("forward to VM {vm_id} port {guest_port}: {e}");
                    }
                });
            }
            Some(_) = carried.join_next(), if !carried.is_empty() => {}
        }
    }
}

/// Carries one connection to the guest's port and back.
async fn carry(
    service: &Service,
    caller: &Caller,
    vm_id: &str,
    guest_port: u16,
    tcp: TcpStream,
) -> Result<(), ServiceError> {
    // The slot is held for as long as the connection lasts.
    let Opened {
        stream,
        slot: _slot,
        ..
    } = service.open_stream(caller, vm_id, "forward a port").await?;
    let (mut writer, mut reader) = (stream.writer, stream.reader);
    let connect = Frame::Connect {
        id: STREAM_ID,
        port: guest_port,
    };
    writer
        .send(&connect)
        .await
        .map_err(|e| upstream(vm_id, e))?;
    match reader.next().await.map_err(|e| upstream(vm_id, e))? {
        Frame::Connected { .. } => {}
        Frame::StreamError(e) => return Err(upstream(vm_id, e.message)),
        other => return Err(upstream(vm_id, format!("answered {}", other.describe()))),
    }
    let (mut tcp_in, mut tcp_out) = tcp.into_split();
    let to_guest = async {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match tcp_in.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if writer
                        .send_data(STREAM_ID, CHANNEL_IN, &buf[..n])
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let end = Frame::StreamEnd {
            id: STREAM_ID,
            channel: CHANNEL_IN,
        };
        let _ = writer.send(&end).await;
        // Keep the connection open for the guest's answer.
        std::future::pending::<()>().await;
    };
    let from_guest = async {
        loop {
            match reader.next().await {
                Ok(Frame::Data(d)) if d.channel == CHANNEL_OUT => {
                    if tcp_out.write_all(&d.bytes).await.is_err() {
                        return;
                    }
                }
                Ok(Frame::StreamEnd { .. }) => {
                    let _ = tcp_out.shutdown().await;
                    return;
                }
                Ok(Frame::StreamError(_)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        () = to_guest => {}
        () = from_guest => {}
    }
    Ok(())
}
