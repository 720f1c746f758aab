//! The driver's side of a configuration reload: the new runners' IO joins
//! the loop, the core gets the new settings ([`Dispatcher::handle_reconfigure`]),
//! and the log says what changed. Loading, checking and watching the file
//! happen outside the loop ([`crate::reload`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use paas_core::{FlavorTable, RunnerIdx, RunnerUpdate};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::{Driver, Event};
use crate::runners::RunnerIo;

/// A loaded and checked configuration, for the loop to apply.
pub struct ReloadRequest {
    /// The new configuration (settings that need a restart already set
    /// back to the running values).
    pub config: paas_config::Config,
    pub config_path: PathBuf,
    /// The runners of the new configuration, in its order.
    pub runners: Vec<ReloadRunner>,
    /// Global keys whose value changed, for the log.
    pub changed_keys: Vec<&'static str>,
    /// The index of each runner of `runners`, or why nothing was applied.
    pub applied: oneshot::Sender<Result<Vec<RunnerIdx>, String>>,
}

impl std::fmt::Debug for ReloadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadRequest")
            .field("config_path", &self.config_path)
            .field(
                "runners",
                &self
                    .runners
                    .iter()
                    .map(|runner| (&runner.io.name, runner.continues))
                    .collect::<Vec<_>>(),
            )
            .field("changed_keys", &self.changed_keys)
            .finish_non_exhaustive()
    }
}

/// One runner of a new configuration.
pub struct ReloadRunner {
    /// The running runner it continues (same token and connection
    /// settings); `None`: a new one.
    pub continues: Option<RunnerIdx>,
    pub io: Arc<RunnerIo>,
    /// Its catalogue, read for a new runner; a continued one keeps the
    /// catalogue the loop has.
    pub flavors: Option<FlavorTable>,
}

/// Sends reloads to a running [`Driver`].
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<Event>);

impl ReloadHandle {
    /// Hands `request` to the loop; false once the loop is gone.
    pub async fn send(&self, request: ReloadRequest) -> bool {
        self.0.send(Event::Reload(Box::new(request))).await.is_ok()
    }
}

impl Driver {
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle(self.events_tx.clone())
    }

    pub(super) fn apply_reload(&mut self, request: ReloadRequest, now: Instant) {
        let ReloadRequest {
            config,
            config_path,
            runners,
            changed_keys,
            applied,
        } = request;
        if self.core.is_shutting_down() {
            // Dropping `applied` ends the reload task quietly.
            return;
        }
        // Only running runners can be continued (the core adds the others).
        let continues: Vec<Option<RunnerIdx>> = runners
            .iter()
            .map(|runner| {
                runner
                    .continues
                    .filter(|idx| *idx < self.runners.len() && !self.core.is_retired(*idx))
            })
            .collect();
        let tables: Vec<FlavorTable> = runners
            .iter()
            .zip(&continues)
            .map(|(runner, continued)| match (&runner.flavors, continued) {
                (Some(table), _) => table.clone(),
                (None, Some(idx)) => self.core.runner(*idx).flavors.clone(),
                (None, None) => FlavorTable::default(),
            })
            .collect();
        let ios: Vec<Arc<RunnerIo>> = runners.iter().map(|runner| runner.io.clone()).collect();
        let (dispatcher_config, specs) =
            match crate::setup::plan(&config, &config_path, &ios, tables) {
                Ok(planned) => planned,
                Err(error) => {
                    let _ = applied.send(Err(error.to_string()));
                    return;
                }
            };
        let updates = specs
            .into_iter()
            .zip(&continues)
            .map(|(spec, continued)| RunnerUpdate {
                continues: *continued,
                spec,
            })
            .collect();
        let summary = self
            .core
            .handle_reconfigure(dispatcher_config, updates, now);

        // The same indices as the core's: continued runners keep theirs,
        // new ones are appended in order. Calls under way keep the handles
        // they hold; retired runners keep theirs for their last jobs.
        let mut slots: Vec<Arc<RunnerIo>> = self.runners.iter().cloned().collect();
        let mut indices = Vec::with_capacity(ios.len());
        for (io, continued) in ios.into_iter().zip(continues) {
            match continued {
                Some(idx) => {
                    slots[idx] = io;
                    indices.push(idx);
                }
                None => {
                    indices.push(slots.len());
                    slots.push(io);
                    self.last_update.push(None);
                    self.listed_once.push(false);
                    self.foreign_seen.push(Vec::new());
                }
            }
        }
        self.runners = Arc::new(slots);

        if summary.is_empty() && changed_keys.is_empty() {
            info!(
                quota = format!("{:.1}", summary.quota_after),
                "configuration reloaded: nothing that matters to the jobs changed"
            );
        } else {
            Self::log_reload(&summary, &changed_keys);
        }
        for removed in summary.retired.iter().filter(|removed| removed.jobs > 0) {
            info!(
                runner = %removed.name,
                jobs = removed.jobs,
                "runner removed from the configuration: it takes no more jobs; its jobs in flight run to their end"
            );
        }
        if summary.over_quota() {
            warn!(
                weight_used = format!("{:.1}", summary.weight_in_use),
                quota = format!("{:.1}", summary.quota_after),
                "the new quota is below the weight in use: no job is stopped, and none is taken until the weight fits"
            );
        }
        let _ = applied.send(Ok(indices));
    }

    fn log_reload(summary: &paas_core::ReloadSummary, changed_keys: &[&'static str]) {
        let names = |changes: &[paas_core::RunnerChange]| -> Vec<String> {
            changes.iter().map(|change| change.name.clone()).collect()
        };
        info!(
            runners_added = ?names(&summary.added),
            runners_removed = ?names(&summary.retired),
            runners_changed = ?names(&summary.changed),
            quota_old = format!("{:.1}", summary.quota_before),
            quota_new = format!("{:.1}", summary.quota_after),
            concurrent_old = summary.concurrent_before,
            concurrent_new = summary.concurrent_after,
            keys_changed = ?changed_keys,
            "configuration reloaded"
        );
    }
}
