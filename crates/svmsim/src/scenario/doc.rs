//! Reading a TOML document with the position of every value, so errors can name file, line and field.
//!
//! The scenario parser walks a [`toml::de::DeTable`] (which keeps byte spans)
//! through [`Table`] and [`Value`] handles. Each handle knows its field path
//! (`op[3].attrs[1].access`) and span; every accessor that refuses a value
//! returns a [`ScenarioError`] that says where and what.

use std::borrow::Cow;
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
#[derive(Clone, Copy, Debug)]
pub struct Source<'s> {
    /// The file name as given.
    pub file: &'s str,
    /// The whole text.
    pub text: &'s str,
}

impl Source<'_> {
    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
        (line, col)
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

/// A value with its path and place.
#[derive(Clone, Debug)]
pub struct Value<'a, 's> {
    /// The document.
    pub src: Source<'s>,
    /// Its field path.
    pub path: String,
    /// The value and its span.
    pub value: &'a Spanned<DeValue<'s>>,
}

/// A table with its path and place.
#[derive(Clone, Debug)]
pub struct Table<'a, 's> {
    /// The document.
    pub src: Source<'s>,
    /// Its field path; empty for the document itself.
    pub path: String,
    /// Its span.
    pub span: Range<usize>,
    /// Its entries.
    pub table: &'a DeTable<'s>,
}

fn kind(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl<'a, 's> Value<'a, 's> {
    /// An error about this value.
    pub fn error(&self, message: impl Into<String>) -> ScenarioError {
        self.src.error(self.value.span(), &self.path, message)
    }

    fn expected(&self, what: &str) -> ScenarioError {
        self.error(format!(
            "expected {what}, found {}",
            kind(self.value.get_ref())
        ))
    }

    /// The raw value.
    pub fn get(&self) -> &'a DeValue<'s> {
        self.value.get_ref()
    }

    /// A string.
    ///
    /// # Errors
    /// Not a string.
    pub fn str(&self) -> Result<&'a str, ScenarioError> {
        match self.get() {
            DeValue::String(s) => Ok(s.as_ref()),
            _ => Err(self.expected("a string")),
        }
    }

    /// An integer, or `None` if the value is not one.
    ///
    /// # Errors
    /// An integer that does not fit in an `i128`.
    pub fn int_opt(&self) -> Result<Option<i128>, ScenarioError> {
        match self.get() {
            DeValue::Integer(i) => {
                let digits = i.as_str();
                let (neg, digits) = match digits.strip_prefix('-') {
                    Some(d) => (true, d),
                    None => (false, digits.strip_prefix('+').unwrap_or(digits)),
                };
                let v = i128::from_str_radix(digits, i.radix())
                    .map_err(|_| self.error("integer out of range"))?;
                Ok(Some(if neg { -v } else { v }))
            }
            _ => Ok(None),
        }
    }

    /// An integer in `T`.
    ///
    /// # Errors
    /// Not an integer, or out of `T`'s range.
    pub fn int<T: TryFrom<i128>>(&self) -> Result<T, ScenarioError> {
        let v = self.int_opt()?.ok_or_else(|| self.expected("an integer"))?;
        T::try_from(v).map_err(|_| self.error(format!("{v} is out of range here")))
    }

    /// A boolean.
    ///
    /// # Errors
    /// Not a boolean.
    pub fn bool(&self) -> Result<bool, ScenarioError> {
        match self.get() {
            DeValue::Boolean(b) => Ok(*b),
            _ => Err(self.expected("true or false")),
        }
    }

    /// A table.
    ///
    /// # Errors
    /// Not a table.
    pub fn table(&self) -> Result<Table<'a, 's>, ScenarioError> {
        match self.get() {
            DeValue::Table(t) => Ok(Table {
                src: self.src,
                path: self.path.clone(),
                span: self.value.span(),
                table: t,
            }),
            _ => Err(self.expected("a table")),
        }
    }

    /// The items of an array, each with its own path (`path[i]`).
    ///
    /// # Errors
    /// Not an array.
    pub fn array(&self) -> Result<Vec<Value<'a, 's>>, ScenarioError> {
        match self.get() {
            DeValue::Array(a) => Ok(a
                .iter()
                .enumerate()
                .map(|(i, v)| Value {
                    src: self.src,
                    path: format!("{}[{i}]", self.path),
                    value: v,
                })
                .collect()),
            _ => Err(self.expected("an array")),
        }
    }
}

impl<'a, 's> Table<'a, 's> {
    /// An error about the table itself.
    pub fn error(&self, message: impl Into<String>) -> ScenarioError {
        self.src.error(self.span.clone(), &self.path, message)
    }

    /// The path of a key in this table.
    pub fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value under `key`, if present.
    pub fn get(&self, key: &str) -> Option<Value<'a, 's>> {
        self.table.get(key).map(|v| Value {
            src: self.src,
            path: self.child_path(key),
            value: v,
        })
    }

    /// The value under `key`.
    ///
    /// # Errors
    /// The key is missing.
    pub fn req(&self, key: &str) -> Result<Value<'a, 's>, ScenarioError> {
        self.get(key)
            .ok_or_else(|| self.error(format!("missing field `{key}`")))
    }

    /// Refuses keys not in `allowed`, naming the first stray one.
    ///
    /// # Errors
    /// An unknown key, with the list of known ones.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ScenarioError> {
        for (k, _) in self.table.iter() {
            if !allowed.contains(&k.get_ref().as_ref()) {
                return Err(self.src.error(
                    k.span(),
                    &self.child_path(k.get_ref()),
                    format!("unknown field; expected one of: {}", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// The keys and values, in the order they appear in the file.
    pub fn entries(&self) -> Vec<(&'a str, Value<'a, 's>)> {
        let mut v: Vec<(&Spanned<Cow<'s, str>>, _)> = self.table.iter().collect();
        v.sort_by_key(|(k, _)| k.span().start);
        v.into_iter()
            .map(|(k, val)| {
                let key: &'a str = k.get_ref().as_ref();
                (
                    key,
                    Value {
                        src: self.src,
                        path: self.child_path(key),
                        value: val,
                    },
                )
            })
            .collect()
    }
}
