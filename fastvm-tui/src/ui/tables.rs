//! The VM and snapshot tables.

use fastvm_proto::api::{SnapshotStatus, VmStatus};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Row, Table};

use super::titled;
use crate::app::table::{short_id, vm_label};
use crate::app::{App, SNAPSHOT_COLUMNS, Sort, VM_COLUMNS};

/// Column widths of the VM table.
pub const VM_WIDTHS: [Constraint; 9] = [
    Constraint::Fill(2),
    Constraint::Length(8),
    Constraint::Length(12),
    Constraint::Length(6),
    Constraint::Length(4),
    Constraint::Length(9),
    Constraint::Length(6),
    Constraint::Fill(3),
    Constraint::Length(5),
];

/// Column widths of the snapshot table.
pub const SNAPSHOT_WIDTHS: [Constraint; 5] = [
    Constraint::Fill(2),
    Constraint::Length(8),
    Constraint::Length(9),
    Constraint::Fill(1),
    Constraint::Length(5),
];

/// Spaces between columns.
const COLUMN_SPACING: u16 = 1;

/// Colour of a VM status.
pub fn vm_status_color(s: VmStatus) -> Color {
    match s {
        VmStatus::Running => Color::Green,
        VmStatus::Provisioning => Color::Yellow,
        VmStatus::Stopped => Color::Gray,
        VmStatus::Deleting => Color::Magenta,
        VmStatus::Error => Color::Red,
    }
}

/// Colour of a snapshot status.
pub fn snapshot_status_color(s: SnapshotStatus) -> Color {
    match s {
        SnapshotStatus::Ready => Color::Green,
        SnapshotStatus::Creating => Color::Yellow,
        SnapshotStatus::Error => Color::Red,
    }
}

/// The x ranges of the columns of a table drawn in `area`, for mouse clicks
/// on the header (same split as the table's own).
pub fn column_spans(area: Rect, widths: &[Constraint]) -> Vec<(u16, u16)> {
    let inner = Rect {
        x: area.x + 1,
        width: area.width.saturating_sub(2),
        ..area
    };
    Layout::horizontal(widths.iter().copied())
        .spacing(COLUMN_SPACING)
        .split(inner)
        .iter()
        .map(|r| (r.x, r.x + r.width))
        .collect()
}

fn header(columns: &[&str], sort: Sort) -> Row<'static> {
    let cells = columns.iter().enumerate().map(|(i, name)| {
        let mut text = (*name).to_string();
        if i == sort.column {
            text.push(if sort.reverse { '▼' } else { '▲' });
        }
        Cell::from(text)
    });
    Row::new(cells).style(Style::new().fg(Color::Yellow).bold())
}

fn selected_style() -> Style {
    Style::new()
        .bg(Color::DarkGray)
        .add_modifier(Modifier::BOLD)
}

fn title(what: &str, shown: usize, total: usize, filter: &str) -> Line<'static> {
    if filter.is_empty() {
        Line::from(format!(" {what} ({total}) ").bold())
    } else {
        Line::from(format!(" {what} ({shown} of {total}, filter /{filter}) ").bold())
    }
}

/// Draws the VM table.
pub fn draw_vms(frame: &mut Frame, area: Rect, app: &mut App) {
    let selected = app.selected_index();
    let rows: Vec<Row> = app
        .visible_vms()
        .iter()
        .map(|vm| {
            Row::new(vec![
                if vm.name.is_empty() {
                    Cell::from("(no name)").fg(Color::DarkGray)
                } else {
                    Cell::from(vm.name.clone())
                },
                Cell::from(short_id(&vm.id)).fg(Color::DarkGray),
                Cell::from(vm.status.as_str()).fg(vm_status_color(vm.status)),
                Cell::from(vm.machine_name.clone()),
                Cell::from(vm.cpu.to_string()),
                Cell::from(format!("{} MiB", vm.memory_mib)),
                Cell::from(format!("{} GiB", vm.disk_gib)),
                Cell::from(vm.public_ipv6.clone().unwrap_or_else(|| "-".into())),
                Cell::from(app.age(&vm.created_at)),
            ])
        })
        .collect();
    let shown = rows.len();
    let empty = shown == 0;
    let table = Table::new(rows, VM_WIDTHS)
        .header(header(&VM_COLUMNS, app.vm_sort))
        .column_spacing(COLUMN_SPACING)
        .row_highlight_style(selected_style())
        .block(titled(title("VMs", shown, app.vms.len(), &app.filter.text)));
    app.vm_table.select(selected);
    frame.render_stateful_widget(table, area, &mut app.vm_table);
    if empty {
        draw_empty(frame, area, app, "no VMs yet: press c to create one");
    }
}

/// Draws the snapshot table.
pub fn draw_snapshots(frame: &mut Frame, area: Rect, app: &mut App) {
    let selected = app.selected_index();
    let rows: Vec<Row> = app
        .visible_snapshots()
        .iter()
        .map(|s| {
            let vm = app.vm(s.vm_id).map_or_else(|| short_id(&s.vm_id), vm_label);
            Row::new(vec![
                Cell::from(s.name.clone()),
                Cell::from(short_id(&s.id)).fg(Color::DarkGray),
                Cell::from(s.status.as_str()).fg(snapshot_status_color(s.status)),
                Cell::from(vm),
                Cell::from(app.age(&s.created_at)),
            ])
        })
        .collect();
    let shown = rows.len();
    let empty = shown == 0;
    let table = Table::new(rows, SNAPSHOT_WIDTHS)
        .header(header(&SNAPSHOT_COLUMNS, app.snapshot_sort))
        .column_spacing(COLUMN_SPACING)
        .row_highlight_style(selected_style())
        .block(titled(title(
            "Snapshots",
            shown,
            app.snapshots.len(),
            &app.filter.text,
        )));
    app.snapshot_table.select(selected);
    frame.render_stateful_widget(table, area, &mut app.snapshot_table);
    if empty {
        draw_empty(frame, area, app, "no snapshots: select a VM and press s");
    }
}

fn draw_empty(frame: &mut Frame, area: Rect, app: &App, hint: &str) {
    let text = if !app.filter.text.is_empty() {
        "nothing matches the filter (Esc clears it)".to_string()
    } else if !app.vms_loaded {
        "loading...".to_string()
    } else {
        hint.to_string()
    };
    let y = area.y + area.height / 2;
    if area.height < 4 {
        return;
    }
    let line = Rect {
        x: area.x + 1,
        y,
        width: area.width.saturating_sub(2),
        height: 1,
    };
    frame.render_widget(Line::from(text).centered().fg(Color::DarkGray), line);
}
