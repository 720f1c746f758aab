//! The directory of `state_file` must exist and take new files: checked when
//! the service starts, so that a wrong path is a configuration error (file,
//! line, key) rather than a late failure.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use toml_edit::ImDocument;

use crate::reader::{Source, TableReader};
use crate::ConfigError;

const KEY: &str = "state_file";

/// Checks that the state database can be created next to `state_file`, as
/// set in the configuration file at `config_path` (the current directory
/// when unset): the directory exists, is a directory, and a file can be
/// created in it (tried for real, then removed, so that it also holds for
/// root, read-only mounts and access control lists). Relative paths are
/// relative to the current directory.
pub fn check_state_file(config_path: &Path, state_file: Option<&Path>) -> Result<(), ConfigError> {
    let error = |message: String| {
        let text = std::fs::read_to_string(config_path).unwrap_or_default();
        let source = Source::new(config_path, &text);
        let line = match (state_file, ImDocument::parse(text.as_str())) {
            (Some(_), Ok(document)) => TableReader::root(&source, document.as_table())
                .line_of(KEY)
                .filter(|_| document.as_table().contains_key(KEY)),
            _ => None,
        };
        source.error(line, Some(KEY), message)
    };
    let (dir, advice) = match state_file {
        Some(file) => {
            if file.is_dir() {
                return Err(error(format!(
                    "{:?} is a directory: name a file in it, for example {:?}",
                    absolute(file),
                    file.join(crate::DEFAULT_STATE_FILE)
                )));
            }
            let dir = match file.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                _ => PathBuf::from("."),
            };
            (dir, "or set state_file to a file in a writable directory")
        }
        None => (
            PathBuf::from("."),
            "or set state_file to an absolute path in a writable directory",
        ),
    };
    let shown = absolute(&dir);
    let unset = if state_file.is_none() {
        "not set, so the state database goes to the current directory; "
    } else {
        ""
    };
    match std::fs::metadata(&dir) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => {
            return Err(error(format!(
                "{unset}{shown:?} is not a directory: {advice}"
            )))
        }
        Err(io) if io.kind() == ErrorKind::NotFound => {
            return Err(error(format!(
            "{unset}directory {shown:?} does not exist: create it (mkdir -p {shown:?}), {advice}"
        )))
        }
        Err(io) if io.kind() == ErrorKind::NotADirectory => {
            return Err(error(format!(
                "{unset}{shown:?} is not a directory (part of its path is a file): {advice}"
            )))
        }
        Err(io) => {
            return Err(error(format!(
                "{unset}directory {shown:?} cannot be read: {io}; {advice}"
            )))
        }
    }
    let probe = dir.join(format!(".paas-runner-write-check.{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        // Left over by a process with the same pid: the directory takes files.
        Err(io) if io.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(io) => Err(error(format!(
            "{unset}no file can be created in directory {shown:?} ({io}), and the state \
             database, its side files and its lock file go there: make it writable by the \
             service's user, {advice}"
        ))),
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration file setting `state_file` on line 3.
    fn config_with(dir: &Path, state_file: &Path) -> PathBuf {
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            format!(
                "concurrent = 2\n\nstate_file = {:?}\n",
                state_file.to_str().unwrap()
            ),
        )
        .unwrap();
        path
    }

    #[test]
    fn an_existing_writable_directory_is_accepted_and_left_clean() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let config = config_with(dir.path(), &state);
        check_state_file(&config, Some(&state)).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["config.toml"]);
        // The current directory (state_file unset) of the tests is writable.
        check_state_file(&config, None).unwrap();
    }

    #[test]
    fn a_missing_directory_is_named_with_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("missing/sub/state.db");
        let config = config_with(dir.path(), &state);
        let error = check_state_file(&config, Some(&state)).unwrap_err();
        assert_eq!(error.line(), Some(3));
        assert_eq!(error.key(), Some("state_file"));
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "{}:3: key `state_file`: directory ",
                config.display()
            )) && message.contains("missing/sub")
                && message.contains("does not exist: create it (mkdir -p"),
            "{message}"
        );
    }

    /// Tests run as root, whom permission bits do not stop: a parent that is
    /// a regular file fails for every user. (A directory without write
    /// permission, a read-only mount or an access control list are caught by
    /// the same real creation attempt, not covered here.)
    #[test]
    fn a_directory_that_cannot_take_files_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, "a file").unwrap();
        let state = blocker.join("state.db");
        let config = config_with(dir.path(), &state);
        let error = check_state_file(&config, Some(&state)).unwrap_err();
        assert_eq!((error.line(), error.key()), (Some(3), Some("state_file")));
        assert!(
            error.message().contains("not-a-dir\" is not a directory")
                && error
                    .message()
                    .contains("set state_file to a file in a writable directory"),
            "{error}"
        );

        let state = blocker.join("deeper/state.db");
        let error = check_state_file(&config, Some(&state)).unwrap_err();
        assert!(
            error
                .message()
                .contains("is not a directory (part of its path is a file)"),
            "{error}"
        );

        let error = check_state_file(&config, Some(dir.path())).unwrap_err();
        assert!(
            error
                .message()
                .contains("is a directory: name a file in it"),
            "{error}"
        );
    }
}
