//! Secrets files: flat TOML mappings of names to strings, referred to as `secret:NAME` in a runner.
//!
//! As in heptapod-paas-runner, the file named by a runner's `secrets_file` is
//! read when the configuration is loaded (a relative path is relative to the
//! current directory), so that the main file can be readable by people who
//! must not read the secrets. Error messages name secrets, never show them.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use toml_edit::ImDocument;

use crate::reader::{Source, TableReader};
use crate::ConfigError;

/// The prefix of a value to look up in the secrets file.
pub const SECRET_PREFIX: &str = "secret:";

/// Reads a file's text; `std::fs::read_to_string` outside tests.
pub(crate) type ReadFile<'r> = &'r dyn Fn(&Path) -> io::Result<String>;

/// The secrets available to one runner.
pub(crate) struct Secrets {
    file: Option<SecretsFile>,
}

struct SecretsFile {
    path: PathBuf,
    /// `None` for an entry that is not a string.
    values: BTreeMap<String, Option<String>>,
}

impl Secrets {
    /// Loads the secrets file named by `key` of `runner`, if any.
    pub(crate) fn load(
        runner: &TableReader<'_>,
        key: &str,
        read_file: ReadFile<'_>,
    ) -> Result<Self, ConfigError> {
        let Some(path) = runner.string(key)? else {
            return Ok(Secrets { file: None });
        };
        let path = PathBuf::from(path);
        let text = read_file(&path).map_err(|error| {
            runner.error(
                key,
                format!("cannot read secrets file {}: {error}", path.display()),
            )
        })?;
        let document = ImDocument::parse(text.as_str()).map_err(|error| {
            let position = error
                .span()
                .map(|span| Source::new(&path, &text).position_of(span.start));
            let at = position.map_or_else(String::new, |(line, column)| {
                format!(" at line {line}, column {column}")
            });
            // The parser's message describes the grammar, not the text, but
            // the usual rendering quotes the faulty line: leave it out.
            runner.error(
                key,
                format!(
                    "secrets file {}: invalid TOML{at}: {}",
                    path.display(),
                    error.message().trim_end()
                ),
            )
        })?;
        let values = document
            .as_table()
            .iter()
            .map(|(name, item)| (name.to_owned(), item.as_str().map(str::to_owned)))
            .collect();
        Ok(Secrets {
            file: Some(SecretsFile { path, values }),
        })
    }

    /// `value` itself, or the secret it names if it is written `secret:NAME`.
    /// `table` and `key` locate the value for error messages.
    pub(crate) fn resolve(
        &self,
        value: String,
        table: &TableReader<'_>,
        key: &str,
    ) -> Result<String, ConfigError> {
        self.resolve_at(value, |message| table.error(key, message))
    }

    /// Like [`Secrets::resolve`], with errors made by `error`.
    pub(crate) fn resolve_at(
        &self,
        value: String,
        error: impl Fn(String) -> ConfigError,
    ) -> Result<String, ConfigError> {
        let Some(name) = value.strip_prefix(SECRET_PREFIX) else {
            return Ok(value);
        };
        if name.is_empty() {
            return Err(error(format!("empty secret name after `{SECRET_PREFIX}`")));
        }
        let Some(file) = &self.file else {
            return Err(error(format!(
                "refers to secret `{name}`, but this runner has no `secrets_file`"
            )));
        };
        match file.values.get(name) {
            Some(Some(secret)) => Ok(secret.clone()),
            Some(None) => Err(error(format!(
                "secret `{name}` in secrets file {} is not a string",
                file.path.display()
            ))),
            None => Err(error(format!(
                "secret `{name}` not found in secrets file {}",
                file.path.display()
            ))),
        }
    }
}
