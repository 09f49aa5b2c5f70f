//! The quota view: one gauge per resource, used against limit.

use fastvm_proto::api::OrgQuotaValues;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Gauge, Paragraph};

use super::titled;
use crate::app::App;

/// One gauge's label, used and limit.
pub fn rows(
    usage: &OrgQuotaValues,
    limits: &OrgQuotaValues,
) -> [(&'static str, u64, u64, &'static str); 4] {
    [
        ("vCPU", usage.vcpu, limits.vcpu, ""),
        ("Memory", usage.memory_mib, limits.memory_mib, " MiB"),
        ("Disk", usage.disk_gib, limits.disk_gib, " GiB"),
        ("Snapshots", usage.snapshot_count, limits.snapshot_count, ""),
    ]
}

/// Fraction used (0 when the limit is 0 and nothing is used, full above it).
pub fn ratio(used: u64, limit: u64) -> f64 {
    if limit == 0 {
        return if used == 0 { 0.0 } else { 1.0 };
    }
    (used as f64 / limit as f64).clamp(0.0, 1.0)
}

fn color(r: f64) -> Color {
    if r >= 0.9 {
        Color::Red
    } else if r >= 0.7 {
        Color::Yellow
    } else {
        Color::Green
    }
}

/// Draws the gauges.
pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let block = titled(" Quotas ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(q) = &app.quotas else {
        frame.render_widget(
            Paragraph::new("loading quotas...".fg(Color::DarkGray)),
            inner,
        );
        return;
    };
    let mut constraints = vec![Constraint::Length(1)];
    constraints.extend([Constraint::Length(3); 4]);
    constraints.push(Constraint::Fill(1));
    let parts = Layout::vertical(constraints).split(inner);
    frame.render_widget(
        Line::from(format!(" organization {}", q.org_id)).fg(Color::DarkGray),
        parts[0],
    );
    for (i, (name, used, limit, unit)) in rows(&q.usage, &q.limits).into_iter().enumerate() {
        let r = ratio(used, limit);
        let gauge = Gauge::default()
            .block(titled(format!(" {name} ")))
            .gauge_style(Style::new().fg(color(r)).bg(Color::Black))
            .ratio(r)
            .label(format!("{used}{unit} / {limit}{unit} ({:.0}%)", r * 100.0));
        frame.render_widget(gauge, parts[i + 1]);
    }
}
