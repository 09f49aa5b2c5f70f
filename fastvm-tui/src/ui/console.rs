//! The inline console pane: the VM's serial screen through tui-term.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::Line;
use tui_term::widget::PseudoTerminal;

use super::titled;
use crate::console::{ConsolePane, ESCAPE_KEY_LABEL};

/// Draws `pane` into `area` (any size, even zero) and fits its screen to it.
pub fn draw_console(frame: &mut Frame, area: Rect, pane: &mut ConsolePane, focused: bool) {
    let state = if pane.attached { "" } else { " (attaching...)" };
    // The escape key comes first so a narrow pane still shows it.
    let title = Line::from(vec![
        format!(" {ESCAPE_KEY_LABEL} leaves ")
            .fg(Color::Yellow)
            .bold(),
        format!("— console {}{state} ", pane.vm_name).bold(),
    ]);
    let border = if focused {
        Color::Cyan
    } else {
        Color::DarkGray
    };
    let block = titled(title).border_style(Style::new().fg(border));
    let inner = block.inner(area);
    pane.resize(inner.height, inner.width);
    let term = PseudoTerminal::new(pane.parser.screen()).block(block);
    frame.render_widget(term, area);
}
