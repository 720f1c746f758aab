//! Typed, located reads from the parsed TOML document: every value read knows its file, line and key.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml_edit::{Item, TableLike, Value};

use crate::ConfigError;

/// The text of one TOML file, to turn byte offsets into lines and columns.
pub(crate) struct Source<'a> {
    path: &'a Path,
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    pub(crate) fn new(path: &'a Path, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(offset, _)| offset + 1))
            .collect();
        Source {
            path,
            text,
            line_starts,
        }
    }

    /// The 1-based line holding the byte at `offset`.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    /// The 1-based line and column (in characters) of the byte at `offset`.
    pub(crate) fn position_of(&self, offset: usize) -> (usize, usize) {
        let line = self.line_of(offset);
        let line_start = self.line_starts[line - 1];
        let column = self
            .text
            .get(line_start..offset.min(self.text.len()))
            .map_or(1, |before| before.chars().count() + 1);
        (line, column)
    }

    /// An error at `line` for the dotted `key`, when known.
    pub(crate) fn error(
        &self,
        line: Option<usize>,
        key: Option<&str>,
        message: impl Into<String>,
    ) -> ConfigError {
        let error = ConfigError::new(self.path, message).at_line(line);
        match key {
            Some(key) => error.for_key(key),
            None => error,
        }
    }
}

/// One table of the document (the root, a `[section]`, a `[[runners]]`
/// entry or an inline table), with its dotted path and header line.
#[derive(Clone)]
pub(crate) struct TableReader<'a> {
    source: &'a Source<'a>,
    table: &'a dyn TableLike,
    prefix: String,
    line: Option<usize>,
}

impl<'a> TableReader<'a> {
    /// The root table of a document.
    pub(crate) fn root(source: &'a Source<'a>, table: &'a dyn TableLike) -> Self {
        TableReader {
            source,
            table,
            prefix: String::new(),
            line: None,
        }
    }

    /// A table whose header (or first byte) is at `span`, named `prefix`
    /// in messages.
    pub(crate) fn nested(
        source: &'a Source<'a>,
        span: Option<Range<usize>>,
        table: &'a dyn TableLike,
        prefix: String,
        fallback_line: Option<usize>,
    ) -> Self {
        let line = span
            .map(|span| source.line_of(span.start))
            .or(fallback_line);
        TableReader {
            source,
            table,
            prefix,
            line,
        }
    }

    pub(crate) fn source(&self) -> &'a Source<'a> {
        self.source
    }

    /// The line of this table's header, if it has one.
    pub(crate) fn line(&self) -> Option<usize> {
        self.line
    }

    /// The dotted path naming `key` of this table in messages.
    pub(crate) fn key_path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// The line where `key` is written, else the line of this table.
    pub(crate) fn line_of(&self, key: &str) -> Option<usize> {
        let key_span = self.table.key(key).and_then(|key| key.span());
        let item_span = || self.table.get(key).and_then(Item::span);
        key_span
            .or_else(item_span)
            .map(|span| self.source.line_of(span.start))
            .or(self.line)
    }

    /// An error about `key`, located where it is written.
    pub(crate) fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.source
            .error(self.line_of(key), Some(&self.key_path(key)), message)
    }

    /// The error for a required `key` that is absent.
    pub(crate) fn missing(&self, key: &str) -> ConfigError {
        self.source
            .error(self.line, Some(&self.key_path(key)), "missing required key")
    }

    /// The entries of this table, in document order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&'a str, &'a Item)> + 'a {
        self.table.iter().filter(|(_, item)| !item.is_none())
    }

    pub(crate) fn item(&self, key: &str) -> Option<&'a Item> {
        self.table.get(key).filter(|item| !item.is_none())
    }

    /// Which of `keys` (a key and its accepted aliases) is present; an error
    /// if several are.
    pub(crate) fn one_of(
        &self,
        keys: &[&'static str],
    ) -> Result<Option<&'static str>, ConfigError> {
        let mut present = keys.iter().copied().filter(|key| self.item(key).is_some());
        let first = present.next();
        if let (Some(first), Some(second)) = (first, present.next()) {
            return Err(self.error(
                second,
                format!(
                    "`{second}` and `{first}` (line {}) are two spellings of the same setting: keep one",
                    display_line(self.line_of(first))
                ),
            ));
        }
        Ok(first)
    }

    pub(crate) fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.string_impl(key, true)
    }

    /// Like [`TableReader::string`], but a wrong value is never shown.
    pub(crate) fn secret_string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.string_impl(key, false)
    }

    fn string_impl(&self, key: &str, reveal: bool) -> Result<Option<String>, ConfigError> {
        let Some(item) = self.item(key) else {
            return Ok(None);
        };
        match item.as_str() {
            Some(text) => Ok(Some(text.to_owned())),
            None => Err(self.error(
                key,
                format!("expected a string, got {}", describe(item, reveal)),
            )),
        }
    }

    pub(crate) fn required_string(&self, key: &str) -> Result<String, ConfigError> {
        self.string(key)?.ok_or_else(|| self.missing(key))
    }

    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        let Some(item) = self.item(key) else {
            return Ok(None);
        };
        match item.as_bool() {
            Some(value) => Ok(Some(value)),
            None => Err(self.error(
                key,
                format!(
                    "expected a boolean (true or false), got {}",
                    describe(item, true)
                ),
            )),
        }
    }

    /// An integer of at least 1 that fits in `T`.
    pub(crate) fn positive_integer<T: TryFrom<i64>>(
        &self,
        key: &str,
    ) -> Result<Option<T>, ConfigError> {
        let Some(item) = self.item(key) else {
            return Ok(None);
        };
        let wrong = || {
            self.error(
                key,
                format!("expected a positive integer, got {}", describe(item, true)),
            )
        };
        let value = item.as_integer().ok_or_else(wrong)?;
        if value < 1 {
            return Err(wrong());
        }
        T::try_from(value)
            .map(Some)
            .map_err(|_| self.error(key, format!("integer {value} is too large")))
    }

    /// A number of seconds, integer or fractional; zero only if allowed.
    pub(crate) fn seconds(
        &self,
        key: &str,
        zero_allowed: bool,
    ) -> Result<Option<Duration>, ConfigError> {
        let Some(item) = self.item(key) else {
            return Ok(None);
        };
        let expected = if zero_allowed {
            "a number of seconds (0 or more)"
        } else {
            "a positive number of seconds"
        };
        let wrong = || {
            self.error(
                key,
                format!("expected {expected}, got {}", describe(item, true)),
            )
        };
        let duration = match item.as_value() {
            Some(Value::Integer(seconds)) => {
                let seconds = *seconds.value();
                u64::try_from(seconds)
                    .map(Duration::from_secs)
                    .map_err(|_| wrong())?
            }
            Some(Value::Float(seconds)) => {
                let seconds = *seconds.value();
                if seconds.is_nan() || seconds < 0.0 {
                    return Err(wrong());
                }
                Duration::try_from_secs_f64(seconds)
                    .map_err(|_| self.error(key, format!("{seconds} seconds is too long")))?
            }
            _ => return Err(wrong()),
        };
        if duration.is_zero() && !zero_allowed {
            return Err(wrong());
        }
        Ok(Some(duration))
    }

    /// A number in (0, 1]; integers are accepted (only `1` fits).
    pub(crate) fn fraction(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        let Some(item) = self.item(key) else {
            return Ok(None);
        };
        let value = match item.as_value() {
            Some(Value::Integer(value)) => Some(*value.value() as f64),
            Some(Value::Float(value)) => Some(*value.value()),
            _ => None,
        };
        match value {
            Some(value) if value > 0.0 && value <= 1.0 => Ok(Some(value)),
            _ => Err(self.error(
                key,
                format!(
                    "expected a fraction in (0, 1], such as 0.8, got {}",
                    describe(item, true)
                ),
            )),
        }
    }

    /// The sub-table at `key`, either a `[section]` or an inline table.
    pub(crate) fn table(&self, key: &str) -> Result<Option<TableReader<'a>>, ConfigError> {
        let Some(item) = self.item(key) else {
            return Ok(None);
        };
        match item.as_table_like() {
            Some(table) => Ok(Some(TableReader::nested(
                self.source,
                item.span(),
                table,
                self.key_path(key),
                self.line_of(key),
            ))),
            None => Err(self.error(
                key,
                format!("expected a table, got {}", describe(item, true)),
            )),
        }
    }
}

/// A line number for messages, `?` when unknown.
pub(crate) fn display_line(line: Option<usize>) -> String {
    line.map_or_else(|| "?".to_owned(), |line| line.to_string())
}

/// What a value is, for "expected X, got Y" messages. Values are only shown
/// when `reveal` is set (never for a secret-capable key), strings shortened.
pub(crate) fn describe(item: &Item, reveal: bool) -> String {
    const MAX_SHOWN_CHARS: usize = 40;
    let value = match item {
        Item::None => return "nothing".to_owned(),
        Item::Table(_) => return "a table".to_owned(),
        Item::ArrayOfTables(_) => return "an array of tables".to_owned(),
        Item::Value(value) => value,
    };
    match value {
        Value::String(text) if reveal => {
            let text = text.value();
            if text.chars().count() > MAX_SHOWN_CHARS {
                let shown: String = text.chars().take(MAX_SHOWN_CHARS).collect();
                format!("the string {shown:?}…")
            } else {
                format!("the string {text:?}")
            }
        }
        Value::Integer(number) if reveal => number.value().to_string(),
        Value::Float(number) if reveal => number.value().to_string(),
        Value::Boolean(flag) if reveal => flag.value().to_string(),
        Value::String(_) => "a string".to_owned(),
        Value::Integer(_) => "an integer".to_owned(),
        Value::Float(_) => "a float".to_owned(),
        Value::Boolean(_) => "a boolean".to_owned(),
        Value::Datetime(_) => "a date-time".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::InlineTable(_) => "a table".to_owned(),
    }
}
