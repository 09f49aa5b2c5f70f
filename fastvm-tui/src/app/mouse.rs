//! Mouse input: clicking a tab shows its view, clicking a row selects it,
//! clicking a column header sorts by it, the wheel scrolls the selection.

use ratatui::crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Rect};

use super::{App, Mode, View};
use crate::client::Command;
use crate::ui::{self, tab_spans};

impl App {
    /// Handles one mouse event.
    pub fn on_mouse(&mut self, m: MouseEvent) -> Vec<Command> {
        if !matches!(self.mode, Mode::Normal | Mode::Console) {
            return Vec::new();
        }
        let area = Rect::new(0, 0, self.size.0, self.size.1);
        let Some(areas) = ui::layout(area, self) else {
            return Vec::new();
        };
        let at = Position::new(m.column, m.row);
        match m.kind {
            MouseEventKind::ScrollDown if areas.main.contains(at) => self.move_selection(3),
            MouseEventKind::ScrollUp if areas.main.contains(at) => self.move_selection(-3),
            MouseEventKind::Down(MouseButton::Left) => {
                if areas.console.contains(at) && self.console.is_some() {
                    self.mode = Mode::Console;
                } else if self.mode == Mode::Console {
                    self.mode = Mode::Normal;
                }
                if areas.tabs.contains(at) {
                    if let Some((view, _, _)) = tab_spans(areas.tabs)
                        .into_iter()
                        .find(|(_, a, b)| (*a..*b).contains(&m.column))
                    {
                        self.view = view;
                    }
                } else if areas.main.contains(at) {
                    self.click_table(areas.main, m.column, m.row);
                }
            }
            _ => return Vec::new(),
        }
        self.dirty = true;
        Vec::new()
    }

    /// A click at (`x`, `y`) in the table drawn in `area` (border, header
    /// row, then data rows from the table's scroll offset).
    fn click_table(&mut self, area: Rect, x: u16, y: u16) {
        let (widths, offset): (&[_], usize) = match self.view {
            View::Vms => (&ui::tables_widths::VM, self.vm_table.offset()),
            View::Snapshots => (&ui::tables_widths::SNAPSHOT, self.snapshot_table.offset()),
            View::Quotas => return,
        };
        let header_y = area.y + 1;
        if y == header_y {
            let spans = ui::column_spans(area, widths);
            if let Some(col) = spans.iter().position(|(a, b)| (*a..*b).contains(&x)) {
                self.sort_by(col);
            }
        } else if y > header_y && y < area.bottom().saturating_sub(1) {
            self.select_index(offset + (y - header_y - 1) as usize);
        }
    }
}
