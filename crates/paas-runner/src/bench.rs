//! `paas-runner bench`: the real service, as a child process, against the
//! simulators; prints throughput, latencies, and the service's own memory and
//! CPU use (read from /proc, so the simulators' share is not counted).

use std::collections::HashMap;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paas_sim::cluster::{ClusterSettings, ConfigOptions, SimCluster};
use paas_sim::coordinator::JobSpec;
use paas_sim::vars;
use serde::Serialize;

use crate::demo::{percentile, pickup_latencies_ms};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Jobs of the burst scenario (short jobs, all queued at once).
    #[arg(long, default_value_t = 300)]
    pub burst: u32,
    /// Jobs of the concurrency scenario (long jobs, all running at once).
    #[arg(long, default_value_t = 1000)]
    pub long: u32,
    /// Duration of each long job, in seconds.
    #[arg(long, default_value_t = 20)]
    pub long_duration: u64,
    /// Room of the concurrency scenario, in jobs (0: room for all of
    /// them). The workload: `--long 1000 --room 400`.
    #[arg(long, default_value_t = 0)]
    pub room: u32,
    /// Scale scenario: this many jobs running at once (0: none), e.g.
    /// `--scale 10000`.
    #[arg(long, default_value_t = 0)]
    pub scale: u32,
    /// Duration of the last job taken in the scale scenario, in seconds.
    /// The jobs taken before it run longer, by one pickup interval (see
    /// `--scale-pickup-rate`) per job after them, so that all of them are
    /// running at once when the last one starts, and they end spread out.
    #[arg(long, default_value_t = 300)]
    pub scale_duration: u64,
    /// The slowest pickup rate, in jobs per second, for which the scale
    /// scenario's jobs all overlap (the run lasts about
    /// `scale / rate + scale_duration` seconds).
    #[arg(long, default_value_t = 8.0)]
    pub scale_pickup_rate: f64,
    /// Configure no `[runners.paas_job_trace_watch]` token: launches are
    /// confirmed by probing logs with job tokens.
    #[arg(long)]
    pub no_admin_token: bool,
    /// The Clever Cloud simulator does not serve the organisation's
    /// deployments: running jobs are checked one by one, paced by age.
    #[arg(long)]
    pub no_deployments_listing: bool,
    /// Print the results as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Keep the state in PostgreSQL (a throwaway cluster started for the
    /// run, from the `postgresql` package's `initdb`/`pg_ctl`) instead of
    /// SQLite.
    #[arg(long)]
    pub postgres: bool,
}

/// Figures of one scenario.
#[derive(Debug, Serialize)]
pub struct Figures {
    pub scenario: String,
    pub jobs: usize,
    pub succeeded: usize,
    pub wall_seconds: f64,
    pub jobs_per_second: f64,
    pub pickup_p50_ms: f64,
    pub pickup_p95_ms: f64,
    pub finish_to_delete_p50_ms: f64,
    pub finish_to_delete_p95_ms: f64,
    pub max_concurrent_apps: u64,
    /// Most jobs the coordinator saw running at once.
    pub max_running_jobs: u64,
    pub peak_rss_mib: f64,
    pub cpu_seconds: f64,
    pub cpu_ms_per_job: f64,
    pub apps_left: u64,
    /// Requests of the service to the coordinator (all but the inner
    /// runners'), per second of the run.
    pub coordinator_requests_per_second: f64,
    /// Requests spent watching jobs (all but job requests, job updates and
    /// the inner runners'), in all and per launched job.
    pub watch_requests: u64,
    pub watch_requests_per_job: f64,
    /// Clever Cloud API calls per second of the run.
    pub cloud_calls_per_second: f64,
}

/// What one scenario runs.
struct Scenario {
    name: &'static str,
    jobs: u32,
    duration_ms: u64,
    /// Extra duration per job taken after this one (0: all last
    /// `duration_ms`).
    stagger_ms: u64,
    /// Quota room, in jobs.
    room: u32,
    admin_token: bool,
    deployments_listing: bool,
    postgres: bool,
}

pub async fn main(args: BenchArgs) -> ExitCode {
    let mut ok = true;
    let scenarios = [
        ("burst of short jobs", args.burst, 300u64, 0, args.burst),
        (
            "concurrent long jobs",
            args.long,
            args.long_duration * 1000,
            0,
            if args.room == 0 { args.long } else { args.room },
        ),
        (
            "scale: jobs running at once",
            args.scale,
            args.scale_duration * 1000,
            (1000.0 / args.scale_pickup_rate.max(0.01)) as u64,
            args.scale,
        ),
    ];
    for (name, jobs, duration_ms, stagger_ms, room) in scenarios {
        if jobs == 0 {
            continue;
        }
        let scenario = Scenario {
            name,
            jobs,
            duration_ms,
            stagger_ms,
            room,
            admin_token: !args.no_admin_token,
            deployments_listing: !args.no_deployments_listing,
            postgres: args.postgres,
        };
        match run_scenario(&scenario).await {
            Ok(figures) => {
                ok &= figures.apps_left == 0 && figures.succeeded == figures.jobs;
                if args.json {
                    println!("{}", serde_json::to_string(&figures).unwrap_or_default());
                } else {
                    print_figures(&figures);
                }
            }
            Err(error) => {
                eprintln!("paas-runner bench: {name}: {error:#}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run_scenario(scenario: &Scenario) -> anyhow::Result<Figures> {
    let Scenario {
        name,
        jobs,
        duration_ms,
        stagger_ms,
        room,
        ..
    } = *scenario;
    let settings = ClusterSettings {
        long_poll: Duration::from_secs(20),
        repo_ready_delay: Duration::from_millis(100),
        boot_delay: Duration::from_millis(200),
        ..ClusterSettings::default()
    };
    let cluster = SimCluster::start(&settings).await?;
    cluster
        .clever
        .set_organisation_deployments(scenario.deployments_listing);
    let dir = tempfile::Builder::new()
        .prefix("paas-runner-bench-")
        .tempdir()?;
    let mut options = ConfigOptions::new(dir.path().join("state.db"));
    options.concurrent = jobs as usize + 100;
    options.reference_flavor = "XS".into();
    options.reference_jobs_count = room;
    options.default_flavor = "XS".into();
    options.max_flavor = Some("XS".into());
    options.max_provisioning = 200;
    options.check_interval_secs = 1.0;
    // heptapod-paas-runner's defaults (`poll_step` 10 s, timeout 300 s).
    options.watch_poll_step_secs = 10.0;
    options.watch_timeout_secs = 300.0;
    options.trace_watch = scenario.admin_token;
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, cluster.config_toml(&options))?;
    // Stopped when the scenario ends.
    let _postgres = match scenario.postgres {
        true => Some(crate::ha::use_throwaway_postgres(&config_path, dir.path())?),
        false => None,
    };

    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--log-level", "warn", "run"])
        .arg(&config_path)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(
            dir.path().join("runner.log"),
        )?))
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;

    // Let the service read its catalogue and start polling.
    let polling = cluster
        .coordinator
        .wait_until(|sim| sim.stats().job_requests > 0, Duration::from_secs(30))
        .await;
    anyhow::ensure!(
        polling,
        "the service did not start polling; see {}",
        dir.path().join("runner.log").display()
    );

    let started = Instant::now();
    for rank in 0..jobs {
        // Jobs are taken in the order they are queued.
        let duration = duration_ms + u64::from(jobs - 1 - rank) * stagger_ms;
        cluster.coordinator.enqueue(JobSpec {
            variables: vec![
                (vars::JOB_DURATION_MS.into(), duration.to_string()),
                (vars::JOB_LOG_LINES.into(), "3".into()),
            ],
            ..JobSpec::default()
        });
    }
    let total = jobs as usize;
    // Waves of `room` jobs, each its duration plus provisioning.
    let waves = u64::from(jobs.div_ceil(room.max(1)));
    let deadline = Duration::from_secs(120 + u64::from(jobs) / 20)
        + Duration::from_millis(duration_ms) * 2 * u32::try_from(waves).unwrap_or(u32::MAX)
        + Duration::from_millis(stagger_ms) * jobs;
    let max_running = Arc::new(AtomicU64::new(0));
    let done = cluster
        .coordinator
        .wait_until(
            // The counters, not the job list: this runs at every change of
            // the simulator, and copying ten thousand jobs each time would
            // cost more than the service being measured.
            {
                let max_running = Arc::clone(&max_running);
                move |sim| {
                    let stats = sim.stats();
                    max_running.fetch_max(stats.running, Ordering::Relaxed);
                    stats.success + stats.failed + stats.canceled >= total as u64
                }
            },
            deadline,
        )
        .await;
    let apps_gone = cluster
        .clever
        .wait_until(|sim| sim.stats().apps_live == 0, Duration::from_secs(60))
        .await;
    let wall = started.elapsed();
    let (peak_rss_mib, cpu_seconds) = process_usage(pid).unwrap_or((0.0, 0.0));
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on our own child.
        unsafe { kill(pid as i32, 15) };
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    anyhow::ensure!(
        done && apps_gone,
        "scenario did not complete; see {}",
        dir.path().join("runner.log").display()
    );

    let records = cluster.coordinator.jobs();
    let apps = cluster.clever.apps();
    let deleted_at: HashMap<u64, tokio::time::Instant> = apps
        .iter()
        .filter_map(|app| {
            let job_id = app.name.rsplit('-').next()?.parse().ok()?;
            Some((job_id, tokio::time::Instant::from_std(app.deleted_at?)))
        })
        .collect();
    let pickups = pickup_latencies_ms(&records);
    let mut decommissions: Vec<f64> = records
        .iter()
        .filter_map(|job| {
            let finished = job.finished_at?;
            let deleted = deleted_at.get(&job.id)?;
            Some(deleted.saturating_duration_since(finished).as_secs_f64() * 1000.0)
        })
        .collect();
    decommissions.sort_by(f64::total_cmp);
    let succeeded = records
        .iter()
        .filter(|job| job.status == paas_sim::coordinator::JobStatus::Success)
        .count();
    let stats = cluster.clever.stats();
    let coordinator = cluster.coordinator.stats();
    let launched = stats.pushes.max(1);
    let wall_secs = wall.as_secs_f64().max(1e-3);
    cluster.coordinator.shutdown();
    cluster.clever.shutdown();
    Ok(Figures {
        scenario: name.to_owned(),
        jobs: total,
        succeeded,
        wall_seconds: round(wall.as_secs_f64(), 2),
        jobs_per_second: round(total as f64 / wall.as_secs_f64(), 1),
        pickup_p50_ms: round(percentile(&pickups, 0.5), 1),
        pickup_p95_ms: round(percentile(&pickups, 0.95), 1),
        finish_to_delete_p50_ms: round(percentile(&decommissions, 0.5), 1),
        finish_to_delete_p95_ms: round(percentile(&decommissions, 0.95), 1),
        max_concurrent_apps: stats.max_live_apps,
        max_running_jobs: max_running.load(Ordering::Relaxed),
        peak_rss_mib: round(peak_rss_mib, 1),
        cpu_seconds: round(cpu_seconds, 2),
        cpu_ms_per_job: round(cpu_seconds * 1000.0 / total as f64, 2),
        apps_left: stats.apps_live,
        coordinator_requests_per_second: round(
            (coordinator.requests_served - coordinator.inner_runner_requests) as f64 / wall_secs,
            1,
        ),
        watch_requests: coordinator.watch_requests,
        watch_requests_per_job: round(coordinator.watch_requests as f64 / launched as f64, 2),
        cloud_calls_per_second: round(stats.api_calls as f64 / wall_secs, 1),
    })
}

fn print_figures(figures: &Figures) {
    println!("{} ({} jobs)", figures.scenario, figures.jobs);
    println!("  succeeded:          {}", figures.succeeded);
    println!(
        "  wall time:          {:.2} s ({:.1} jobs/s)",
        figures.wall_seconds, figures.jobs_per_second
    );
    println!(
        "  pickup latency:     p50 {:.1} ms, p95 {:.1} ms",
        figures.pickup_p50_ms, figures.pickup_p95_ms
    );
    println!(
        "  finish to delete:   p50 {:.1} ms, p95 {:.1} ms",
        figures.finish_to_delete_p50_ms, figures.finish_to_delete_p95_ms
    );
    println!(
        "  concurrent apps:    at most {} ({} jobs running at once)",
        figures.max_concurrent_apps, figures.max_running_jobs
    );
    println!("  service peak RSS:   {:.1} MiB", figures.peak_rss_mib);
    println!(
        "  service CPU:        {:.2} s ({:.2} ms per job)",
        figures.cpu_seconds, figures.cpu_ms_per_job
    );
    println!("  apps left:          {}", figures.apps_left);
    println!(
        "  coordinator:        {:.1} requests/s; watching jobs: {} requests, {:.2} per launched job",
        figures.coordinator_requests_per_second,
        figures.watch_requests,
        figures.watch_requests_per_job
    );
    println!(
        "  clever cloud api:   {:.1} calls/s",
        figures.cloud_calls_per_second
    );
}

/// Peak resident memory (MiB) and CPU time (s) of a process, from /proc.
fn process_usage(pid: u32) -> Option<(f64, f64)> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    let hwm_kib: f64 = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // Fields after the command name (which may contain spaces).
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { sysconf(2) } as f64; // _SC_CLK_TCK
    let ticks = if ticks > 0.0 { ticks } else { 100.0 };
    Some((hwm_kib / 1024.0, (utime + stime) / ticks))
}

fn round(value: f64, digits: i32) -> f64 {
    let factor = 10f64.powi(digits);
    (value * factor).round() / factor
}

extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
    fn sysconf(name: i32) -> i64;
}
