//! The service's Unix signals and its systemd notifications.
//!
//! Handlers are installed first thing in `paas-runner run`, before the
//! configuration is even read: until a handler exists the kernel's default
//! action applies, which kills the process on `SIGHUP` and `SIGUSR1` and
//! dumps core on `SIGQUIT`.
//!
//! - `SIGTERM`, `SIGINT`, `SIGQUIT` (gitlab-runner's graceful stop): stop
//!   acquiring jobs, let in-flight calls complete, exit 0. A second one
//!   exits at once with status 1 (every job's state is already recorded).
//! - `SIGUSR1` (heptapod-paas-runner's `--debug-signal`): write a state dump
//!   to the log (info) and to `<state database>.dump.json`; never stops.
//! - `SIGHUP`: reload the configuration ([`crate::reload`]); a signal that
//!   arrives while the service starts is kept and served once it runs.
//!
//! systemd (`Type=notify`): `READY=1` once the service takes jobs,
//! `RELOADING=1` (with `MONOTONIC_USEC`) then `READY=1` around a reload,
//! `STOPPING=1` when a stop begins, `WATCHDOG=1` every half of
//! `WatchdogSec` while the runtime turns. Without `NOTIFY_SOCKET` nothing
//! is sent.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sd_notify::NotifyState;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::snapshot::Snapshot;
use crate::status::{self, StatusConfig};

/// The signals of a running service.
#[derive(Clone)]
pub struct ServiceSignals {
    stop: CancellationToken,
    dump_target: Arc<Mutex<Option<DumpTarget>>>,
    /// Woken by `SIGHUP` (one stored wake-up at most: signals that arrive
    /// during a reload make one more).
    reload: Arc<tokio::sync::Notify>,
}

/// What a state dump reads, and where it writes.
struct DumpTarget {
    snapshots: watch::Receiver<Snapshot>,
    status_config: StatusConfig,
    path: PathBuf,
}

impl ServiceSignals {
    /// Installs the handlers and spawns the task that reacts to them. Call
    /// it inside the runtime, before anything else.
    pub fn install() -> std::io::Result<ServiceSignals> {
        let streams = Streams {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
        };
        let signals = ServiceSignals {
            stop: CancellationToken::new(),
            dump_target: Arc::new(Mutex::new(None)),
            reload: Arc::new(tokio::sync::Notify::new()),
        };
        tokio::spawn(listen(streams, signals.clone()));
        Ok(signals)
    }

    /// Resolves once a stop signal arrived (at once if one already did).
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + 'static {
        self.stop.clone().cancelled_owned()
    }

    /// What `SIGHUP` wakes.
    pub fn reload_requests(&self) -> Arc<tokio::sync::Notify> {
        self.reload.clone()
    }

    /// From now on, `SIGUSR1` dumps `snapshots` to the log and to `path`.
    pub fn dump_from(
        &self,
        snapshots: watch::Receiver<Snapshot>,
        status_config: StatusConfig,
        path: PathBuf,
    ) {
        *lock(&self.dump_target) = Some(DumpTarget {
            snapshots,
            status_config,
            path,
        });
    }
}

/// Where `SIGUSR1` writes its dump: beside the state database.
pub fn dump_path(store_path: &Path) -> PathBuf {
    let mut name = store_path.file_name().unwrap_or_default().to_os_string();
    name.push(".dump.json");
    store_path.with_file_name(name)
}

struct Streams {
    term: Signal,
    int: Signal,
    quit: Signal,
    hup: Signal,
    usr1: Signal,
}

async fn listen(mut streams: Streams, signals: ServiceSignals) {
    loop {
        let stop_signal = tokio::select! {
            _ = streams.term.recv() => "SIGTERM",
            _ = streams.int.recv() => "SIGINT",
            _ = streams.quit.recv() => "SIGQUIT",
            _ = streams.hup.recv() => {
                info!(signal = "SIGHUP", "configuration reload requested");
                signals.reload.notify_one();
                continue;
            }
            _ = streams.usr1.recv() => {
                dump_state(&signals.dump_target);
                continue;
            }
        };
        if signals.stop.is_cancelled() {
            warn!(
                signal = stop_signal,
                "second stop signal: exiting now; recorded jobs will be resumed at the next start"
            );
            std::process::exit(1);
        }
        info!(
            signal = stop_signal,
            "graceful stop requested: no new job will be acquired"
        );
        notify(&[NotifyState::Stopping]);
        signals.stop.cancel();
    }
}

/// Jobs listed in the dump's log line at most.
const DUMP_LOG_JOBS: usize = 50;

/// Writes the state dump (`SIGUSR1`): one info line with the figures, and
/// the whole document (no token, no payload: the same as `/status.json`)
/// to the dump file, written atomically with mode 0600.
fn dump_state(target: &Mutex<Option<DumpTarget>>) {
    let guard = lock(target);
    let Some(target) = guard.as_ref() else {
        info!(
            signal = "SIGUSR1",
            "state dump: the service is still starting (configuration, credentials, catalogue); no job is tracked yet"
        );
        return;
    };
    let snapshot = target.snapshots.borrow().clone();
    let mut document = status::status_value(&snapshot, &target.status_config);
    let dumped_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    document["dumped_at"] = serde_json::json!(dumped_at);
    let stats = &snapshot.stats;
    let written = write_private_file(&target.path, document.to_string().as_bytes());
    // The log line lists the first jobs only; the file has them all.
    let mut jobs: Vec<String> = snapshot
        .jobs
        .iter()
        .take(DUMP_LOG_JOBS)
        .map(|job| format!("{}#{}:{}", job.runner, job.job_id, job.stage))
        .collect();
    if snapshot.jobs.len() > DUMP_LOG_JOBS {
        jobs.push(format!("… {} more", snapshot.jobs.len() - DUMP_LOG_JOBS));
    }
    match written {
        Ok(()) => info!(
            signal = "SIGUSR1",
            jobs = stats.jobs,
            weight_used = format!("{:.1}", stats.weight),
            weight_reserved = format!("{:.1}", stats.reserved_weight),
            quota = format!("{:.1}", stats.quota),
            polls_in_flight = stats.polls_in_flight,
            tracked = ?jobs,
            dump = %target.path.display(),
            "state dump"
        ),
        Err(error) => warn!(
            signal = "SIGUSR1",
            jobs = stats.jobs,
            weight_used = format!("{:.1}", stats.weight),
            quota = format!("{:.1}", stats.quota),
            tracked = ?jobs,
            dump = %target.path.display(),
            %error,
            "state dump: cannot write the dump file; figures logged only"
        ),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// (mode 0600), renamed over it.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_private_file_owned(path, bytes, None)
}

/// [`write_private_file`], the new file given `owner` (uid, gid) first when
/// set and allowed (a root operator editing a service user's file keeps it
/// readable by that user).
pub fn write_private_file_owned(
    path: &Path,
    bytes: &[u8],
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".paas-runner-")
        .tempfile_in(dir)?;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    if let Some((uid, gid)) = owner {
        // Not allowed unless root or already the owner: then the writer
        // owns the new file, as with any edit.
        let _ = std::os::unix::fs::fchown(file.as_file(), Some(uid), Some(gid));
    }
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|error| error.error)?;
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends `states` to systemd when it supervises the process.
pub fn notify(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        warn!(%error, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// Tells systemd the service is ready, and keeps its watchdog fed when
/// `WatchdogSec` is set.
pub fn notify_ready() {
    notify(&[NotifyState::Ready]);
    if let Some(interval) = sd_notify::watchdog_enabled() {
        let period = (interval / 2).max(Duration::from_millis(100));
        info!(
            watchdog = ?interval,
            "systemd watchdog enabled: notifying every {period:?}"
        );
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            loop {
                ticks.tick().await;
                notify(&[NotifyState::Watchdog]);
            }
        });
    } else {
        debug!("no systemd watchdog");
    }
}

/// Logs an error when the handlers cannot be installed (then the default
/// actions apply).
pub fn install_or_log() -> Option<ServiceSignals> {
    match ServiceSignals::install() {
        Ok(signals) => Some(signals),
        Err(error) => {
            error!(%error, "cannot install signal handlers");
            None
        }
    }
}

/// The handlers of this process, once `run` installed them (signals are
/// process-wide, hence one global).
static INSTALLED: std::sync::OnceLock<ServiceSignals> = std::sync::OnceLock::new();

/// Records the process's handlers (see [`installed`]).
pub fn set_installed(signals: ServiceSignals) {
    let _ = INSTALLED.set(signals);
}

/// The process's handlers, if `run` installed them.
pub fn installed() -> Option<&'static ServiceSignals> {
    INSTALLED.get()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_dump_sits_beside_the_state_database() {
        assert_eq!(
            dump_path(Path::new("/var/lib/paas-runner/state.db")),
            Path::new("/var/lib/paas-runner/state.db.dump.json")
        );
    }

    #[test]
    fn private_files_are_replaced_whole_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private_file(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["config.toml"]);
    }
}
