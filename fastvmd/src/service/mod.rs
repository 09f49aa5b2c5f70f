//! The operation layer: one method per OpenAPI operationId, used by both the
//! HTTP and the Unix-socket front ends. All rules — validation, quotas,
//! state checks, org isolation — live here and nowhere else.

mod admin;
mod auth;
mod console;
mod convert;
mod db_lane;
pub mod error;
pub mod exec_slots;
pub mod exec_stream;
#[cfg(test)]
mod failure_tests;
#[cfg(test)]
mod fake_machines;
pub mod files;
pub mod forwards;
mod images;
mod local_console;
pub mod operation;
mod per_key;
mod reconcile;
mod settle;
pub mod snapshot_sweep;
mod snapshots;
pub mod streams;
mod vms;

pub use admin::NewApiKey;
pub use console::ConsoleTarget;
pub use error::ServiceError;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fastvm_proto::socket::{EventKind, EventOp};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::private_files;
use crate::store::{QuotaDefaults, Store, StoreError};
use crate::supervisor::{GuestChoice, GuestImage, Machines, Supervisor};
use crate::vmm::host::{self, HostKind};

/// Who is calling: every operation is scoped to this organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub org_id: String,
    /// The local default org's caller on the daemon's socket (no API key):
    /// the only one admin operations are for.
    pub admin: bool,
}

impl Caller {
    /// The caller of the operations that need none (the health probes):
    /// no org, no admin.
    pub fn anonymous() -> Caller {
        Caller {
            org_id: String::new(),
            admin: false,
        }
    }
}

/// How the daemon is set up.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The data directory (`FASTVM_HOME`).
    pub data_dir: PathBuf,
    /// Which guest new VMs boot.
    pub guest: GuestChoice,
    /// The binary run as `fastvmd vmm` for each VM.
    pub monitor_exe: PathBuf,
    /// Quota limits of orgs that have none set.
    pub quota_defaults: QuotaDefaults,
    /// How long createVM waits for the guest agent before answering
    /// `provisioning` instead of `running`.
    pub agent_wait: Duration,
    /// Timeout of an exec that gives no `timeoutSec`.
    pub default_exec_timeout_sec: u64,
    /// Execs one org may have running at once.
    pub max_execs_per_org: usize,
    /// Lifetime of a console token.
    pub console_token_ttl: Duration,
    /// Give VMs a NIC (when this host lets the daemon make taps).
    pub network: bool,
    /// The /64 VM addresses come from; a ULA kept in the data dir when absent.
    pub ipv6_prefix: Option<crate::net::addr::Prefix>,
    /// The range VMs' IPv4 addresses (NATed by the host) come from; `None`:
    /// VMs have no IPv4.
    pub ipv4_range: Option<crate::vmm::net::addr4::Ipv4Range>,
    /// The uids/gids jailed monitors run as.
    pub jail_ids: crate::vmm::jail::ids::IdRange,
    /// The image cache, where named images are (`fastvmd image import`).
    pub image_cache: PathBuf,
}

impl ServiceConfig {
    /// Defaults for `data_dir` and `guest`.
    pub fn new(data_dir: PathBuf, guest: GuestChoice, monitor_exe: PathBuf) -> Self {
        ServiceConfig {
            image_cache: crate::image::cache_dir(&data_dir),
            data_dir,
            guest,
            monitor_exe,
            quota_defaults: QuotaDefaults::default(),
            agent_wait: Duration::from_secs(5),
            default_exec_timeout_sec: 30,
            max_execs_per_org: exec_slots::DEFAULT_PER_ORG,
            console_token_ttl: Duration::from_secs(60),
            network: true,
            ipv6_prefix: None,
            ipv4_range: None,
            jail_ids: crate::vmm::jail::ids::DEFAULT_ID_RANGE,
        }
    }
}

/// A change, for `watch` subscribers.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub op: EventOp,
    /// The org the object belongs to (events go only to that org's watchers).
    pub org_id: String,
    pub data: serde_json::Value,
}

pub(crate) struct Inner {
    pub config: ServiceConfig,
    pub store: Store,
    pub supervisor: Arc<dyn Machines>,
    pub guest: GuestImage,
    pub host: HostKind,
    pub jwt_secret: Vec<u8>,
    pub snapshots_dir: PathBuf,
    pub events: broadcast::Sender<Event>,
    /// The prefix VMs get addresses from; `None`: VMs run without a NIC.
    pub net: Option<crate::net::addr::Prefix>,
    /// The range VMs with a NIC get an IPv4 address from, if any.
    pub ipv4: Option<crate::vmm::net::addr4::Ipv4Range>,
    /// WebSocket console sessions open, per VM.
    pub console_sessions: per_key::PerKey,
    /// A firewall change being enforced and stored, per VM: one at a time,
    /// the next waits; another VM's change never waits on it.
    pub firewall_changes: per_key::Turns,
    /// VMs with a snapshot being taken, one at a time each.
    pub snapshotting: per_key::PerKey,
    /// Images being imported, one at a time each (an import's work
    /// directory is named after the image and the process).
    pub imports: per_key::PerKey,
    /// Execs running, per org.
    pub exec_slots: exec_slots::ExecSlots,
    /// The threads store work runs on ([`Service::db`]).
    pub db: db_lane::DbLane,
    /// VMs whose ended monitor could not be released yet (still exiting);
    /// the watcher tries again each round. At most one entry per VM.
    pub to_release: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Held shared by a createVM of a named image from finding the image
    /// until its VM's row exists, and alone by deleteImage while it checks
    /// for users and removes the image: no VM is created from an image
    /// that is being deleted.
    pub image_use: std::sync::RwLock<()>,
    /// Port forwards into VMs.
    pub forwards: forwards::Forwards,
}

/// The operation layer; a cheap clone.
#[derive(Clone)]
pub struct Service {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("data_dir", &self.inner.config.data_dir)
            .finish_non_exhaustive()
    }
}

/// What `Service::open` found at start, for the daemon to report.
#[derive(Debug)]
pub struct Opened {
    pub service: Service,
    /// A key for the default org, only on the very first start.
    pub first_key: Option<NewApiKey>,
    /// Why VMs cannot be created, when they cannot.
    pub unavailable: Option<String>,
    /// VMs found running and VMs marked `error` at start.
    pub adopted: usize,
    pub lost: usize,
    /// What the start-up sweep of snapshots did.
    pub swept: snapshot_sweep::Swept,
    /// The prefix VMs get addresses from, or why VMs run without a NIC.
    pub network: Result<crate::net::addr::Prefix, String>,
}

fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(e.to_string())
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Quota {
                limit,
                limit_value,
                requested,
                in_use,
            } => ServiceError::Forbidden(format!(
                "quota exceeded: {limit} limit is {limit_value}, {in_use} in use, \
                 {requested} requested"
            )),
            StoreError::NotFound(what) => ServiceError::NotFound(format!("{what} not found")),
            StoreError::Conflict(what) => ServiceError::Conflict(what),
            other => internal(other),
        }
    }
}

impl Service {
    /// Opens (or creates) the data directory: store, JWT secret, guest
    /// image, and the monitors that outlived the previous daemon.
    pub async fn open(config: ServiceConfig) -> Result<Opened, ServiceError> {
        let mut opened = tokio::task::spawn_blocking(move || Self::open_blocking(config))
            .await
            .map_err(internal)??;
        (opened.adopted, opened.lost) = opened.service.reconcile().await?;
        Ok(opened)
    }

    /// [`Service::open`] but for the monitors: `adopted` and `lost` are 0
    /// until [`Service::reconcile`] has looked at them.
    fn open_blocking(config: ServiceConfig) -> Result<Opened, ServiceError> {
        Self::open_on(config, None)
    }

    /// A service whose VMs are `machines` (a fake), booting a guest that
    /// only the fake sees. Unit tests of the service's own paths.
    #[cfg(test)]
    pub(crate) fn open_with_machines(
        config: ServiceConfig,
        machines: Arc<dyn Machines>,
    ) -> Result<Service, ServiceError> {
        Ok(Self::open_on(config, Some(machines))?.service)
    }

    /// [`Service::open_blocking`] with the real monitors, or `machines`.
    fn open_on(
        config: ServiceConfig,
        machines: Option<Arc<dyn Machines>>,
    ) -> Result<Opened, ServiceError> {
        let dir = &config.data_dir;
        for sub in ["", "vms", "snapshots", "images"] {
            let path = dir.join(sub);
            private_files::private_dir(&path)
                .map_err(|e| internal(format!("cannot create {}: {e}", path.display())))?;
        }
        let db = dir.join("fastvm.db");
        let store = Store::open_with_defaults(db.clone(), config.quota_defaults)?;
        private_files::private_file(&db).map_err(|e| internal(format!("{}: {e}", db.display())))?;
        let jwt_secret = crate::auth::load_or_create_secret(&dir.join("jwt.secret"))
            .map_err(|e| internal(format!("jwt.secret: {e}")))?;
        let host = host::detect();
        let guest = match machines {
            Some(_) => GuestImage::Ready {
                kernel: dir.join("images/fake"),
                cmdline: String::new(),
                disk: None,
            },
            None => GuestImage::prepare(config.guest, &host, &dir.join("images")),
        };
        let unavailable = match &guest {
            GuestImage::Unavailable(why) => Some(why.clone()),
            GuestImage::Ready { .. } => None,
        };
        let supervisor = machines.unwrap_or_else(|| {
            Arc::new(
                Supervisor::new(dir.join("vms"), config.monitor_exe.clone())
                    .with_jail_ids(config.jail_ids)
                    .with_cgroups(crate::supervisor::cgroups::Cgroups::detect(dir)),
            )
        });
        let snapshots_dir = dir.join("snapshots");
        let (events, _) = broadcast::channel(1024);
        let network = Self::network(&config);
        let ipv4 = network.as_ref().ok().and(config.ipv4_range);
        let exec_slots = exec_slots::ExecSlots::new(config.max_execs_per_org);
        let service = Service {
            inner: Arc::new(Inner {
                config,
                store,
                supervisor,
                guest,
                host,
                jwt_secret,
                snapshots_dir,
                events,
                net: network.as_ref().ok().copied(),
                ipv4,
                console_sessions: console::sessions(),
                firewall_changes: per_key::Turns::default(),
                snapshotting: per_key::PerKey::new(1),
                imports: per_key::PerKey::new(1),
                forwards: forwards::Forwards::default(),
                exec_slots,
                to_release: Default::default(),
                image_use: Default::default(),
                db: db_lane::DbLane::start()
                    .map_err(|e| internal(format!("cannot start the store's threads: {e}")))?,
            }),
        };
        let first_key = service.ensure_default_org()?;
        let swept = snapshot_sweep::sweep(&service.inner)?;
        Ok(Opened {
            service,
            first_key,
            unavailable,
            adopted: 0,
            lost: 0,
            swept,
            network,
        })
    }

    /// The prefix VMs get addresses from, or why they get no NIC.
    fn network(config: &ServiceConfig) -> Result<crate::net::addr::Prefix, String> {
        if !config.network {
            return Err("turned off (--no-net)".into());
        }
        if let Some(why) = crate::net::host::tap_unavailable() {
            return Err(why);
        }
        match config.ipv6_prefix {
            Some(prefix) => Ok(prefix),
            None => crate::net::addr::Prefix::load_or_create(&config.data_dir)
                .map_err(|e| e.to_string()),
        }
    }

    /// Runs store work (SQLite, and local checks that take microseconds)
    /// on the store's own few threads ([`db_lane`]): nothing that waits on
    /// a monitor, an agent or a large file belongs here.
    pub(crate) async fn db<T, F>(&self, f: F) -> Result<T, ServiceError>
    where
        F: FnOnce(&Inner) -> Result<T, ServiceError> + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        self.inner
            .db
            .run(move || f(&inner))
            .await
            .map_err(internal)?
    }

    /// Runs work that waits on a monitor (its control socket answers within
    /// `CALL_TIMEOUT`) or on large files (snapshot files, VM directories)
    /// off the async threads, on tokio's blocking pool.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, ServiceError>
    where
        F: FnOnce(&Inner) -> Result<T, ServiceError> + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(internal)?
    }

    /// Subscribes to change events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// How many live VMs have a NIC; `None` when the store cannot say.
    pub fn vms_with_a_nic(&self) -> Option<usize> {
        self.inner.store.live_public_ipv6().ok().map(|v| v.len())
    }

    /// What this host can run.
    pub fn host(&self) -> &HostKind {
        &self.inner.host
    }

    /// Why VMs run without cgroup limits, when they do.
    pub fn supervisor_cgroups_unavailable(&self) -> Option<&str> {
        self.inner.supervisor.cgroups_unavailable()
    }

    // ----- health -----

    /// getHealthz: the daemon and its store answer.
    pub async fn get_healthz(&self) -> Result<serde_json::Value, ServiceError> {
        self.db(|inner| {
            inner.store.schema_version()?;
            Ok(serde_json::json!({ "status": "ok" }))
        })
        .await
    }

    /// getLivez: the process is up.
    pub async fn get_livez(&self) -> Result<serde_json::Value, ServiceError> {
        Ok(serde_json::json!({ "status": "ok" }))
    }

    /// getReadyz: VMs can be created (503 saying why otherwise).
    pub async fn get_readyz(&self) -> Result<serde_json::Value, ServiceError> {
        match &self.inner.guest {
            GuestImage::Ready { .. } => Ok(serde_json::json!({ "status": "ready" })),
            GuestImage::Unavailable(why) => Err(ServiceError::Unavailable(why.clone())),
        }
    }
}

impl Inner {
    /// Sends a change event; nobody listening is fine.
    pub fn emit<T: Serialize>(&self, kind: EventKind, op: EventOp, org_id: &str, data: &T) {
        if let Ok(data) = serde_json::to_value(data) {
            let _ = self.events.send(Event {
                kind,
                op,
                org_id: org_id.to_string(),
                data,
            });
        }
    }
}
