//! Reading a TOML document with the position of every value, so errors can name file, line and field.
//!
//! The document is parsed once into a [`toml::de::DeTable`], which keeps the
//! byte span of every key and value; serde reads the parts from it, and an
//! error serde raises carries the span of the value it refused. [`Source`]
//! turns a span back into line, column and the field path
//! (`op[3].attrs[1].access`) by finding the deepest key or value that holds
//! it, so every error says where and what.

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A problem in a scenario file, with its place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    /// The file name as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The field path, such as `op[3].size`; empty for document-level errors.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ScenarioError {}

/// The source text and its name, to turn byte offsets into lines.
#[derive(Clone, Debug)]
pub struct Source<'s> {
    /// The file name as given.
    pub file: &'s str,
    /// The whole text.
    pub text: &'s str,
    /// Byte offsets of the text's newlines, so that placing a span is a
    /// binary search, not a count from the start (every op is placed).
    newlines: Vec<usize>,
}

impl<'s> Source<'s> {
    /// The text of `file`, indexed by line.
    pub fn new(file: &'s str, text: &'s str) -> Self {
        let newlines = text
            .bytes()
            .enumerate()
            .filter_map(|(i, b)| (b == b'\n').then_some(i))
            .collect();
        Self {
            file,
            text,
            newlines,
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        // Newlines before `offset`: its line is one more.
        let before = self.newlines.partition_point(|&nl| nl < offset);
        let col = match before {
            0 => offset,
            n => offset - self.newlines[n - 1] - 1,
        };
        (before + 1, col + 1)
    }

    /// An error at `span` about `field`.
    pub fn error(
        &self,
        span: Range<usize>,
        field: &str,
        message: impl Into<String>,
    ) -> ScenarioError {
        let (line, column) = self.line_col(span.start);
        ScenarioError {
            file: self.file.to_owned(),
            line,
            column,
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// Parses the document.
    ///
    /// # Errors
    /// TOML syntax errors, placed.
    pub fn parse(&self) -> Result<Spanned<DeTable<'_>>, ScenarioError> {
        DeTable::parse(self.text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            self.error(span, "", e.message().trim().to_owned())
        })
    }
}

impl<'s> Source<'s> {
    /// An error at `span`, with the field path of what sits there in `root`.
    pub fn error_in(
        &self,
        root: &DeTable<'_>,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> ScenarioError {
        let field = field_at(root, span.start).unwrap_or_default();
        self.error(span, &field, message)
    }

    /// Reads `value` (a part of `root`) as a `T`; a refusal is placed.
    pub fn deserialize<T: serde::de::DeserializeOwned>(
        &self,
        root: &DeTable<'_>,
        value: Spanned<DeValue<'_>>,
    ) -> Result<T, ScenarioError> {
        T::deserialize(toml::de::ValueDeserializer::from(value)).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            self.error_in(root, span, reword(e.message().trim()))
        })
    }
}

/// serde's and toml's wording, in ours: an unknown key says so and what
/// the table takes.
fn reword(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unexpected keys in table: ") {
        let (keys, known) = rest.split_once(", available keys: ").unwrap_or((rest, ""));
        let keys: Vec<String> = keys.split(", ").map(|k| format!("`{k}`")).collect();
        let takes = if known.is_empty() {
            "this table takes none".to_owned()
        } else {
            format!("expected one of: {known}")
        };
        return format!("unknown field {}; {takes}", keys.join(", "));
    }
    message.to_owned()
}

/// The path of the deepest key or value of `table` whose span holds byte
/// `at`, such as `op[3].attrs[1]`. Tables of an array (`[[op]]`) span only
/// their header, so every child is searched, not just those that hold `at`.
fn field_at(table: &DeTable<'_>, at: usize) -> Option<String> {
    fn holds(span: Range<usize>, at: usize) -> bool {
        span.start <= at && (at < span.end || span.is_empty() && at == span.start)
    }
    fn value(v: &Spanned<DeValue<'_>>, at: usize, path: String) -> Option<String> {
        let deeper = match v.get_ref() {
            DeValue::Table(t) => t.iter().find_map(|(k, c)| {
                let p = if path.is_empty() {
                    k.get_ref().to_string()
                } else {
                    format!("{path}.{}", k.get_ref())
                };
                if holds(k.span(), at) {
                    return Some(p);
                }
                value(c, at, p)
            }),
            DeValue::Array(a) => a
                .iter()
                .enumerate()
                .find_map(|(i, c)| value(c, at, format!("{path}[{i}]"))),
            _ => None,
        };
        deeper.or_else(|| holds(v.span(), at).then_some(path))
    }
    table.iter().find_map(|(k, c)| {
        let p = k.get_ref().to_string();
        if holds(k.span(), at) {
            return Some(p);
        }
        value(c, at, p)
    })
}
