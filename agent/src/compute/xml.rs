//! A minimal XML writer: elements, attributes and text, always escaped.
//!
//! Domain XML is generated from typed structs through this writer, never by pasting strings,
//! so no user-supplied value (a server name, a kernel command line) can inject markup.

/// Escapes text for use in element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0 (except tab, newline, return).
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// Builds an indented XML document.
#[derive(Default)]
pub struct XmlWriter {
    out: String,
    stack: Vec<String>,
}

impl XmlWriter {
    /// An empty document.
    pub fn new() -> Self {
        Self::default()
    }

    fn indent(&mut self) {
        for _ in 0..self.stack.len() {
            self.out.push_str("  ");
        }
    }

    fn start_tag(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.indent();
        self.out.push('<');
        self.out.push_str(name);
        for (key, value) in attrs {
            self.out.push(' ');
            self.out.push_str(key);
            self.out.push_str("=\"");
            self.out.push_str(&escape(value));
            self.out.push('"');
        }
    }

    /// Opens `<name attrs…>`; close it with [`XmlWriter::close`].
    pub fn open(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start_tag(name, attrs);
        self.out.push_str(">\n");
        self.stack.push(name.to_string());
        self
    }

    /// Closes the innermost open element.
    pub fn close(&mut self) -> &mut Self {
        let name = self.stack.pop().expect("close without open");
        self.indent();
        self.out.push_str("</");
        self.out.push_str(&name);
        self.out.push_str(">\n");
        self
    }

    /// Writes `<name attrs…/>`.
    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start_tag(name, attrs);
        self.out.push_str("/>\n");
        self
    }

    /// Writes `<name attrs…>text</name>`.
    pub fn text(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) -> &mut Self {
        self.start_tag(name, attrs);
        self.out.push('>');
        self.out.push_str(&escape(text));
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
        self
    }

    /// The document; panics if an element is still open (a bug in the caller).
    pub fn finish(self) -> String {
        assert!(self.stack.is_empty(), "unclosed elements: {:?}", self.stack);
        self.out
    }
}

/// The text of the first `<name>…</name>` element in `xml` (unescaped), for reading back the
/// small, agent-written metadata block. Not a general XML parser.
pub fn first_element_text(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(unescape(&xml[start..end]))
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let mut w = XmlWriter::new();
        w.open("a", &[("x", "1\"><evil/>")])
            .text("b", &[], "</b><c>&")
            .close();
        let doc = w.finish();
        assert!(!doc.contains("<evil/>"));
        assert!(doc.contains("&lt;/b&gt;&lt;c&gt;&amp;"));
        assert_eq!(first_element_text(&doc, "b").unwrap(), "</b><c>&");
    }
}
