//! The VM and snapshot tables as data: columns, sorting, filtering and the
//! selection, independent of drawing.

use std::cmp::Ordering;

use fastvm_proto::api::{SnapshotObject, Uuid, VmInstance};

use super::{App, View};

/// VM table columns, in display order (the number keys sort by them).
pub const VM_COLUMNS: [&str; 9] = [
    "NAME", "ID", "STATUS", "TYPE", "VCPU", "MEMORY", "DISK", "IPV6", "AGE",
];

/// Snapshot table columns, in display order.
pub const SNAPSHOT_COLUMNS: [&str; 5] = ["NAME", "ID", "STATUS", "VM", "AGE"];

/// A table's sort: a column index and a direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sort {
    /// Index into the view's columns.
    pub column: usize,
    /// Descending instead of ascending.
    pub reverse: bool,
}

impl Sort {
    /// Sorting by `column`: a new column sorts ascending, the same one again
    /// flips the direction.
    pub fn toggle(&mut self, column: usize) {
        if self.column == column {
            self.reverse = !self.reverse;
        } else {
            *self = Sort {
                column,
                reverse: false,
            };
        }
    }

    fn apply(self, o: Ordering) -> Ordering {
        if self.reverse { o.reverse() } else { o }
    }
}

/// The first 8 characters of an id, as the tables show it.
pub fn short_id(id: &Uuid) -> String {
    id.to_string()[..8].to_string()
}

/// How messages name a VM: its name, or its short id when it has none.
pub fn vm_label(vm: &VmInstance) -> String {
    if vm.name.is_empty() {
        short_id(&vm.id)
    } else {
        vm.name.clone()
    }
}

fn vm_cmp(column: usize, a: &VmInstance, b: &VmInstance) -> Ordering {
    let primary = match column {
        0 => a.name.cmp(&b.name),
        1 => a.id.cmp(&b.id),
        2 => a.status.as_str().cmp(b.status.as_str()),
        3 => a.machine_name.cmp(&b.machine_name),
        4 => a.cpu.cmp(&b.cpu),
        5 => a.memory_mib.cmp(&b.memory_mib),
        6 => a.disk_gib.cmp(&b.disk_gib),
        7 => a.public_ipv6.cmp(&b.public_ipv6),
        // Older first, like the other columns' "smallest first".
        _ => b.created_at.cmp(&a.created_at),
    };
    primary
        .then_with(|| a.name.cmp(&b.name))
        .then(a.id.cmp(&b.id))
}

fn snapshot_cmp(column: usize, a: &SnapshotObject, b: &SnapshotObject) -> Ordering {
    let primary = match column {
        0 => a.name.cmp(&b.name),
        1 => a.id.cmp(&b.id),
        2 => a.status.as_str().cmp(b.status.as_str()),
        3 => a.vm_id.cmp(&b.vm_id),
        _ => b.created_at.cmp(&a.created_at),
    };
    primary
        .then_with(|| a.name.cmp(&b.name))
        .then(a.id.cmp(&b.id))
}

fn matches(filter: &str, fields: &[&str]) -> bool {
    filter.is_empty()
        || fields
            .iter()
            .any(|f| f.to_lowercase().contains(&filter.to_lowercase()))
}

impl App {
    /// The VMs the table shows: filtered, then sorted.
    pub fn visible_vms(&self) -> Vec<&VmInstance> {
        let filter = self.filter.text.trim();
        let mut rows: Vec<&VmInstance> = self
            .vms
            .iter()
            .filter(|v| {
                matches(
                    filter,
                    &[
                        &v.name,
                        &v.id.to_string(),
                        v.status.as_str(),
                        &v.machine_name,
                        v.public_ipv6.as_deref().unwrap_or(""),
                    ],
                )
            })
            .collect();
        let sort = self.vm_sort;
        rows.sort_by(|a, b| sort.apply(vm_cmp(sort.column, a, b)));
        rows
    }

    /// The snapshots the table shows: filtered, then sorted.
    pub fn visible_snapshots(&self) -> Vec<&SnapshotObject> {
        let filter = self.filter.text.trim();
        let mut rows: Vec<&SnapshotObject> = self
            .snapshots
            .iter()
            .filter(|s| matches(filter, &[&s.name, &s.id.to_string(), s.status.as_str()]))
            .collect();
        let sort = self.snapshot_sort;
        rows.sort_by(|a, b| sort.apply(snapshot_cmp(sort.column, a, b)));
        rows
    }

    /// Ids of the current view's rows, in display order.
    fn visible_ids(&self) -> Vec<Uuid> {
        match self.view {
            View::Vms => self.visible_vms().iter().map(|v| v.id).collect(),
            View::Snapshots => self.visible_snapshots().iter().map(|s| s.id).collect(),
            View::Quotas => Vec::new(),
        }
    }

    fn selected_slot(&mut self) -> Option<&mut Option<Uuid>> {
        match self.view {
            View::Vms => Some(&mut self.selected_vm),
            View::Snapshots => Some(&mut self.selected_snapshot),
            View::Quotas => None,
        }
    }

    /// Row index of the selection in the current view (0 when the selected
    /// object is not shown, `None` when the table is empty).
    pub fn selected_index(&self) -> Option<usize> {
        let ids = self.visible_ids();
        if ids.is_empty() {
            return None;
        }
        let selected = match self.view {
            View::Vms => self.selected_vm,
            View::Snapshots => self.selected_snapshot,
            View::Quotas => None,
        };
        Some(
            selected
                .and_then(|id| ids.iter().position(|x| *x == id))
                .unwrap_or(0),
        )
    }

    /// Selects row `index` of the current view (clamped).
    pub fn select_index(&mut self, index: usize) {
        let ids = self.visible_ids();
        let Some(last) = ids.len().checked_sub(1) else {
            return;
        };
        let id = ids[index.min(last)];
        if let Some(slot) = self.selected_slot() {
            *slot = Some(id);
        }
        self.dirty = true;
    }

    /// Moves the selection by `delta` rows.
    pub fn move_selection(&mut self, delta: isize) {
        let Some(current) = self.selected_index() else {
            return;
        };
        self.select_index(current.saturating_add_signed(delta));
    }

    /// The selected VM, if the VM view has one.
    pub fn selected_vm(&self) -> Option<&VmInstance> {
        let rows = self.visible_vms();
        let i = match self.view {
            View::Vms => self.selected_index()?,
            _ => rows
                .iter()
                .position(|v| Some(v.id) == self.selected_vm)
                .unwrap_or(0),
        };
        rows.get(i).copied()
    }

    /// The selected snapshot, if the snapshot view has one.
    pub fn selected_snapshot(&self) -> Option<&SnapshotObject> {
        let rows = self.visible_snapshots();
        let i = match self.view {
            View::Snapshots => self.selected_index()?,
            _ => rows
                .iter()
                .position(|s| Some(s.id) == self.selected_snapshot)
                .unwrap_or(0),
        };
        rows.get(i).copied()
    }

    /// Sorts the current view by `column` (again: reverse).
    pub fn sort_by(&mut self, column: usize) {
        match self.view {
            View::Vms if column < VM_COLUMNS.len() => self.vm_sort.toggle(column),
            View::Snapshots if column < SNAPSHOT_COLUMNS.len() => self.snapshot_sort.toggle(column),
            _ => return,
        }
        self.dirty = true;
    }
}
