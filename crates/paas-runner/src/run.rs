//! `paas-runner run CONFIG`: the service.

use std::path::Path;
use std::process::ExitCode;

use paas_store::StoreError;
use tracing::{debug, error, info, warn};

use crate::driver::Driver;
use crate::setup::{self, SetupError};
use crate::status;

pub use crate::reference_options::{ReferenceOptions, REFERENCE_VALUE_OPTIONS};

/// Exit status for configuration errors.
pub const EXIT_CONFIG: u8 = 2;

pub async fn main(config_path: &Path, options: &ReferenceOptions) -> ExitCode {
    // First of all: until handlers exist, SIGHUP or SIGUSR1 would kill the
    // process and SIGQUIT dump core.
    let shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        match crate::signals::install_or_log() {
            Some(signals) => {
                let stopped = signals.stopped();
                crate::signals::set_installed(signals);
                Box::pin(stopped)
            }
            None => Box::pin(shutdown_signal()),
        };
    raise_open_files_limit();
    let mut config = match paas_config::load(config_path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("paas-runner: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for warning in &config.warnings {
        warn!("{warning}");
    }
    options.warn_deprecated();
    options.apply(&mut config);
    // (A PostgreSQL store has no directory to check.)
    let sqlite = matches!(config.store, paas_config::StoreSettings::Sqlite { .. });
    let checked = match sqlite {
        true => paas_config::check_state_file(config_path, config.state_file.as_deref()),
        false => Ok(()),
    };
    if let Err(error) = checked {
        eprintln!("paas-runner: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let settings = crate::statistics::Settings::of(&config, options.poll_cycles);
    let shutdown = async move {
        let cycles = async move {
            match ready_rx.await {
                Ok(snapshots) => crate::statistics::run(snapshots, settings).await,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = cycles => info!("polling cycles done (--poll-cycles): stopping"),
        }
    };
    match serve(&config, config_path, options, shutdown, Some(ready_tx)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if let Some(setup_error) = error.downcast_ref::<SetupError>() {
                eprintln!("paas-runner: {setup_error}");
                return ExitCode::from(EXIT_CONFIG);
            }
            if let Some(locked @ StoreError::Locked { .. }) = error.downcast_ref::<StoreError>() {
                error!(error = %locked, "another service owns the state store: not starting");
                eprintln!("paas-runner: {locked}");
                return ExitCode::from(EXIT_CONFIG);
            }
            if let Some(config_error) = error.downcast_ref::<paas_config::ConfigError>() {
                error!("{config_error}");
                eprintln!("paas-runner: {config_error}");
                return ExitCode::from(EXIT_CONFIG);
            }
            error!("{error:#}");
            eprintln!("paas-runner: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the service until `shutdown` resolves.
pub async fn serve(
    config: &paas_config::Config,
    config_path: &Path,
    overrides: &ReferenceOptions,
    shutdown: impl std::future::Future<Output = ()>,
    ready: Option<
        tokio::sync::oneshot::Sender<tokio::sync::watch::Receiver<crate::snapshot::Snapshot>>,
    >,
) -> anyhow::Result<()> {
    let mut service_store = crate::ha::ServiceStore::open(config, config_path).await?;
    let system_id = service_store.system_id.clone();
    let http = setup::http_client()?;
    tokio::pin!(shutdown);
    let (dispatcher, runners) = tokio::select! {
        prepared = setup::prepare(config, config_path, http.clone(), &system_id) => prepared?,
        () = &mut shutdown => {
            info!("stopped before the service was ready");
            return Ok(());
        }
    };
    let started_at = std::time::SystemTime::now();
    // A standby serves its metrics (its role) too.
    let status_tx = start_status_server(config, config_path, &system_id, started_at).await?;
    // With PostgreSQL: a standby until this replica holds the lease.
    if !service_store.become_active(shutdown.as_mut()).await? {
        return Ok(());
    }
    let store_location = service_store.location.clone();
    info!(store = %store_location, %system_id, runners = runners.len(), "paas-runner started");
    let mut dump_config = status::StatusConfig::new(system_id.clone(), started_at);
    dump_config.replica = crate::ha::replica_status();
    let dump_file = service_store.dump_file.clone();
    let store = service_store.take_store()?;
    let mut driver = Driver::new(dispatcher, runners, store, system_id.clone());
    driver.restore().await?;
    // The status server, up since the standby phase, now shows the driver.
    if let Some(status_tx) = status_tx {
        let mut snapshots = driver.subscribe();
        tokio::spawn(async move {
            while snapshots.changed().await.is_ok() {
                let snapshot = snapshots.borrow_and_update().clone();
                status_tx.send_replace(snapshot);
            }
        });
    }
    if let Some(ready) = ready {
        let _ = ready.send(driver.subscribe());
    }
    if let Some(signals) = crate::signals::installed() {
        signals.dump_from(driver.subscribe(), dump_config, dump_file);
    }
    // SIGHUP and changes of the file reload the configuration.
    crate::reload::spawn(
        config,
        config_path,
        overrides.clone(),
        http,
        system_id,
        driver.reload_handle(),
        crate::signals::installed().map(crate::signals::ServiceSignals::reload_requests),
    );
    crate::signals::notify_ready();
    driver.run(shutdown).await?;
    service_store.release().await;
    Ok(())
}

/// Starts the status server on `listen_address`, if set; it shows what is
/// sent on the returned channel.
async fn start_status_server(
    config: &paas_config::Config,
    config_path: &Path,
    system_id: &str,
    started_at: std::time::SystemTime,
) -> anyhow::Result<Option<tokio::sync::watch::Sender<crate::snapshot::Snapshot>>> {
    let Some(listen_address) = &config.listen_address else {
        return Ok(None);
    };
    let (status_tx, snapshots) = tokio::sync::watch::channel(crate::snapshot::Snapshot::default());
    let address = status::bind_address(listen_address);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|error| {
            paas_config::key_error(
                config_path,
                "listen_address",
                format!(
                    "cannot listen on {address}: {error}; free that port or {}",
                    paas_config::LISTEN_ADDRESS_HINT
                ),
            )
        })?;
    let local_address = listener.local_addr()?;
    let mut status_config = status::StatusConfig::new(system_id.to_owned(), started_at);
    status_config.limits.max_connections = status::connection_cap(open_files_limit());
    status_config.replica = crate::ha::replica_status();
    info!(
        address = %local_address,
        max_connections = status_config.limits.max_connections,
        "status server listening (metrics, status page)"
    );
    tokio::spawn(async move {
        if let Err(error) = status::serve(listener, snapshots, status_config).await {
            error!(%error, "status server stopped");
        }
    });
    Ok(Some(status_tx))
}

/// Raises the soft limit of open files to the hard limit: every job holds
/// connections (coordinator, Clever Cloud, git pushes), and the status
/// server's share is sized from the result ([`status::connection_cap`]).
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let old = getrlimit(Resource::Nofile);
    let (Some(current), Some(maximum)) = (old.current, old.maximum) else {
        debug!(soft = ?old.current, hard = ?old.maximum, "open files limit left as is");
        return;
    };
    if current >= maximum {
        debug!(
            soft = current,
            hard = maximum,
            "open files limit already at its maximum"
        );
        return;
    }
    let new = Rlimit {
        current: Some(maximum),
        maximum: Some(maximum),
    };
    match setrlimit(Resource::Nofile, new) {
        Ok(()) => info!(
            old_soft = current,
            new_soft = maximum,
            "raised the open files limit to its hard limit"
        ),
        Err(error) => {
            warn!(soft = current, hard = maximum, %error, "cannot raise the open files limit")
        }
    }
}

/// The soft limit of open files (`None`: unlimited).
fn open_files_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Resolves on SIGTERM or SIGINT. A second signal exits at once: every job's
/// state is already recorded.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        warn!("second signal: exiting now; recorded jobs will be resumed at the next start");
        std::process::exit(1);
    });
}
