//! Diagnostics: errors with source locations, rendered as plain, deterministic text.
//!
//! Rendered form of one diagnostic (no ANSI colours):
//! ```text
//! prog.icl:3:10: error: unknown register `foo`
//!    |
//!  3 | mov a <- foo from prev
//!    |          ^^^ not declared, not a built-in input and never written
//!    = note: ...
//! ```

use crate::ir::Span;

/// A text a diagnostic points into: the program file, or a `--set` override shown as
/// `--set NAME=VALUE` under the name `<command line>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceText {
    pub name: String,
    pub text: String,
}

/// One error.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Stable short code naming the kind of problem (e.g. `unknown-register`), used to dedupe
    /// unrolled copies and by tests.
    pub code: &'static str,
    pub message: String,
    /// Index into [`Diagnostics::sources`]; `None` for errors with no location (I/O).
    pub source: Option<usize>,
    pub span: Span,
    /// Text written after the caret line.
    pub label: String,
    /// Secondary locations in the same source, each with its own caret line.
    pub secondary: Vec<(Span, String)>,
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn new(code: &'static str, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            source: Some(0),
            span,
            label: String::new(),
            secondary: Vec::new(),
            notes: Vec::new(),
        }
    }
    pub fn label(mut self, l: impl Into<String>) -> Diagnostic {
        self.label = l.into();
        self
    }
    pub fn note(mut self, n: impl Into<String>) -> Diagnostic {
        self.notes.push(n.into());
        self
    }
    pub fn also(mut self, span: Span, l: impl Into<String>) -> Diagnostic {
        self.secondary.push((span, l.into()));
        self
    }
    pub fn in_source(mut self, source: usize) -> Diagnostic {
        self.source = Some(source);
        self
    }
}

/// Every problem found, with the texts they point into.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
    /// `sources[0]` is the program; further entries are `--set` overrides.
    pub sources: Vec<SourceText>,
}

impl Diagnostics {
    pub fn new(sources: Vec<SourceText>) -> Diagnostics {
        Diagnostics {
            items: Vec::new(),
            sources,
        }
    }

    /// A single error with no location (e.g. a file that cannot be read).
    pub fn bare(code: &'static str, name: &str, message: impl Into<String>) -> Diagnostics {
        let mut d = Diagnostics::new(vec![SourceText {
            name: name.to_string(),
            text: String::new(),
        }]);
        let mut item = Diagnostic::new(code, Span::default(), message);
        item.source = None;
        d.items.push(item);
        d
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Adds `item` unless an item with the same code and primary span is already present
    /// (unrolled copies of one statement report once: the first iteration wins).
    pub fn push(&mut self, item: Diagnostic) {
        let dup = self.items.iter().any(|o| {
            o.code == item.code
                && o.source == item.source
                && o.span.start == item.span.start
                && o.span.end == item.span.end
        });
        if !dup {
            self.items.push(item);
        }
    }

    /// Sorts by source, then position (stable: equal positions keep their order).
    pub fn sort(&mut self) {
        self.items
            .sort_by_key(|d| (d.source.map_or(0, |s| s + 1), d.span.start, d.span.end));
    }

    /// Codes of all items, in order (for tests).
    pub fn codes(&self) -> Vec<&'static str> {
        self.items.iter().map(|d| d.code).collect()
    }

    /// Plain-text rendering of every item, separated by blank lines, then a summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.items {
            self.render_one(d, &mut out);
            out.push('\n');
        }
        let n = self.items.len();
        out.push_str(&format!("{n} error{}\n", if n == 1 { "" } else { "s" }));
        out
    }

    fn render_one(&self, d: &Diagnostic, out: &mut String) {
        let src = d.source.and_then(|i| self.sources.get(i));
        let Some(src) = src else {
            let name = self
                .sources
                .first()
                .map_or("<unknown>", |s| s.name.as_str());
            out.push_str(&format!("{name}: error: {}\n", d.message));
            for n in &d.notes {
                out.push_str(&format!("  = note: {n}\n"));
            }
            return;
        };
        out.push_str(&format!(
            "{}:{}:{}: error: {}\n",
            src.name, d.span.line, d.span.col, d.message
        ));
        let mut spans = vec![(d.span, d.label.as_str())];
        spans.extend(d.secondary.iter().map(|(s, l)| (*s, l.as_str())));
        let width = spans
            .iter()
            .map(|(s, _)| s.line.to_string().len())
            .max()
            .unwrap_or(1);
        let pad = " ".repeat(width);
        out.push_str(&format!("{pad} |\n"));
        for (span, label) in spans {
            let line_text = line_of(&src.text, span.line);
            // Tabs shown as one space so carets line up.
            let shown: String = line_text
                .chars()
                .map(|c| if c == '\t' { ' ' } else { c })
                .collect();
            out.push_str(&format!("{:>width$} | {}\n", span.line, shown.trim_end()));
            let col0 = (span.col.max(1) - 1) as usize;
            let line_chars = line_text.chars().count();
            // Caret length: the span's characters on this line (at least one).
            let span_text = src
                .text
                .get(span.start..span.end.min(src.text.len()))
                .unwrap_or("");
            let first_line = span_text.split('\n').next().unwrap_or("");
            let mut len = first_line.chars().count();
            if col0 + len > line_chars {
                len = line_chars.saturating_sub(col0);
            }
            let len = len.max(1);
            let mut caret = format!("{pad} | {}{}", " ".repeat(col0), "^".repeat(len));
            if !label.is_empty() {
                caret.push(' ');
                caret.push_str(label);
            }
            out.push_str(&caret);
            out.push('\n');
        }
        for n in &d.notes {
            out.push_str(&format!("{pad} = note: {n}\n"));
        }
    }
}

/// The text of 1-based line `line` (without its newline); empty past the end.
fn line_of(text: &str, line: u32) -> &str {
    text.split('\n')
        .nth((line.max(1) - 1) as usize)
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or("")
}

impl std::fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for Diagnostics {}

/// Maps byte offsets of a text to 1-based line and (character) column.
pub struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> LineIndex<'a> {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    /// The span of bytes `start..end` (clamped to the text and to char boundaries).
    pub fn span(&self, start: usize, end: usize) -> Span {
        let start = floor_boundary(self.text, start.min(self.text.len()));
        let end = floor_boundary(self.text, end.clamp(start, self.text.len()));
        let line_idx = match self.starts.binary_search(&start) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let line_start = self.starts[line_idx];
        let col = self.text[line_start..start].chars().count() + 1;
        Span {
            start,
            end,
            line: (line_idx + 1) as u32,
            col: col as u32,
        }
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
