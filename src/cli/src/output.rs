//! Rendering: aligned text tables with a header line, and JSON documents.

/// `rows` under `headers`, each column as wide as its widest cell, two spaces apart; the
/// last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < cells.len() {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        // An empty last cell leaves no padding behind.
        out.truncate(out.trim_end_matches(' ').len());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// A JSON document and a newline.
pub fn json(value: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(value).expect("a Value always serializes");
    s.push('\n');
    s
}

/// `[1,2,3]` as `1,2,3`.
pub fn ids(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align_columns_under_their_headers() {
        let t = super::table(
            &["NAME", "PARTITIONS"],
            &[
                vec!["orders".into(), "3".into()],
                vec!["a-much-longer-name".into(), "12".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME                PARTITIONS\n\
             orders              3\n\
             a-much-longer-name  12\n"
        );
    }
}
