//! Drawing: one function per part of the screen, all reading [`App`]. The
//! layout is computed by [`layout`], which mouse handling uses too.

mod console;
mod copy;
mod detail;
mod exec;
mod overlays;
mod quotas;
mod tables;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

use crate::app::{App, ConnState, Mode, View};
use crate::console::ESCAPE_KEY_LABEL;

pub use console::draw_console;
pub use exec::{exec_header, exec_rows};
pub use overlays::centered;
pub use tables::column_spans;

/// Column widths of the tables, for mouse hit-testing.
pub mod tables_widths {
    use ratatui::layout::Constraint;

    /// The VM table's.
    pub const VM: [Constraint; 9] = super::tables::VM_WIDTHS;
    /// The snapshot table's.
    pub const SNAPSHOT: [Constraint; 5] = super::tables::SNAPSHOT_WIDTHS;
}

/// Smallest usable terminal (columns, rows); below it a notice is shown.
pub const MIN_SIZE: (u16, u16) = (60, 15);

/// Width of the detail pane when it sits on the right.
const DETAIL_WIDTH: u16 = 48;

/// Where each part of the screen goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Areas {
    /// The view tabs (top line).
    pub tabs: Rect,
    /// The current view's table or gauges.
    pub main: Rect,
    /// The detail pane of the selection (may be empty).
    pub detail: Rect,
    /// The console pane (empty when no console is open).
    pub console: Rect,
    /// The status line.
    pub status: Rect,
    /// The key hints.
    pub footer: Rect,
}

/// The layout for a terminal of `area`, or `None` when it is too small.
pub fn layout(area: Rect, app: &App) -> Option<Areas> {
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        return None;
    }
    let [tabs, body, status, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let (upper, console) = if app.console.is_some() {
        let [u, c] =
            Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(body);
        (u, c)
    } else {
        (body, Rect::default())
    };
    let (main, detail) = if app.view == View::Quotas {
        (upper, Rect::default())
    } else if upper.width >= 140 {
        let [m, d] = Layout::horizontal([Constraint::Fill(1), Constraint::Length(DETAIL_WIDTH)])
            .areas(upper);
        (m, d)
    } else if app.console.is_none() {
        let height = (upper.height * 2 / 5).clamp(4, 9);
        let [m, d] =
            Layout::vertical([Constraint::Fill(1), Constraint::Length(height)]).areas(upper);
        (m, d)
    } else {
        (upper, Rect::default())
    };
    Some(Areas {
        tabs,
        main,
        detail,
        console,
        status,
        footer,
    })
}

/// Draws the whole dashboard.
pub fn draw(frame: &mut Frame, app: &mut App) {
    let area = frame.area();
    let Some(areas) = layout(area, app) else {
        draw_too_small(frame, area);
        return;
    };
    draw_tabs(frame, areas.tabs, app);
    match app.view {
        View::Vms => tables::draw_vms(frame, areas.main, app),
        View::Snapshots => tables::draw_snapshots(frame, areas.main, app),
        View::Quotas => quotas::draw(frame, areas.main, app),
    }
    if !areas.detail.is_empty() {
        detail::draw(frame, areas.detail, app);
    }
    if let Some(pane) = app.console.as_mut() {
        draw_console(frame, areas.console, pane, app.mode == Mode::Console);
    }
    draw_status(frame, areas.status, app);
    draw_footer(frame, areas.footer, app);
    overlays::draw(frame, area, app);
}

fn draw_too_small(frame: &mut Frame, area: Rect) {
    let text = vec![
        Line::from("terminal too small".bold()),
        Line::from(format!(
            "{}x{}, need {}x{}",
            area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
        )),
        Line::from("q quits"),
    ];
    let para = Paragraph::new(text)
        .centered()
        .wrap(Wrap { trim: true })
        .style(Style::new().fg(Color::Yellow));
    let y = area.height.saturating_sub(3) / 2;
    let inner = Rect {
        y: area.y + y,
        height: area.height.saturating_sub(y),
        ..area
    };
    frame.render_widget(para, inner);
}

/// The x ranges of the tab titles on the tab line, for mouse clicks.
pub fn tab_spans(area: Rect) -> Vec<(View, u16, u16)> {
    let mut x = area.x + 1;
    let mut out = Vec::new();
    for v in View::ALL {
        let w = v.title().len() as u16 + 2;
        out.push((v, x, x + w));
        x += w + 1;
    }
    out
}

fn draw_tabs(frame: &mut Frame, area: Rect, app: &App) {
    let mut spans = vec![Span::raw(" ")];
    for v in View::ALL {
        let count = format!(" {} ", v.title());
        let style = if v == app.view {
            Style::new().fg(Color::Black).bg(Color::Cyan).bold()
        } else {
            Style::new().fg(Color::Cyan)
        };
        spans.push(Span::styled(count, style));
        spans.push(Span::raw(" "));
    }
    let conn = match &app.conn {
        ConnState::Connecting => Span::styled("connecting", Style::new().fg(Color::Yellow)),
        ConnState::Connected => Span::styled("● live", Style::new().fg(Color::Green)),
        ConnState::Down(_) => Span::styled("● daemon down", Style::new().fg(Color::Red)),
    };
    let mut right = vec![];
    if app.paused {
        right.push(Span::styled(
            format!(" PAUSED ({} waiting) ", app.paused_events.len()),
            Style::new().fg(Color::Black).bg(Color::Yellow),
        ));
        right.push(Span::raw(" "));
    }
    right.push(Span::styled(
        format!(
            "{} VMs · {} snapshots  ",
            app.vms.len(),
            app.snapshots.len()
        ),
        Style::new().fg(Color::DarkGray),
    ));
    right.push(conn);
    right.push(Span::raw(" "));
    let right = Line::from(right);
    let right_w = right.width() as u16;
    let [l, r] = Layout::horizontal([Constraint::Fill(1), Constraint::Length(right_w)]).areas(area);
    frame.render_widget(Line::from(spans), l);
    frame.render_widget(right.right_aligned(), r);
}

fn draw_status(frame: &mut Frame, area: Rect, app: &App) {
    let line = if app.mode == Mode::Filter || !app.filter.text.is_empty() {
        let mut spans = vec![
            Span::styled("/", Style::new().fg(Color::Yellow).bold()),
            Span::raw(app.filter.text.clone()),
        ];
        if app.mode == Mode::Filter {
            spans.push(Span::styled(
                " ",
                Style::new().add_modifier(Modifier::REVERSED),
            ));
        }
        Line::from(spans)
    } else if let Some(s) = &app.status {
        let style = if s.error {
            Style::new().fg(Color::Red).bold()
        } else {
            Style::new().fg(Color::Gray)
        };
        Line::from(Span::styled(s.text.clone(), style))
    } else {
        Line::default()
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The key hints for the current mode.
pub fn hints(app: &App) -> Vec<(&'static str, &'static str)> {
    match &app.mode {
        Mode::Console => vec![
            (ESCAPE_KEY_LABEL, "leave console"),
            ("keys", "go to the VM"),
        ],
        Mode::Filter => vec![("Enter", "keep"), ("Esc", "clear")],
        Mode::Help => vec![("Esc ?", "close")],
        Mode::Palette(_) => vec![("↑↓", "choose"), ("Enter", "run"), ("Esc", "close")],
        Mode::Form(_) => vec![
            ("Tab", "next field"),
            ("←→", "choose"),
            ("Enter", "create"),
            ("Esc", "cancel"),
        ],
        Mode::Prompt(_) => vec![("Enter", "ok"), ("Esc", "cancel")],
        Mode::Confirm(_) => vec![("y", "yes"), ("n Esc", "no")],
        Mode::Exec(_) => vec![
            ("j k PgUp PgDn", "scroll"),
            ("G", "follow"),
            ("Ctrl-C", "interrupt"),
            ("Esc", "close"),
        ],
        Mode::CopyForm(_) => vec![
            ("Tab", "next field"),
            ("←→", "direction"),
            ("Enter", "copy"),
            ("Esc", "cancel"),
        ],
        Mode::Copy(_) => vec![("Esc", "cancel the copy")],
        Mode::Firewall(_) => vec![("m", "toggle mode"), ("Esc", "close")],
        Mode::Normal => match app.view {
            View::Vms => vec![
                ("?", "help"),
                (":", "cmd"),
                ("c", "create"),
                ("e", "exec"),
                ("o", "console"),
                ("s", "snapshot"),
                ("r", "rename"),
                ("d", "delete"),
                ("f", "firewall"),
                ("/", "filter"),
                ("p", "pause"),
                ("q", "quit"),
            ],
            View::Snapshots => vec![
                ("?", "help"),
                (":", "cmd"),
                ("c", "create VM"),
                ("r", "rename"),
                ("d", "delete"),
                ("/", "filter"),
                ("1-5", "sort"),
                ("p", "pause"),
                ("q", "quit"),
            ],
            View::Quotas => vec![
                ("Tab", "views"),
                ("p", "pause"),
                ("?", "help"),
                ("q", "quit"),
            ],
        },
    }
}

fn draw_footer(frame: &mut Frame, area: Rect, app: &App) {
    let mut spans = Vec::new();
    for (key, what) in hints(app) {
        spans.push(Span::styled(
            format!(" {key} "),
            Style::new().fg(Color::Black).bg(Color::DarkGray),
        ));
        spans.push(Span::raw(format!(" {what}  ")));
    }
    frame.render_widget(Line::from(spans), area);
}

/// A bordered block with a title.
fn titled(title: impl Into<Line<'static>>) -> Block<'static> {
    Block::bordered()
        .title(title)
        .border_style(Style::new().fg(Color::DarkGray))
}
