//! Commands for people, over the daemon's local socket (like `docker` or
//! `fly`): `fastvmd vm ls|create|rm|rename`, `fastvmd snapshot
//! create|ls|rm`, `fastvmd completions SHELL`. A VM or snapshot is named by
//! its id, a unique id prefix or its name ([`resolve`]); lists print a
//! table, or JSON with `--json`. An error answer is printed as `error
//! STATUS: message` (exit 1); a daemon that cannot be reached is exit 2.

pub mod console;
pub mod cp;
pub mod exec;
pub mod port_forward;
pub mod resolve;
pub mod table;
pub mod terminal;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use fastvm_proto::api::{SnapshotObject, VmInstance};
use fastvm_proto::socket::SocketRequest;
use serde_json::{Value, json};

/// Exit status when the daemon could not be asked (an error answer is 1).
const EXIT_UNREACHABLE: u8 = 2;

/// The daemon's socket option, shared by every command here.
#[derive(Debug, Clone, Args)]
pub struct SocketArg {
    /// The daemon's socket (default: $FASTVM_SOCKET, else
    /// <data dir>/fastvmd.sock).
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
}

impl SocketArg {
    fn path(&self) -> PathBuf {
        self.socket
            .clone()
            .or_else(|| std::env::var_os("FASTVM_SOCKET").map(PathBuf::from))
            .unwrap_or_else(|| crate::serve::default_data_dir().join(crate::socket::SOCKET_FILE))
    }
}

/// `fastvmd vm ...`
#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// List the VMs: id (first 8 characters), name, status, type, size,
    /// source and address.
    Ls {
        /// Print the VMs as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a VM from a machine type (and an image), or from a snapshot.
    Create(CreateArgs),
    /// Delete VMs (by id, id prefix or name).
    Rm {
        /// The VMs.
        #[arg(required = true, value_name = "VM")]
        vms: Vec<String>,
    },
    /// Rename a VM.
    Rename {
        /// The VM (id, id prefix or name).
        vm: String,
        /// Its new name.
        name: String,
    },
}

/// Arguments of `fastvmd vm create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Machine type (c1m2, c2m4, ...); the default unless --snapshot.
    #[arg(long = "type", value_name = "TYPE", conflicts_with = "snapshot")]
    pub machine_type: Option<String>,
    /// A named image to boot (`fastvmd image ls`; default: the daemon's).
    #[arg(long, value_name = "IMAGE", conflicts_with = "snapshot")]
    pub image: Option<String>,
    /// A snapshot to clone (id, id prefix or name).
    #[arg(long, value_name = "SNAPSHOT")]
    pub snapshot: Option<String>,
    /// Its name (default: one the daemon makes up).
    #[arg(long)]
    pub name: Option<String>,
    /// Disk size in GiB (grow only).
    #[arg(long, value_name = "GIB")]
    pub disk_gib: Option<u64>,
    /// Print the VM as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `fastvmd snapshot ...`
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot a running VM.
    Create {
        /// The VM (id, id prefix or name).
        vm: String,
        /// The snapshot's name (default: one the daemon makes up).
        #[arg(long)]
        name: Option<String>,
        /// Print the snapshot as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the snapshots.
    Ls {
        /// Print the snapshots as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete snapshots (by id, id prefix or name).
    Rm {
        /// The snapshots.
        #[arg(required = true, value_name = "SNAPSHOT")]
        snapshots: Vec<String>,
    },
}

/// Why a command failed.
enum Failure {
    /// The daemon answered with an error, or the arguments name nothing.
    Said(String),
    /// The daemon could not be asked.
    Unreachable(String),
}

impl From<crate::call::CallError> for Failure {
    /// An error answer is the daemon's say; anything else, that it could
    /// not be asked.
    fn from(e: crate::call::CallError) -> Failure {
        match e {
            crate::call::CallError::Refused { .. } => Failure::Said(e.to_string()),
            other => Failure::Unreachable(other.to_string()),
        }
    }
}

impl Failure {
    /// What went wrong, in words.
    fn text(self) -> String {
        match self {
            Failure::Said(why) | Failure::Unreachable(why) => why,
        }
    }
}

type Outcome = Result<(), Failure>;

fn finish(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Said(why)) => {
            eprintln!("{why}");
            ExitCode::from(1)
        }
        Err(Failure::Unreachable(why)) => {
            eprintln!("fastvmd: {why}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

/// Runs `op` and returns its body, or the error it answered.
fn ask(socket: &Path, req: SocketRequest) -> Result<Value, Failure> {
    let resp =
        crate::call::request(socket, &req).map_err(|e| Failure::Unreachable(e.to_string()))?;
    if resp.is_success() {
        return Ok(resp.body);
    }
    Err(Failure::Said(match resp.error_message() {
        Some(msg) => format!("error {}: {msg}", resp.status),
        None => format!("error {}: {}", resp.status, resp.body),
    }))
}

fn decode<T: serde::de::DeserializeOwned>(body: Value, what: &str) -> Result<T, Failure> {
    serde_json::from_value(body)
        .map_err(|e| Failure::Unreachable(format!("the daemon's {what} do not read: {e}")))
}

fn vms(socket: &Path) -> Result<Vec<VmInstance>, Failure> {
    let all: Vec<VmInstance> = decode(ask(socket, SocketRequest::new(1, "listVMs"))?, "VMs")?;
    Ok(all.into_iter().filter(|v| v.deleted_at.is_none()).collect())
}

fn snapshots(socket: &Path) -> Result<Vec<SnapshotObject>, Failure> {
    decode(
        ask(socket, SocketRequest::new(1, "listSnapshots"))?,
        "snapshots",
    )
}

fn print_json(value: &impl serde::Serialize) -> Outcome {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::Unreachable(format!("JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// The table of `vms`.
pub fn vm_table(vms: &[VmInstance]) -> String {
    let rows: Vec<Vec<String>> = vms
        .iter()
        .map(|v| {
            vec![
                table::short_id(&v.id.to_string()),
                v.name.clone(),
                v.status.to_string(),
                v.machine_name.clone(),
                format!("{}/{}M/{}G", v.cpu, v.memory_mib, v.disk_gib),
                v.source_name.clone().unwrap_or_default(),
                v.public_ipv6.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table::render(
        &[
            "ID",
            "NAME",
            "STATUS",
            "TYPE",
            "CPU/MEM/DISK",
            "SOURCE",
            "IPV6",
        ],
        &rows,
    )
}

/// The table of `snapshots`.
pub fn snapshot_table(snapshots: &[SnapshotObject]) -> String {
    let rows: Vec<Vec<String>> = snapshots
        .iter()
        .map(|s| {
            vec![
                table::short_id(&s.id.to_string()),
                s.name.clone(),
                s.status.to_string(),
                table::short_id(&s.vm_id.to_string()),
                s.created_at.clone(),
            ]
        })
        .collect();
    table::render(&["ID", "NAME", "STATUS", "VM", "CREATED"], &rows)
}

/// Runs `fastvmd vm ...`.
pub fn run_vm(command: VmCommand, socket: &SocketArg) -> ExitCode {
    let socket = socket.path();
    finish(vm(command, &socket))
}

fn vm(command: VmCommand, socket: &Path) -> Outcome {
    match command {
        VmCommand::Ls { json } => {
            let vms = vms(socket)?;
            if json {
                return print_json(&vms);
            }
            print!("{}", vm_table(&vms));
            Ok(())
        }
        VmCommand::Create(args) => create(args, socket),
        VmCommand::Rm { vms: wanted } => {
            remove_each(socket, &vms(socket)?, &wanted, "VM", "deleteVM")
        }
        VmCommand::Rename { vm, name } => {
            let all = vms(socket)?;
            let found = resolve::resolve(&all, &vm, "VM").map_err(Failure::Said)?;
            let id = found.id.to_string();
            let req = SocketRequest::new(1, "updateVM")
                .param("id", &id)
                .body(json!({ "name": name }));
            ask(socket, req)?;
            println!("renamed {id}: {} -> {name}", found.name);
            Ok(())
        }
    }
}

fn create(args: CreateArgs, socket: &Path) -> Outcome {
    let mut body = serde_json::Map::new();
    match &args.snapshot {
        Some(wanted) => {
            let all = snapshots(socket)?;
            let snap = resolve::resolve(&all, wanted, "snapshot").map_err(Failure::Said)?;
            body.insert("snapshotId".into(), json!(snap.id.to_string()));
        }
        None => {
            let machine = args.machine_type.clone().unwrap_or_else(|| "c1m2".into());
            body.insert("machineType".into(), json!(machine));
        }
    }
    if let Some(image) = &args.image {
        body.insert("image".into(), json!(image));
    }
    if let Some(name) = &args.name {
        body.insert("name".into(), json!(name));
    }
    if let Some(disk) = args.disk_gib {
        body.insert("diskGiB".into(), json!(disk));
    }
    let created = ask(
        socket,
        SocketRequest::new(1, "createVM").body(Value::Object(body)),
    )?;
    let vm: VmInstance = decode(created, "VM")?;
    if args.json {
        return print_json(&vm);
    }
    print!("{}", vm_table(std::slice::from_ref(&vm)));
    Ok(())
}

/// Runs `fastvmd snapshot ...`.
pub fn run_snapshot(command: SnapshotCommand, socket: &SocketArg) -> ExitCode {
    let socket = socket.path();
    finish(snapshot(command, &socket))
}

fn snapshot(command: SnapshotCommand, socket: &Path) -> Outcome {
    match command {
        SnapshotCommand::Create { vm, name, json } => {
            let all = vms(socket)?;
            let found = resolve::resolve(&all, &vm, "VM").map_err(Failure::Said)?;
            let mut body = json!({ "vmId": found.id.to_string() });
            if let Some(name) = name {
                body["name"] = json!(name);
            }
            let made = ask(socket, SocketRequest::new(1, "createSnapshot").body(body))?;
            let snap: SnapshotObject = decode(made, "snapshot")?;
            if json {
                return print_json(&snap);
            }
            print!("{}", snapshot_table(std::slice::from_ref(&snap)));
            Ok(())
        }
        SnapshotCommand::Ls { json } => {
            let all = snapshots(socket)?;
            if json {
                return print_json(&all);
            }
            print!("{}", snapshot_table(&all));
            Ok(())
        }
        SnapshotCommand::Rm { snapshots: wanted } => remove_each(
            socket,
            &snapshots(socket)?,
            &wanted,
            "snapshot",
            "deleteSnapshot",
        ),
    }
}

/// Deletes each of `wanted` (among `all`) with `op`; goes on past one that
/// fails and reports every failure at the end.
fn remove_each<T: resolve::Named>(
    socket: &Path,
    all: &[T],
    wanted: &[String],
    what: &str,
    op: &str,
) -> Outcome {
    let mut failed = Vec::new();
    for w in wanted {
        let done = resolve::resolve(all, w, what)
            .map_err(Failure::Said)
            .and_then(|item| {
                let id = item.id();
                ask(socket, SocketRequest::new(1, op).param("id", &id))?;
                println!("deleted {id} ({})", item.name());
                Ok(())
            });
        match done {
            Ok(()) => {}
            Err(Failure::Said(why)) => failed.push(format!("{w}: {why}")),
            Err(unreachable) => return Err(unreachable),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::Said(failed.join("\n")))
    }
}
