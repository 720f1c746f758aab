//! Configuration reload, as gitlab-runner does it: on `SIGHUP`, and when the
//! configuration file changes (checked every [`WATCH_PERIOD`]).
//!
//! A task outside the event loop reads the file, sorts its runners into
//! continued ones (same token and connection settings: same index, same
//! kind of clients) and new ones (credentials checked, catalogue read, as
//! at start), then hands the result to the loop ([`ReloadRequest`]), which
//! checks it against the catalogues ([`crate::setup::plan`]) and applies it
//! to the core. Anything refused keeps the running configuration, with the
//! error logged (file, line and key where the file is at fault). Settings
//! that cannot change while the service runs are kept and logged as
//! needing a restart. systemd hears `RELOADING=1` (with `MONOTONIC_USEC`)
//! at the start of each reload and `READY=1` at its end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use paas_config::{Config, RunnerConfig};
use paas_core::RunnerIdx;
use sd_notify::NotifyState;
use tokio::sync::{oneshot, Notify};
use tracing::{error, info, warn};

use crate::driver::{ReloadHandle, ReloadRequest, ReloadRunner};
use crate::reference_options::ReferenceOptions;
use crate::runners::RunnerIo;

/// How often the configuration file is checked for changes (gitlab-runner
/// checks every 3 seconds).
pub const WATCH_PERIOD: Duration = Duration::from_secs(3);
/// How long setting up the new runners of a reload (credentials checks,
/// catalogue reads, with their retries) may take before the reload is
/// given up.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts the reload task of a running service: it serves `requests`
/// (`SIGHUP`) and watches `config_path`. `config` is the running
/// configuration, whose runners have the indices of their order.
pub fn spawn(
    config: &Config,
    config_path: &Path,
    overrides: ReferenceOptions,
    http: reqwest::Client,
    system_id: String,
    driver: ReloadHandle,
    requests: Option<Arc<Notify>>,
) {
    let reloader = Reloader {
        config_path: config_path.to_path_buf(),
        running: config.clone(),
        active: config.runners.iter().cloned().enumerate().collect(),
        http,
        system_id,
        driver,
        fingerprint: start_fingerprint(config, config_path, &overrides),
        overrides,
    };
    tokio::spawn(reloader.run(requests.unwrap_or_else(|| Arc::new(Notify::new()))));
}

struct Reloader {
    config_path: PathBuf,
    /// The configuration applied last.
    running: Config,
    /// Runners of `running`, with their index in the loop.
    active: Vec<(RunnerIdx, RunnerConfig)>,
    http: reqwest::Client,
    system_id: String,
    driver: ReloadHandle,
    /// Options of the command line, which win over every file read.
    overrides: ReferenceOptions,
    /// The file as last read (a reload that fails also records it, so a
    /// broken file is reported once, not at every check).
    fingerprint: Option<Fingerprint>,
}

/// What tells a changed file: its modification time and size, then (when
/// those changed) a hash of its contents.
#[derive(Debug, Clone, PartialEq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    hash: u64,
}

impl Fingerprint {
    fn of(path: &Path) -> Option<Fingerprint> {
        let metadata = std::fs::metadata(path).ok()?;
        let bytes = std::fs::read(path).ok()?;
        Some(Fingerprint {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            hash: hash_of(&bytes),
        })
    }
}

/// The file's fingerprint if it still holds the running configuration;
/// `None` (a reload at the first check) if it changed while the service
/// started.
fn start_fingerprint(
    running: &Config,
    path: &Path,
    overrides: &ReferenceOptions,
) -> Option<Fingerprint> {
    let fingerprint = Fingerprint::of(path)?;
    let mut config = paas_config::load(path).ok()?;
    overrides.apply(&mut config);
    (config == *running).then_some(fingerprint)
}

fn hash_of(bytes: &[u8]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

impl Reloader {
    async fn run(mut self, requests: Arc<Notify>) {
        let mut watch = tokio::time::interval(WATCH_PERIOD);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let cause = tokio::select! {
                () = requests.notified() => "SIGHUP",
                _ = watch.tick() => {
                    if !self.file_changed() {
                        continue;
                    }
                    "configuration file changed"
                }
            };
            let mut states = vec![NotifyState::Reloading];
            // systemd 253 and later want the time with RELOADING=1.
            states.extend(NotifyState::monotonic_usec_now().ok());
            crate::signals::notify(&states);
            if !self.reload(cause).await {
                // The service stops: it said STOPPING=1 already.
                return;
            }
            crate::signals::notify(&[NotifyState::Ready]);
        }
    }

    /// Whether the file differs from the one read last. A file briefly
    /// absent (an editor replacing it) is not a change.
    fn file_changed(&mut self) -> bool {
        let Ok(metadata) = std::fs::metadata(&self.config_path) else {
            return false;
        };
        let modified = metadata.modified().ok();
        if let Some(known) = &self.fingerprint {
            if known.modified == modified && known.len == metadata.len() {
                return false;
            }
        }
        let Some(now) = Fingerprint::of(&self.config_path) else {
            return false;
        };
        let changed = self
            .fingerprint
            .as_ref()
            .is_none_or(|known| known.hash != now.hash);
        if !changed {
            // Touched, same contents.
            self.fingerprint = Some(now);
        }
        changed
    }

    /// One reload; false once the service's loop is gone.
    async fn reload(&mut self, cause: &'static str) -> bool {
        self.fingerprint = Fingerprint::of(&self.config_path);
        let path = self.config_path.display().to_string();
        let mut config = match paas_config::load(&self.config_path) {
            Ok(config) => config,
            Err(error) => {
                error!(
                    cause,
                    file = %path,
                    %error,
                    "configuration reload failed: the running configuration is kept"
                );
                return true;
            }
        };
        for warning in &config.warnings {
            warn!(file = %path, "{warning}");
        }
        self.overrides.apply(&mut config);
        self.keep_restart_only(&mut config);
        let sorted = tokio::time::timeout(SETUP_TIMEOUT, self.sort_runners(&config))
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "setting up the new runners took more than {SETUP_TIMEOUT:?} (a coordinator or Clever Cloud does not answer)"
                ))
            });
        let runners = match sorted {
            Ok(runners) => runners,
            Err(error) => {
                error!(cause, file = %path, error = %format!("{error:#}"), "configuration reload failed: the running configuration is kept");
                return true;
            }
        };
        let (applied, outcome) = oneshot::channel();
        let request = ReloadRequest {
            config: config.clone(),
            config_path: self.config_path.clone(),
            runners,
            changed_keys: changed_keys(&self.running, &config),
            applied,
        };
        if !self.driver.send(request).await {
            return false;
        }
        match outcome.await {
            Ok(Ok(indices)) => {
                info!(cause, file = %path, "configuration reload applied");
                self.active = indices.into_iter().zip(config.runners.clone()).collect();
                self.running = config;
                true
            }
            Ok(Err(error)) => {
                error!(cause, file = %path, %error, "configuration reload refused: the running configuration is kept");
                true
            }
            Err(_) => false,
        }
    }

    /// Settings read once at start keep their running values.
    fn keep_restart_only(&self, config: &mut Config) {
        let path = self.config_path.display().to_string();
        if config.state_file != self.running.state_file {
            warn!(file = %path, key = "state_file", "changing this setting needs a restart: the running value is kept until then");
            config.state_file = self.running.state_file.clone();
        }
        if config.store != self.running.store {
            warn!(file = %path, key = "store", "changing this setting needs a restart: the running value is kept until then");
            config.store = self.running.store.clone();
        }
        if config.listen_address != self.running.listen_address {
            warn!(file = %path, key = "listen_address", "changing this setting needs a restart: the running value is kept until then");
            config.listen_address = self.running.listen_address.clone();
        }
    }

    /// Pairs each runner of `config` with the running one it continues, or
    /// prepares it as a new runner (credentials checked, catalogue read).
    async fn sort_runners(&self, config: &Config) -> anyhow::Result<Vec<ReloadRunner>> {
        let mut taken = vec![false; self.active.len()];
        let mut runners = Vec::with_capacity(config.runners.len());
        for (position, runner_config) in config.runners.iter().enumerate() {
            let io = Arc::new(RunnerIo::new(runner_config.clone(), self.http.clone())?);
            let continued = self
                .active
                .iter()
                .enumerate()
                .position(|(i, (_, running))| !taken[i] && same_connection(running, runner_config));
            if let Some(i) = continued {
                taken[i] = true;
                runners.push(ReloadRunner {
                    continues: Some(self.active[i].0),
                    io,
                    flavors: None,
                });
                continue;
            }
            crate::credentials::check_runner(&io, position, &self.config_path, &self.system_id)
                .await?;
            let flavors = crate::setup::read_catalogue(&io).await?;
            runners.push(ReloadRunner {
                continues: None,
                io,
                flavors: Some(flavors),
            });
        }
        Ok(runners)
    }
}

/// Whether `new` can take over from `running` in place: everything but the
/// settings the core alone uses (flavor choice, quota fraction, launch
/// watch timing) is the same. Anything else (token, URLs, cloud account,
/// image, inner runner settings, name) makes a new runner, so that the
/// jobs in flight keep the settings they started with.
fn same_connection(running: &RunnerConfig, new: &RunnerConfig) -> bool {
    fn core_settings_cleared(config: &RunnerConfig) -> RunnerConfig {
        let mut config = config.clone();
        config.line = 0;
        config.quota_max_fraction = 0.0;
        config.cc.default_flavor.clear();
        config.cc.max_flavor = None;
        config.trace_watch.timeout = Duration::ZERO;
        config.trace_watch.poll_step = Duration::ZERO;
        // `limit` is a rule of the core (it is also passed on to the inner
        // runner, where it has no effect on the running job).
        config.limit = None;
        config.inner_config.remove("limit");
        config
    }
    core_settings_cleared(running) == core_settings_cleared(new)
}

/// The global keys whose value differs, for the log.
fn changed_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |key: &'static str, changed: bool| {
        if changed {
            keys.push(key);
        }
    };
    check("concurrent", old.concurrent != new.concurrent);
    check("check_interval", old.check_interval != new.check_interval);
    check(
        "paas_max_concurrent_provisioning",
        old.max_concurrent_provisioning != new.max_concurrent_provisioning,
    );
    check(
        "paas_min_seconds_between_launches",
        old.min_seconds_between_launches != new.min_seconds_between_launches,
    );
    check(
        "paas_reconcile_interval",
        old.reconcile_interval != new.reconcile_interval,
    );
    check(
        "paas_orphan_min_age",
        old.orphan_min_age != new.orphan_min_age,
    );
    check(
        "paas_slow_provisioning_notice",
        old.slow_provisioning_notice != new.slow_provisioning_notice,
    );
    check(
        "paas_finished_jobs_keep_resources",
        old.finished_jobs_keep_resources != new.finished_jobs_keep_resources,
    );
    check(
        "paas_decommission_launch_failures",
        old.decommission_launch_failures != new.decommission_launch_failures,
    );
    check(
        "paas_repoll_same_runner_immediately",
        old.repoll_same_runner_immediately != new.repoll_same_runner_immediately,
    );
    check("quota_computation", old.quota != new.quota);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
concurrent = 10
state_file = "/var/lib/paas-runner/state.db"
[quota_computation]
  reference_runner = "shared"
  reference_flavor = "M"
  reference_jobs_count = 4
[[runners]]
  name = "shared"
  url = "https://forge.example"
  token = "glrt-aaaaaaaaaaaaaaaaaaaa"
  executor = "clever-docker"
  cc_orga_id = "orga_x"
  cc_token = "cc-token"
  cc_default_flavor = "S"
  cc_max_flavor = "2XL"
  [runners.cc_extra_env]
    CC_ENABLE_HEPTAPOD_RUNNER = "true"
"#;

    fn parse(text: &str) -> Config {
        paas_config::parse(text, Path::new("config.toml")).expect("valid")
    }

    fn runner(text: &str) -> RunnerConfig {
        parse(text).runners.remove(0)
    }

    #[test]
    fn flavor_choice_changes_in_place_connection_changes_make_a_new_runner() {
        let running = runner(FILE);
        let in_place = runner(
            &FILE
                .replace("cc_max_flavor = \"2XL\"", "cc_max_flavor = \"XL\"")
                .replace("concurrent = 10", "concurrent = 10\n# moved down a line")
                .replace("  cc_max_flavor", "  limit = 3\n  cc_max_flavor"),
        );
        assert_eq!(in_place.limit, Some(3));
        assert!(same_connection(&running, &in_place));
        for (old, new) in [
            ("glrt-aaaa", "glrt-bbbb"),
            ("https://forge.example", "https://other.example"),
            ("cc-token", "other-cc-token"),
            ("name = \"shared\"", "name = \"renamed\""),
        ] {
            let text = FILE.replace(old, new).replace(
                "reference_runner = \"shared\"",
                "reference_runner = \"renamed\"",
            );
            let text = if old.starts_with("name") {
                text
            } else {
                text.replace(
                    "reference_runner = \"renamed\"",
                    "reference_runner = \"shared\"",
                )
            };
            assert!(!same_connection(&running, &runner(&text)), "{old} -> {new}");
        }
    }

    #[test]
    fn changed_global_keys_are_named() {
        let old = parse(FILE);
        let new = parse(
            &FILE
                .replace("concurrent = 10", "concurrent = 20")
                .replace("reference_jobs_count = 4", "reference_jobs_count = 6"),
        );
        assert_eq!(
            changed_keys(&old, &new),
            ["concurrent", "quota_computation"]
        );
        assert!(changed_keys(&old, &old).is_empty());
    }
}
