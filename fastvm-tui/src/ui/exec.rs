//! The exec pane: the command, where it is (running, interrupted, its exit
//! code), then its output, stderr in red, following the end unless
//! scrolled back.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};

use super::overlays::centered;
use super::titled;
use crate::app::{ExecState, ExecView};
use crate::exec_output::{MAX_BYTES, MAX_LINES, Stream};

/// Rows of the pane above the output.
const HEADER_ROWS: u16 = 3;

/// The pane's first lines: the command, where it is, dropped output.
pub fn exec_header(e: &ExecView) -> Vec<Line<'static>> {
    let command = Line::from(vec![
        Span::styled("$ ", Style::new().fg(Color::Yellow)),
        Span::raw(e.command.clone()),
    ]);
    let state = match &e.state {
        ExecState::Starting => Line::from("starting...".fg(Color::DarkGray)),
        ExecState::Running => Line::from("running... (Ctrl-C interrupts)".fg(Color::DarkGray)),
        ExecState::Interrupted => Line::from(
            "interrupted (SIGINT sent), waiting for the command to end..."
                .fg(Color::Yellow)
                .bold(),
        ),
        ExecState::Finished {
            exit_code,
            timed_out,
            message,
        } => {
            let (text, color) = match (exit_code, message) {
                (Some(0), _) => ("exit 0".to_string(), Color::Green),
                (Some(code), _) => (format!("exit {code}"), Color::Red),
                (None, Some(msg)) => (format!("failed: {msg}"), Color::Red),
                (None, None) => ("ended without an exit code".to_string(), Color::Red),
            };
            let mut spans = vec![Span::styled(text, Style::new().fg(color).bold())];
            if e.interrupted {
                spans.push(Span::raw("  interrupted"));
            }
            if *timed_out {
                spans.push(Span::styled(
                    "  timed out",
                    Style::new().fg(Color::Yellow).bold(),
                ));
            }
            Line::from(spans)
        }
        ExecState::Failed(msg) => Line::from(msg.clone().fg(Color::Red).bold()),
    };
    let dropped = match e.output.dropped() {
        0 => Line::from(""),
        n => Line::from(
            format!(
                "{n} earlier lines dropped (the last {MAX_LINES} lines or {} MiB are kept)",
                MAX_BYTES >> 20
            )
            .fg(Color::Yellow),
        ),
    };
    vec![command, state, dropped]
}

/// The output as rows of at most `width` characters (long lines wrap).
pub fn exec_rows(e: &ExecView, width: u16) -> Vec<Line<'static>> {
    let width = usize::from(width.max(1));
    let mut rows = Vec::new();
    for line in e.output.lines() {
        let style = match line.stream {
            Stream::Stdout => Style::new(),
            Stream::Stderr => Style::new().fg(Color::Red),
        };
        let chars: Vec<char> = line.text.chars().collect();
        if chars.is_empty() {
            rows.push(Line::from(""));
        }
        for piece in chars.chunks(width) {
            rows.push(Line::from(Span::styled(
                piece.iter().collect::<String>(),
                style,
            )));
        }
    }
    rows
}

/// Draws the pane over `area`.
pub fn draw(frame: &mut Frame, area: Rect, e: &ExecView) {
    let r = centered(
        area,
        area.width.saturating_sub(8).max(40),
        area.height.saturating_sub(6).max(8),
    );
    frame.render_widget(Clear, r);
    let block = titled(format!(" exec in {} — Ctrl-C interrupts, Esc closes ", e.vm_name).bold());
    let inner = block.inner(r);
    frame.render_widget(block, r);
    let [header, output] =
        Layout::vertical([Constraint::Length(HEADER_ROWS), Constraint::Min(0)]).areas(inner);
    frame.render_widget(Paragraph::new(exec_header(e)), header);
    let rows = exec_rows(e, output.width);
    let height = usize::from(output.height);
    let last_top = rows.len().saturating_sub(height);
    let top = last_top.saturating_sub(e.scroll_back);
    let shown: Vec<Line> = rows.into_iter().skip(top).take(height).collect();
    frame.render_widget(Paragraph::new(shown), output);
}
