//! Plain text tables: a header and rows in columns as wide as their widest
//! cell, two spaces apart; the last column is not padded.

/// Renders `header` and `rows` (each as long as `header`).
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = w - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The first 8 characters of an id, as tables show it.
pub fn short_id(id: &str) -> String {
    id.chars().take(8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_the_last_is_not_padded() {
        let rows = vec![
            vec!["6f1c2a00".to_string(), "dev".into(), "running".into()],
            vec!["a0000000".to_string(), "a-longer-name".into(), "ok".into()],
        ];
        assert_eq!(
            render(&["ID", "NAME", "STATUS"], &rows),
            "ID        NAME           STATUS\n\
             6f1c2a00  dev            running\n\
             a0000000  a-longer-name  ok\n"
        );
        assert_eq!(render(&["ID"], &[]), "ID\n");
        assert_eq!(short_id("6f1c2a00-0000"), "6f1c2a00");
    }
}
