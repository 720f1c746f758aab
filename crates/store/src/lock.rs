//! One owner per state store: an exclusive OS lock on `<database>.lock`,
//! held for the life of the owning process, with who holds it written inside.
//!
//! The lock is `flock(2)` (through `File::try_lock`): the kernel drops it when
//! its holder exits, however it exits, so a lock file left behind by a dead
//! process never blocks anybody. What is written in the file is only a
//! description for messages; the OS lock is what counts.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{files, StoreError};

/// Longest holder description read back from a lock file.
const MAX_HOLDER_BYTES: u64 = 1024;

/// The lock file of the database at `db_path`: `<db_path>.lock`.
pub fn lock_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Who holds (or held) a store: written in the lock file by its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Host name of the owner, cut and stripped of control characters.
    pub host: String,
    pub pid: Option<u32>,
    /// When the owner took the lock.
    pub since: Option<SystemTime>,
}

impl Holder {
    /// This process, now.
    fn this_process() -> Holder {
        Holder {
            host: host_name(),
            pid: Some(std::process::id()),
            // Whole seconds, as written in the file.
            since: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|now| UNIX_EPOCH + Duration::from_secs(now.as_secs())),
        }
    }

    fn to_file_text(&self) -> String {
        let since = self
            .since
            .and_then(|since| since.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |since| since.as_secs());
        format!(
            "host={}\npid={}\nsince={since}\n",
            self.host,
            self.pid.unwrap_or(0)
        )
    }

    /// Reads what an owner wrote; anything else in the file is ignored. The
    /// text is data from another process: values are cut and cleaned.
    fn parse(text: &str) -> Holder {
        let mut holder = Holder {
            host: "unknown host".to_owned(),
            pid: None,
            since: None,
        };
        for line in text.lines() {
            match line.split_once('=') {
                Some(("host", value)) => holder.host = clean(value),
                Some(("pid", value)) => holder.pid = value.trim().parse().ok().filter(|&p| p > 0),
                Some(("since", value)) => {
                    holder.since = value
                        .trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|&secs| secs > 0)
                        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
                }
                _ => {}
            }
        }
        holder
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host {}", self.host)?;
        match self.pid {
            Some(pid) => write!(f, ", pid {pid}")?,
            None => f.write_str(", unknown pid")?,
        }
        match self.since {
            Some(since) => write!(f, ", since {}", httpdate::fmt_http_date(since)),
            None => f.write_str(", since an unknown time"),
        }
    }
}

/// The exclusive lock of a store, released when dropped (or when the
/// process ends).
#[derive(Debug)]
pub struct StoreLock {
    // Holds the flock; never read.
    _file: File,
    path: PathBuf,
    holder: Holder,
}

impl StoreLock {
    /// Takes the lock of the database at `db_path` (which need not exist), or
    /// fails at once with [`StoreError::Locked`] naming the current holder.
    pub fn acquire(db_path: &Path) -> Result<StoreLock, StoreError> {
        let path = lock_path(db_path);
        let io_err = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: db_path.to_path_buf(),
                    holder: read_holder(&mut file),
                })
            }
            Err(TryLockError::Error(source)) => return Err(io_err(source)),
        }
        files::enforce_private_mode(&path)?;
        let holder = Holder::this_process();
        file.set_len(0).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        file.write_all(holder.to_file_text().as_bytes())
            .map_err(io_err)?;
        Ok(StoreLock {
            _file: file,
            path,
            holder,
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This process, as written in the lock file.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }
}

/// Who holds the lock of the database at `db_path` right now, if anybody:
/// lets a command tell whether a service owns a store. A lock file left by a
/// process that is gone gives `None`.
///
/// The check takes a shared lock for an instant; a service starting at that
/// very instant may be refused once (and says by whom).
pub fn lock_holder(db_path: &Path) -> Result<Option<Holder>, StoreError> {
    let path = lock_path(db_path);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StoreError::Io { path, source }),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(None),
        Err(TryLockError::WouldBlock) => Ok(Some(read_holder(&mut file))),
        Err(TryLockError::Error(source)) => Err(StoreError::Io { path, source }),
    }
}

fn read_holder(file: &mut File) -> Holder {
    let mut text = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    // A holder that has not written yet, or junk: described as unknown.
    let _ = Read::by_ref(file)
        .take(MAX_HOLDER_BYTES)
        .read_to_string(&mut text);
    Holder::parse(&text)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| clean(&name))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown host".to_owned())
}

/// At most 64 characters, without control characters or surrounding blanks.
fn clean(text: &str) -> String {
    text.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn second_lock_is_refused_naming_the_holder_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let first = StoreLock::acquire(&db).unwrap();
        assert_eq!(first.holder().pid, Some(std::process::id()));
        assert_eq!(lock_holder(&db).unwrap().as_ref(), Some(first.holder()));

        let err = StoreLock::acquire(&db).unwrap_err();
        let StoreError::Locked { holder, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(holder, first.holder());
        let message = err.to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id()))
                && message.contains(&first.holder().host)
                && message.contains("since ")
                && message.contains("state.db"),
            "{message}"
        );
        let mode = std::fs::metadata(first.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);

        drop(first);
        assert_eq!(lock_holder(&db).unwrap(), None);
        let second = StoreLock::acquire(&db).unwrap();
        drop(second);
    }

    #[test]
    fn a_stale_lock_file_of_a_dead_process_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        std::fs::write(
            lock_path(&db),
            "host=elsewhere\npid=999999\nsince=1700000000\n",
        )
        .unwrap();
        assert_eq!(lock_holder(&db).unwrap(), None);
        let lock = StoreLock::acquire(&db).unwrap();
        let text = std::fs::read_to_string(lock.path()).unwrap();
        assert!(
            text.contains(&format!("pid={}", std::process::id())) && !text.contains("elsewhere"),
            "{text}"
        );
    }

    #[test]
    fn holder_text_from_the_file_is_cleaned() {
        let holder = Holder::parse("host=evil\u{1b}[31m\rhost\npid=abc\nsince=x\n");
        assert_eq!(holder.host, "evil[31mhost");
        assert_eq!(holder.pid, None);
        assert_eq!(
            holder.to_string(),
            "host evil[31mhost, unknown pid, since an unknown time"
        );
        let holder = Holder::parse("host=a\npid=12\nsince=1700000000\n");
        assert_eq!(
            holder.to_string(),
            "host a, pid 12, since Tue, 14 Nov 2023 22:13:20 GMT"
        );
    }
}
