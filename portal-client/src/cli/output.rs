//! How `arcade` words an answer: the API's JSON with `--json`, else text — aligned tables,
//! `label  value` fields, times in UTC and ages.

use serde::Serialize;
use time::OffsetDateTime;

use super::CliError;

/// `value` as pretty JSON with `--json`, else as `text` makes it.
pub(super) fn render<T: Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce(&T) -> String,
) -> Result<String, CliError> {
    if json {
        let mut out = serde_json::to_string_pretty(value).map_err(CliError::Json)?;
        out.push('\n');
        Ok(out)
    } else {
        Ok(text(value))
    }
}

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// A text table: columns separated by two spaces, each as wide as its widest cell.
#[derive(Debug, Clone)]
pub(super) struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers, every column left-aligned.
    pub(super) fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            align: vec![Align::Left; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Right-aligns these columns (numbers).
    pub(super) fn right(mut self, columns: &[usize]) -> Self {
        for &c in columns {
            if let Some(a) = self.align.get_mut(c) {
                *a = Align::Right;
            }
        }
        self
    }

    /// Adds a row; missing cells are empty, extra ones are dropped.
    pub(super) fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The table, one line per row after the header line, each line ending in `\n`.
    pub(super) fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                let pad = " ".repeat(widths[i].saturating_sub(width(cell)));
                match self.align[i] {
                    Align::Left => {
                        text.push_str(cell);
                        text.push_str(&pad);
                    }
                    Align::Right => {
                        text.push_str(&pad);
                        text.push_str(cell);
                    }
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `label  value` lines, the values lined up.
pub(super) fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// What a cell or field shows for what is not known.
pub(super) const NONE: &str = "-";

/// `value`, or [`NONE`].
pub(super) fn or_none<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| NONE.to_owned(), |v| v.to_string())
}

/// A time in UTC to the second: `2026-11-23 10:00:00Z`.
pub(super) fn timestamp(t: OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(format)
        .unwrap_or_else(|_| t.to_string())
}

/// How long before `now` `then` was: `4s ago`, `12m ago`, `3h ago`, `2d ago`.
pub(super) fn age(then: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (now - then).whole_seconds().max(0);
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn table_aligns_columns() {
        let mut table = Table::new(&["NAME", "N", "NOTE"]).right(&[1]);
        table.row(vec!["a".into(), "1".into(), "first".into()]);
        table.row(vec!["longer-name".into(), "1234".into(), String::new()]);
        table.row(vec!["é".into()]);
        assert_eq!(
            table.render(),
            "NAME            N  NOTE\n\
             a               1  first\n\
             longer-name  1234\n\
             é\n"
        );
    }

    #[test]
    fn fields_align_values() {
        assert_eq!(
            fields(&[("session", "s1".into()), ("pid", "42".into())]),
            "session  s1\npid      42\n"
        );
    }

    #[test]
    fn ages_are_short() {
        let t = datetime!(2026-11-23 10:00:00 UTC);
        assert_eq!(age(t, t), "0s ago");
        assert_eq!(age(t, datetime!(2026-11-23 09:00:00 UTC)), "0s ago");
        assert_eq!(age(t, datetime!(2026-11-23 10:02:30 UTC)), "2m ago");
        assert_eq!(age(t, datetime!(2026-11-23 13:00:00 UTC)), "3h ago");
        assert_eq!(age(t, datetime!(2026-11-25 10:00:00 UTC)), "2d ago");
    }
}
