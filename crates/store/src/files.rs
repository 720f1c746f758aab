//! The store's files are private: mode 0600 for the database, its
//! write-ahead (`-wal`) and shared-memory (`-shm`) files and its lock file,
//! enforced at every open, including on files that existed with another mode.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::StoreError;

/// The mode of every file of the store.
pub const PRIVATE_MODE: u32 = 0o600;

/// The side files SQLite keeps next to the database at `db_path`.
pub fn side_files(db_path: &Path) -> [PathBuf; 2] {
    ["-wal", "-shm"].map(|suffix| {
        let mut name = db_path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// Sets the mode of `path` to 0600 if it exists with another one, with a
/// warning; a missing file is fine. Returns whether the mode was changed.
pub fn enforce_private_mode(path: &Path) -> Result<bool, StoreError> {
    let io_err = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(io_err(source)),
    };
    if !metadata.file_type().is_file() {
        return Err(io_err(std::io::Error::other("not a regular file")));
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode == PRIVATE_MODE {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_MODE))
        .map_err(io_err)?;
    tracing::warn!(
        path = %path.display(),
        old_mode = format_args!("{mode:04o}"),
        "state store file was readable or writable by others: mode set to 0600"
    );
    Ok(true)
}
