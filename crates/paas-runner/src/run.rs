//! `paas-runner run CONFIG`: the service.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use paas_store::{Store, StoreError};
use rand::distributions::Alphanumeric;
use rand::Rng;
use tracing::{error, info, warn};

use crate::driver::Driver;
use crate::setup::{self, SetupError};
use crate::status;

/// Exit status for configuration errors.
pub const EXIT_CONFIG: u8 = 2;

pub async fn main(config_path: &Path) -> ExitCode {
    let config = match paas_config::load(config_path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("paas-runner: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for warning in &config.warnings {
        warn!("{}: {warning}", config_path.display());
    }
    if let Err(error) = paas_config::check_state_file(config_path, config.state_file.as_deref()) {
        eprintln!("paas-runner: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match serve(&config, config_path, shutdown_signal(), None).await {
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
    shutdown: impl std::future::Future<Output = ()>,
    ready: Option<
        tokio::sync::oneshot::Sender<tokio::sync::watch::Receiver<crate::driver::Snapshot>>,
    >,
) -> anyhow::Result<()> {
    // The store's lock comes before anything touches the store (import,
    // restore, reconciliation): a second service stops here.
    let store_path = paas_store::resolve_store_path(config.state_file.as_deref());
    if config.state_file.is_none() {
        warn!(
            store = %store_path.display(),
            "NO state_file CONFIGURED: the state database is in the current directory; \
             a service started from another directory would not see these jobs; \
             set state_file to an absolute path"
        );
    }
    let store = Store::open_exclusive(&store_path)?;
    info!(
        store = %store.path().display(),
        lock = %store.lock().map(|lock| lock.path().display().to_string()).unwrap_or_default(),
        "state store opened and locked"
    );
    if let Some(state_file) = config
        .state_file
        .as_deref()
        .filter(|path| paas_store::store_path(path) != *path)
    {
        crate::import::import_if_present(state_file, &store)?;
    }
    let system_id = match store.get_meta("system_id")? {
        Some(id) => id,
        None => {
            let suffix: String = rand::thread_rng()
                .sample_iter(&Alphanumeric)
                .take(12)
                .map(char::from)
                .collect();
            let id = format!("r_{suffix}");
            store.set_meta("system_id", &id)?;
            id
        }
    };
    let http = setup::http_client()?;
    tokio::pin!(shutdown);
    let (dispatcher, runners) = tokio::select! {
        prepared = setup::prepare(config, config_path, http) => prepared?,
        () = &mut shutdown => {
            info!("stopped before the service was ready");
            return Ok(());
        }
    };
    info!(store = %store_path.display(), %system_id, runners = runners.len(), "paas-runner started");
    let started_at = std::time::SystemTime::now();
    let mut driver = Driver::new(dispatcher, runners, store, system_id.clone());
    driver.restore()?;
    if let Some(listen_address) = &config.listen_address {
        let address = status::bind_address(listen_address);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .with_context(|| {
                format!("listen_address {listen_address:?}: cannot listen on {address}")
            })?;
        let local_address = listener.local_addr()?;
        info!(address = %local_address, "status server listening (metrics, status page)");
        let status_config = status::StatusConfig::new(system_id, started_at);
        let snapshots = driver.subscribe();
        tokio::spawn(async move {
            if let Err(error) = status::serve(listener, snapshots, status_config).await {
                error!(%error, "status server stopped");
            }
        });
    }
    if let Some(ready) = ready {
        let _ = ready.send(driver.subscribe());
    }
    driver.run(shutdown).await
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
