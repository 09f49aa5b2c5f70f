//! The file-copy overlays: the form (direction, local path, VM path, and
//! why the last submit was refused), then the progress of the running copy
//! (a gauge, bytes of the total, MiB/s).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Gauge, Paragraph};

use super::overlays::{centered, input_line, prefixed};
use super::titled;
use crate::app::{CopyField, CopyForm, CopyView};
use crate::client::CopyDirection;

/// Width of the labels in the form.
const LABEL: usize = 10;

/// The form's lines.
pub fn form_lines(f: &CopyForm) -> Vec<Line<'static>> {
    let label = |field: CopyField, name: &'static str| {
        let style = if f.focus == field {
            Style::new().fg(Color::Yellow).bold()
        } else {
            Style::new().fg(Color::DarkGray)
        };
        Span::styled(format!("{name:<LABEL$}"), style)
    };
    let note = |text: &'static str| Line::from(format!("{:LABEL$}{text}", "").fg(Color::DarkGray));
    let chooser = if f.focus == CopyField::Direction {
        Style::new().add_modifier(Modifier::REVERSED)
    } else {
        Style::new()
    };
    let (direction, local_note, guest_note) = match f.direction {
        CopyDirection::Upload => (
            "into the VM",
            "(an existing file; its permission bits are kept)",
            "(absolute; replaced whole once all bytes arrived)",
        ),
        CopyDirection::Download => (
            "out of the VM",
            "(a file to write, or a directory to put it in)",
            "(absolute path of the file to fetch)",
        ),
    };
    let mut lines = vec![
        Line::from(vec![
            label(CopyField::Direction, "direction"),
            Span::raw("◀ "),
            Span::styled(direction, chooser),
            Span::raw(" ▶"),
        ]),
        note("(←→ or Space switch)"),
        prefixed(
            label(CopyField::Local, "local"),
            input_line(&f.local, f.focus == CopyField::Local),
        ),
        note(local_note),
        prefixed(
            label(CopyField::Guest, "VM path"),
            input_line(&f.guest, f.focus == CopyField::Guest),
        ),
        note(guest_note),
        Line::default(),
    ];
    lines.push(match &f.error {
        Some(e) => Line::from(e.clone().fg(Color::Red)),
        None => Line::from("Enter copies · Tab next field · Esc cancels".fg(Color::DarkGray)),
    });
    lines
}

/// Draws the copy form over `area`.
pub fn draw_form(frame: &mut Frame, area: Rect, f: &CopyForm) {
    let r = centered(area, 72, 10);
    frame.render_widget(Clear, r);
    let title = format!(" Copy a file — {} ", f.vm_name);
    frame.render_widget(Paragraph::new(form_lines(f)).block(titled(title.bold())), r);
}

/// The progress overlay's text lines (above and below the gauge).
pub fn progress_lines(v: &CopyView) -> (Vec<Line<'static>>, Line<'static>) {
    let local = v.request.local.display().to_string();
    let guest = format!("{}:{}", v.vm_name, v.request.guest);
    let (from, to) = match v.request.direction {
        CopyDirection::Upload => (local, guest),
        CopyDirection::Download => (guest, local),
    };
    let head = vec![
        prefixed("from ".fg(Color::DarkGray), Line::from(from)),
        prefixed("to   ".fg(Color::DarkGray), Line::from(to)),
    ];
    let status = if v.started {
        Line::from(v.progress_text())
    } else {
        Line::from("waiting for the daemon...".fg(Color::DarkGray))
    };
    (head, status)
}

/// Draws the progress of a running copy over `area`.
pub fn draw_progress(frame: &mut Frame, area: Rect, v: &CopyView) {
    let r = centered(area, 72, 7);
    frame.render_widget(Clear, r);
    let title = format!(
        " copying {} {} — Esc cancels ",
        v.request.direction.preposition(),
        v.vm_name
    );
    let block = titled(title.bold());
    let inner = block.inner(r);
    frame.render_widget(block, r);
    let [head, gauge, status] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(2),
        Constraint::Length(1),
    ])
    .areas(inner);
    let (head_lines, status_line) = progress_lines(v);
    frame.render_widget(Paragraph::new(head_lines), head);
    let gauge_row = Rect {
        y: gauge.y + 1,
        height: 1,
        ..gauge
    }
    .intersection(inner);
    let ratio = v.ratio().unwrap_or(0.0);
    let label = match v.ratio() {
        Some(r) => format!("{:.0}%", r * 100.0),
        None => String::new(),
    };
    frame.render_widget(
        Gauge::default()
            .ratio(ratio)
            .label(label)
            .gauge_style(Style::new().fg(Color::Cyan).bg(Color::DarkGray)),
        gauge_row,
    );
    frame.render_widget(Paragraph::new(status_line), status);
}
