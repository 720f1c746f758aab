//! From a configuration to a ready dispatcher: clients, flavor catalogues,
//! the weighted quota, and the checks that need the catalogue.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use paas_config::Config;
use paas_core::{
    Dispatcher, DispatcherConfig, FlavorTable, LaunchWatch, ReadyWait, RunnerSpec, WatchConfig,
};
use tracing::{info, warn};

use crate::runners::{RunnerIo, Runners};

pub use crate::setup_error::SetupError;

/// The HTTP client shared by all calls (connection pools per host). It
/// follows no redirect: a redirect would carry token headers to another host.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(paas_gitlab::http_client_builder()
        .pool_idle_timeout(Duration::from_secs(90))
        .build()?)
}

/// Builds the runners' IO handles and the dispatcher, after checking each
/// runner's credentials ([`crate::credentials`]; `system_id` names this
/// host's runner manager).
pub async fn prepare(
    config: &Config,
    config_path: &Path,
    http: reqwest::Client,
    system_id: &str,
) -> anyhow::Result<(Dispatcher, Runners)> {
    let mut runners = Vec::new();
    for runner_config in &config.runners {
        runners.push(RunnerIo::new(runner_config.clone(), http.clone())?);
    }
    crate::credentials::check_all(&runners, config_path, system_id).await?;
    let mut tables = Vec::new();
    for io in &runners {
        tables.push(read_catalogue(io).await?);
    }
    let runners: Vec<Arc<RunnerIo>> = runners.into_iter().map(Arc::new).collect();
    let (dispatcher_config, specs) = plan(config, config_path, &runners, tables)?;
    info!(
        quota = (dispatcher_config.quota * 100.0).round() / 100.0,
        concurrent = dispatcher_config.concurrent,
        reference_flavor = %config.quota.reference_flavor,
        reference_jobs_count = config.quota.reference_jobs_count,
        reference_runner = %config.quota.reference_runner,
        "weighted quota set"
    );
    let mut dispatcher = Dispatcher::new(dispatcher_config, specs);
    // Launched jobs are watched through the cloud's batch signal, with
    // per-job checks paced by age (`paas_core::WatchConfig`).
    dispatcher.set_watch(WatchConfig::new(config.check_interval));
    Ok((dispatcher, Arc::new(runners)))
}

pub(crate) async fn read_catalogue(io: &RunnerIo) -> anyhow::Result<FlavorTable> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match io.provider.flavors().await {
            Ok(table) if !table.flavors.is_empty() => {
                info!(runner = %io.name, flavors = ?table.names_by_weight(), "flavor catalogue read");
                return Ok(table);
            }
            Ok(_) => anyhow::bail!(
                "runner {:?}: {}",
                io.name,
                io.provider.empty_catalogue_message()
            ),
            // The cloud may be down when the service starts: wait for it
            // rather than exit (a stop signal still ends the wait).
            Err(error) if error.is_transient() => {
                let delay = paas_core::backoff(attempt);
                warn!(runner = %io.name, %error, "reading the flavor catalogue: retrying (attempt {}) in {delay:?}", attempt + 1);
                tokio::time::sleep(delay).await;
            }
            Err(error) => anyhow::bail!(
                "runner {:?}: cannot read the flavor catalogue: {error}",
                io.name
            ),
        }
    }
}

/// Checks the configuration against the catalogues and computes the quota.
pub fn plan(
    config: &Config,
    config_path: &Path,
    runners: &[Arc<RunnerIo>],
    tables: Vec<FlavorTable>,
) -> Result<(DispatcherConfig, Vec<RunnerSpec>), SetupError> {
    let path = config_path.display().to_string();
    let error = |message: String| SetupError {
        path: path.clone(),
        message,
    };
    let reference_idx = runners
        .iter()
        .position(|r| r.name == config.quota.reference_runner)
        .ok_or_else(|| {
            error(format!(
                "key `quota_computation.reference_runner`: no runner named {:?}",
                config.quota.reference_runner
            ))
        })?;
    let reference_table = &tables[reference_idx];
    let reference_flavor = reference_table.get(&config.quota.reference_flavor).ok_or_else(|| {
        error(format!(
            "key `quota_computation.reference_flavor`: flavor {:?} is not offered to runner {:?}; available: {}",
            config.quota.reference_flavor,
            config.quota.reference_runner,
            reference_table.names_by_weight().join(", ")
        ))
    })?;
    let quota = reference_flavor.weight() * f64::from(config.quota.reference_jobs_count);

    let mut specs = Vec::new();
    for (idx, (io, flavors)) in runners.iter().zip(tables).enumerate() {
        let machine = io.config.machine_settings();
        let (default_key, max_key) = (machine.default_flavor_key, machine.max_flavor_key);
        if let Some(max) = machine.max_flavor {
            if flavors.get(max).is_none() {
                return Err(error(format!(
                    "key `runners[{idx}].{max_key}`: flavor {max:?} is not available; available: {}",
                    flavors.names_by_weight().join(", ")
                )));
            }
        }
        if flavors.get(machine.default_flavor).is_none() {
            return Err(error(format!(
                "key `runners[{idx}].{default_key}`: flavor {:?} is not available; available: {}",
                machine.default_flavor,
                flavors.names_by_weight().join(", ")
            )));
        }
        let spec = RunnerSpec {
            key: io.key.clone(),
            name: io.name.clone(),
            quota_max_fraction: io.config.quota_max_fraction,
            default_flavor: machine.default_flavor.to_owned(),
            max_flavor: machine.max_flavor.map(str::to_owned),
            flavors,
            zone: machine.zone.to_owned(),
            limit: io.config.limit,
            ready_wait: ReadyWait {
                timeout: machine.ready_timeout,
                step: machine.ready_step,
            },
            // Launches are always confirmed: from the job log with the
            // watch token when there is one, else by probing the log with
            // the job's own token (`CoordinatorClient::probe_trace`).
            launch_watch: Some(LaunchWatch {
                timeout: io.config.trace_watch.timeout,
                poll_step: io.config.trace_watch.poll_step,
            }),
        };
        if let Some(default) = spec.flavors.get(machine.default_flavor) {
            if default.weight() > spec.max_job_weight() + 1e-9 {
                return Err(error(format!(
                    "key `runners[{idx}].{default_key}`: default flavor {:?} is larger than {max_key} {:?}",
                    machine.default_flavor,
                    machine.max_flavor.unwrap_or_default()
                )));
            }
        }
        // A poll must find room for the largest job the runner may receive.
        let fraction = config
            .quota
            .allowed_fraction_per_runner
            .min(spec.quota_max_fraction);
        let share = fraction * quota;
        let largest = spec.max_job_weight();
        if largest > share + 1e-9 {
            let fitting = spec.flavors.names_up_to(share);
            let suggestion = match fitting.last() {
                Some(name) => {
                    format!("set `{max_key} = {name:?}` (the largest flavor that fits)")
                }
                None => "no flavor fits at all".to_owned(),
            };
            return Err(error(format!(
                "runner {:?} (runners[{idx}]) may receive jobs of weight {largest:.1} (flavor {}), but its share of the weighted quota is only {share:.1} \
                 ({fraction} x {quota:.1}): it could never take a job. Either {suggestion}, or raise `quota_computation.reference_jobs_count` \
                 or the allowed fractions.",
                spec.name,
                spec.max_flavor.clone().unwrap_or_else(|| spec.flavors.names_by_weight().last().cloned().unwrap_or_default()),
            )));
        }
        if io.config.trace_watch.token.is_none() {
            info!(runner = %spec.name, "no [runners.paas_job_trace_watch] token: launches are confirmed by probing job logs with each job's own token");
        }
        specs.push(spec);
    }
    let dispatcher_config = DispatcherConfig {
        concurrent: config.concurrent,
        check_interval: config.check_interval,
        status_interval: config.check_interval,
        max_provisioning: config.max_concurrent_provisioning,
        min_between_launches: config.min_seconds_between_launches,
        keep_resources: config.finished_jobs_keep_resources,
        decommission_launch_failures: config.decommission_launch_failures,
        repoll_immediately: config.repoll_same_runner_immediately,
        quota,
        allowed_fraction_per_runner: config.quota.allowed_fraction_per_runner,
        reconcile_interval: config.reconcile_interval,
        orphan_min_age: config.orphan_min_age,
        slow_notice_after: config.slow_provisioning_notice,
    };
    Ok((dispatcher_config, specs))
}
