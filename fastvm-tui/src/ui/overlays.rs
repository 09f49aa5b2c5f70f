//! Centered overlays: help, command palette, create form, prompts,
//! confirmations, the exec output pane, the file-copy form and progress,
//! and the firewall view.

use fastvm_proto::api::FirewallMode;
use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Clear, Paragraph, Row, Table, Wrap};

use super::titled;
use crate::app::forms::Source;
use crate::app::keys::{HELP, palette_matches};
use crate::app::{App, CreateForm, FormField, Mode, Palette, Prompt, TextInput};

/// A `width` x `height` rectangle centered in `area` (clamped to it).
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [h] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(area);
    let [v] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(h);
    v
}

/// Draws the overlay of the current mode, if it has one.
pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    match &app.mode {
        Mode::Help => help(frame, area),
        Mode::Palette(p) => palette(frame, area, p),
        Mode::Form(f) => form(frame, area, f),
        Mode::Prompt(p) => prompt(frame, area, p),
        Mode::Confirm(c) => confirm(frame, area, &c.question),
        Mode::Exec(e) => super::exec::draw(frame, area, e),
        Mode::CopyForm(f) => super::copy::draw_form(frame, area, f),
        Mode::Copy(v) => super::copy::draw_progress(frame, area, v),
        Mode::Firewall(id) => firewall(frame, area, app, *id),
        Mode::Normal | Mode::Filter | Mode::Console => {}
    }
}

fn help(frame: &mut Frame, area: Rect) {
    let rows: Vec<Row> = HELP
        .iter()
        .map(|(section, keys, what)| {
            Row::new(vec![
                Span::styled(*section, Style::new().fg(Color::DarkGray)),
                Span::styled(*keys, Style::new().fg(Color::Yellow).bold()),
                Span::raw(*what),
            ])
        })
        .collect();
    let height = rows.len() as u16 + 2;
    let r = centered(area, 72, height);
    frame.render_widget(Clear, r);
    let table = Table::new(
        rows,
        [
            Constraint::Length(10),
            Constraint::Length(16),
            Constraint::Fill(1),
        ],
    )
    .block(titled(" Help — Esc closes ".bold()));
    frame.render_widget(table, r);
}

/// The text of `input` with a block cursor.
pub(super) fn input_line(input: &TextInput, focused: bool) -> Line<'static> {
    let chars: Vec<char> = input.text.chars().collect();
    let before: String = chars[..input.cursor.min(chars.len())].iter().collect();
    let at: String = chars
        .get(input.cursor)
        .map_or(" ".into(), |c| c.to_string());
    let after: String = chars.iter().skip(input.cursor + 1).collect();
    let cursor = if focused {
        Style::new().add_modifier(Modifier::REVERSED)
    } else {
        Style::new()
    };
    Line::from(vec![
        Span::raw(before),
        Span::styled(at, cursor),
        Span::raw(after),
    ])
}

/// `first` followed by the spans of `rest`.
pub(super) fn prefixed(first: Span<'static>, rest: Line<'static>) -> Line<'static> {
    let mut spans = vec![first];
    spans.extend(rest.spans);
    Line::from(spans)
}

fn palette(frame: &mut Frame, area: Rect, p: &Palette) {
    let found = palette_matches(&p.input.text);
    let r = centered(area, 60, found.len() as u16 + 4);
    frame.render_widget(Clear, r);
    let mut lines = vec![
        prefixed(
            Span::styled(":", Style::new().fg(Color::Yellow)),
            input_line(&p.input, true),
        ),
        Line::default(),
    ];
    if found.is_empty() {
        lines.push(Line::from("no matching command".fg(Color::DarkGray)));
    }
    for (i, (name, what, _)) in found.iter().enumerate() {
        let style = if i == p.selected {
            Style::new().bg(Color::DarkGray).bold()
        } else {
            Style::new()
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{name:<12}"), style.fg(Color::Cyan)),
            Span::styled(what.to_string(), style),
        ]));
    }
    frame.render_widget(Paragraph::new(lines).block(titled(" Command ".bold())), r);
}

fn form(frame: &mut Frame, area: Rect, f: &CreateForm) {
    let r = centered(area, 64, 13);
    frame.render_widget(Clear, r);
    let label = |field: FormField, name: &'static str| {
        let style = if f.focus == field {
            Style::new().fg(Color::Yellow).bold()
        } else {
            Style::new().fg(Color::DarkGray)
        };
        Span::styled(format!("{name:<9}"), style)
    };
    let source = f
        .sources
        .get(f.source)
        .map_or_else(|| "-".into(), |s| s.label());
    let chooser = |field: FormField| {
        if f.focus == field {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        }
    };
    let snapshot = matches!(f.sources.get(f.source), Some(Source::Snapshot(..)));
    let image_note = if snapshot {
        "         (a snapshot brings its own image)".to_string()
    } else {
        format!(
            "         {} of {} (the daemon's default, then imported images)",
            f.image + 1,
            f.images.len() + 1
        )
    };
    let mut lines = vec![
        prefixed(
            label(FormField::Name, "name"),
            input_line(&f.name, f.focus == FormField::Name),
        ),
        Line::from("         (empty: the daemon picks one)".fg(Color::DarkGray)),
        Line::from(vec![
            label(FormField::Source, "source"),
            Span::raw("◀ "),
            Span::styled(source, chooser(FormField::Source)),
            Span::raw(" ▶"),
        ]),
        Line::from(
            format!(
                "         {} of {} (machine types, then ready snapshots)",
                f.source + 1,
                f.sources.len()
            )
            .fg(Color::DarkGray),
        ),
        Line::from(vec![
            label(FormField::Image, "image"),
            Span::raw("◀ "),
            Span::styled(f.image_label().to_string(), chooser(FormField::Image)),
            Span::raw(" ▶"),
        ]),
        Line::from(image_note.fg(Color::DarkGray)),
        prefixed(
            label(FormField::Disk, "disk GiB"),
            input_line(&f.disk, f.focus == FormField::Disk),
        ),
        Line::from("         (empty: 10, or the snapshot's)".fg(Color::DarkGray)),
        Line::default(),
    ];
    if let Some(e) = &f.error {
        lines.push(Line::from(e.clone().fg(Color::Red)));
    } else {
        lines.push(Line::from(
            "Enter creates · Tab next field · Esc cancels".fg(Color::DarkGray),
        ));
    }
    frame.render_widget(Paragraph::new(lines).block(titled(" Create VM ".bold())), r);
}

fn prompt(frame: &mut Frame, area: Rect, p: &Prompt) {
    let r = centered(area, 64, 3);
    frame.render_widget(Clear, r);
    let title = format!(" {} ", p.title);
    let para = Paragraph::new(prefixed("> ".fg(Color::Yellow), input_line(&p.input, true)))
        .block(titled(title.bold()));
    frame.render_widget(para, r);
    let x = r.x + 3 + p.input.cursor as u16;
    if x < r.right().saturating_sub(1) {
        frame.set_cursor_position(Position::new(x, r.y + 1));
    }
}

fn confirm(frame: &mut Frame, area: Rect, question: &str) {
    let r = centered(area, 50, 5);
    frame.render_widget(Clear, r);
    let text = Text::from(vec![
        Line::from(question.to_string().bold()),
        Line::default(),
        Line::from(vec![
            Span::styled(" y ", Style::new().fg(Color::Black).bg(Color::Red)),
            Span::raw(" yes   "),
            Span::styled(" n ", Style::new().fg(Color::Black).bg(Color::Gray)),
            Span::raw(" no"),
        ]),
    ]);
    frame.render_widget(
        Paragraph::new(text)
            .centered()
            .block(titled(" Confirm ".bold()).border_style(Style::new().fg(Color::Red))),
        r,
    );
}

fn firewall(frame: &mut Frame, area: Rect, app: &App, id: fastvm_proto::api::Uuid) {
    let r = centered(area, 70, 14);
    frame.render_widget(Clear, r);
    let Some(vm) = app.vm(id) else {
        frame.render_widget(
            Paragraph::new("the VM is gone").block(titled(" Firewall ")),
            r,
        );
        return;
    };
    let fw = &vm.firewall;
    let mode_color = match fw.mode {
        FirewallMode::Open => Color::Yellow,
        FirewallMode::Restricted => Color::Green,
    };
    let mut lines = vec![
        Line::from(vec![
            Span::raw("mode  "),
            Span::styled(fw.mode.as_str(), Style::new().fg(mode_color).bold()),
            Span::styled("   (m toggles)", Style::new().fg(Color::DarkGray)),
        ]),
        Line::from(match fw.mode {
            FirewallMode::Open => "all public IPv6 ingress allowed; rules ignored",
            FirewallMode::Restricted => "only the rules below (plus essential ICMPv6) are allowed",
        })
        .fg(Color::DarkGray),
        Line::default(),
    ];
    if fw.ingress.is_empty() {
        lines.push(Line::from("no ingress rules".fg(Color::DarkGray)));
    }
    for rule in &fw.ingress {
        let (a, b) = rule.port_range();
        let ports = if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        };
        let sources = rule
            .source_cidrs
            .as_ref()
            .filter(|s| !s.is_empty())
            .map_or_else(|| "::/0".to_string(), |s| s.join(", "));
        lines.push(Line::from(format!(
            "{:<4} {:<12} from {}  {}",
            rule.protocol,
            ports,
            sources,
            rule.description.clone().unwrap_or_default()
        )));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(titled(format!(" Firewall of {} ", vm.name).bold())),
        r,
    );
}
