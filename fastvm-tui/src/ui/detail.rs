//! The detail pane: every field of the selected VM or snapshot.

use fastvm_proto::api::{FirewallPolicy, SnapshotObject, VmInstance};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::tables::{snapshot_status_color, vm_status_color};
use super::titled;
use crate::app::{App, View};

fn field(name: &'static str, value: impl Into<String>) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{name:<9}"), Style::new().fg(Color::DarkGray)),
        Span::raw(value.into()),
    ])
}

fn colored(name: &'static str, value: &str, color: Color) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{name:<9}"), Style::new().fg(Color::DarkGray)),
        Span::styled(value.to_string(), Style::new().fg(color).bold()),
    ])
}

fn firewall(policy: &FirewallPolicy) -> String {
    format!("{} ({} rules)", policy.mode, policy.ingress.len())
}

/// The lines describing `vm`.
pub fn vm_lines(app: &App, vm: &VmInstance) -> Vec<Line<'static>> {
    vec![
        field("name", vm.name.clone()),
        field("id", vm.id.to_string()),
        colored("status", vm.status.as_str(), vm_status_color(vm.status)),
        field("type", vm.machine_name.clone()),
        field(
            "source",
            vm.source_name.clone().unwrap_or_else(|| "-".into()),
        ),
        field("vCPU", vm.cpu.to_string()),
        field("memory", format!("{} MiB", vm.memory_mib)),
        field("disk", format!("{} GiB", vm.disk_gib)),
        field("IPv6", vm.public_ipv6.clone().unwrap_or_else(|| "-".into())),
        field("firewall", firewall(&vm.firewall)),
        field("created", vm.created_at.clone()),
        field("age", app.age(&vm.created_at)),
    ]
}

/// The lines describing `snap`.
pub fn snapshot_lines(app: &App, snap: &SnapshotObject) -> Vec<Line<'static>> {
    let vm = app.vm(snap.vm_id).map_or_else(
        || snap.vm_id.to_string(),
        |v| format!("{} ({})", v.name, snap.vm_id),
    );
    vec![
        field("name", snap.name.clone()),
        field("id", snap.id.to_string()),
        colored(
            "status",
            snap.status.as_str(),
            snapshot_status_color(snap.status),
        ),
        field("VM", vm),
        field("firewall", firewall(&snap.firewall)),
        field("created", snap.created_at.clone()),
        field("age", app.age(&snap.created_at)),
    ]
}

/// Draws the pane for the current view's selection.
pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let lines = match app.view {
        View::Vms => app.selected_vm().map(|vm| vm_lines(app, vm)),
        View::Snapshots => app.selected_snapshot().map(|s| snapshot_lines(app, s)),
        View::Quotas => None,
    }
    .unwrap_or_else(|| vec![Line::from("nothing selected".fg(Color::DarkGray))]);
    let para = Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .block(titled(" Detail "));
    frame.render_widget(para, area);
}
