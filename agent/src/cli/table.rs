//! Two-column tables for human output.

/// Prints `value` as pretty JSON with `--json`, else as the `human` rendering.
pub fn print_value(
    client: &super::ClientArgs,
    value: &serde_json::Value,
    human: fn(&serde_json::Value) -> String,
) {
    if client.json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        print!("{}", human(value));
    }
}

/// Renders `rows` as `field  value` lines with the fields padded to one width.
pub fn key_values(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in rows {
        out.push_str(&format!("{key:<width$}  {value}\n"));
    }
    out
}

/// Renders a table with a header row, columns padded to their widest cell.
pub fn rows(header: &[&str], body: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in body {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        text.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in body {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn fields_are_aligned() {
        let text = super::key_values(&[("a", "1".into()), ("long", "2".into())]);
        assert_eq!(text, "a     1\nlong  2\n");
    }
}
