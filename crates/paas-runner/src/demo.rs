//! `paas-runner demo`: the real dispatcher against the embedded simulators,
//! over loopback HTTP, with live progress and a summary.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use paas_sim::cluster::{ClusterSettings, ConfigOptions, SimCluster};
use paas_sim::coordinator::{JobRecord, JobStatus};
use paas_sim::workload::{self, Workload};
use serde::Serialize;
use tokio::sync::{oneshot, watch};

use crate::snapshot::Snapshot;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Number of jobs of the sample workload (mixed flavors).
    #[arg(long, default_value_t = 60)]
    pub jobs: u32,
    /// Print the summary as one JSON object on standard output (progress
    /// then goes to standard error).
    #[arg(long)]
    pub json: bool,
    /// Seed of the sample workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run this workload file instead of the sample.
    #[arg(long)]
    pub workload: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// The demo's results.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub jobs_total: usize,
    pub jobs_succeeded: usize,
    pub jobs_failed: usize,
    pub jobs_unfinished: usize,
    pub apps_created: u64,
    pub apps_left: u64,
    pub max_weight: f64,
    pub quota: f64,
    pub max_live_apps: u64,
    pub pickup_p50_ms: f64,
    pub pickup_p95_ms: f64,
    pub wall_seconds: f64,
}

pub async fn main(args: DemoArgs) -> ExitCode {
    match run(args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("paas-runner demo: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let workload = match &args.workload {
        Some(path) => Workload::from_path(path)?,
        None => Workload::sample(args.jobs, args.seed),
    };
    let mut settings = cluster_settings(&workload, 1);
    // paas-runner always sends its credentials: show the strict repository.
    settings.require_git_credentials = true;
    let cluster = SimCluster::start(&settings).await?;
    let dir = tempfile::Builder::new()
        .prefix("paas-runner-demo-")
        .tempdir()?;
    let config_path = dir.path().join("config.toml");
    let options = ConfigOptions::new(dir.path().join("state.db"));
    std::fs::write(&config_path, cluster.config_toml(&options))?;
    let config = paas_config::load(&config_path)?;

    let arrivals = workload.arrivals(&cluster.runner_tokens);
    let jobs_total = arrivals.len();
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = oneshot::channel();
    let server = {
        let config_path = config_path.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = shutdown_rx.await;
            };
            crate::run::serve(
                &config,
                &config_path,
                &crate::run::ReferenceOptions::default(),
                shutdown,
                Some(ready_tx),
            )
            .await
        })
    };
    let snapshots = match ready_rx.await {
        Ok(snapshots) => snapshots,
        Err(_) => {
            // The service stopped before it was ready: report why.
            return match server.await {
                Ok(Err(error)) => Err(error),
                _ => Err(anyhow::anyhow!(
                    "the dispatcher stopped before it was ready"
                )),
            };
        }
    };
    let started = Instant::now();
    let feeder = {
        let coordinator = cluster.coordinator.clone();
        tokio::spawn(async move { workload::feed(&coordinator, arrivals).await })
    };

    let progress = Progress::new(args.json);
    let deadline = started + Duration::from_secs(args.timeout);
    let mut timed_out = false;
    loop {
        let view = View::read(&cluster, &snapshots, jobs_total);
        progress.show(&view, started.elapsed());
        if view.finished == jobs_total && view.live_apps == 0 && feeder.is_finished() {
            break;
        }
        if Instant::now() > deadline {
            timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    progress.done();
    let _ = shutdown_tx.send(());
    server.await??;

    let summary = summarize(&cluster, &snapshots, jobs_total, started.elapsed());
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    let healthy =
        !timed_out && summary.apps_left == 0 && summary.max_weight <= summary.quota + 1e-9;
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Simulator settings of a workload.
pub fn cluster_settings(workload: &Workload, runners: usize) -> ClusterSettings {
    let sim = &workload.sim;
    let mut settings = ClusterSettings {
        runners,
        long_poll: Duration::from_millis(sim.long_poll_ms),
        repo_ready_delay: Duration::from_millis(sim.repo_ready_delay_ms),
        boot_delay: Duration::from_millis(sim.boot_delay_ms),
        require_git_credentials: sim.require_git_credentials,
        seed: workload.seed.unwrap_or(0),
        ..ClusterSettings::default()
    };
    settings.coordinator_faults.request_job_unavailable_rate = sim.coordinator_error_rate;
    settings.coordinator_faults.api_error_rate = sim.coordinator_error_rate;
    settings.coordinator_faults.latency = Duration::from_millis(sim.latency_ms);
    settings.clever_faults.error_rate = sim.cloud_error_rate;
    settings.clever_faults.error_after_effect_rate = sim.cloud_error_after_effect_rate;
    settings.clever_faults.latency = Duration::from_millis(sim.latency_ms);
    settings
}

/// What the progress line shows, read from the simulators and the driver.
struct View {
    /// Waiting on the coordinator (GitLab's `pending`); "queued" is kept
    /// for the runner's own stage (taken, not yet provisioned), as on the
    /// status page.
    pending: usize,
    provisioning: usize,
    running: usize,
    finished: usize,
    failed: usize,
    live_apps: u64,
    weight: f64,
    quota: f64,
    jobs_total: usize,
    /// The limits holding back job requests now, with what is reserved.
    held: Vec<String>,
}

impl View {
    fn read(
        cluster: &SimCluster,
        snapshots: &watch::Receiver<Snapshot>,
        jobs_total: usize,
    ) -> View {
        let jobs = cluster.coordinator.jobs();
        let stats = snapshots.borrow().stats.clone();
        let clever = cluster.clever.stats();
        let mut held: Vec<String> = stats
            .held
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect();
        held.dedup();
        let mut view = View {
            pending: 0,
            provisioning: stats.queued + stats.provisioning + stats.launching,
            running: 0,
            finished: 0,
            failed: 0,
            live_apps: clever.apps_live,
            weight: clever.live_weight.max(0.0),
            quota: stats.quota,
            jobs_total,
            held,
        };
        for job in &jobs {
            match job.status {
                JobStatus::Pending => view.pending += 1,
                JobStatus::Running if job.first_trace_at.is_some() => view.running += 1,
                JobStatus::Running => {}
                JobStatus::Failed => {
                    view.finished += 1;
                    view.failed += 1;
                }
                _ => view.finished += 1,
            }
        }
        view
    }
}

struct Progress {
    tty: bool,
    to_stderr: bool,
}

impl Progress {
    fn new(json: bool) -> Progress {
        let tty = if json {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        Progress {
            tty,
            to_stderr: json,
        }
    }

    fn show(&self, view: &View, elapsed: Duration) {
        let mut line = format!(
            "[{:>6.1}s] pending {:>4} | provisioning {:>4} | running {:>4} | done {:>4}/{} ({} failed) | apps {:>4} | weight {:>7.1} / {:.1}",
            elapsed.as_secs_f64(),
            view.pending,
            view.provisioning,
            view.running,
            view.finished,
            view.jobs_total,
            view.failed,
            view.live_apps,
            view.weight,
            view.quota,
        );
        if !view.held.is_empty() {
            line.push_str(" | held by ");
            line.push_str(&view.held.join("; "));
        }
        let text = if self.tty {
            format!("\r{line}\x1b[K")
        } else {
            format!("{line}\n")
        };
        if !self.tty && !(elapsed.as_millis() / 200).is_multiple_of(10) {
            // Without a terminal, one line every two seconds is enough.
            return;
        }
        if self.to_stderr {
            let _ = std::io::stderr().write_all(text.as_bytes());
        } else {
            let mut out = std::io::stdout();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    }

    fn done(&self) {
        if self.tty {
            if self.to_stderr {
                eprintln!();
            } else {
                println!();
            }
        }
    }
}

fn summarize(
    cluster: &SimCluster,
    snapshots: &watch::Receiver<Snapshot>,
    jobs_total: usize,
    wall: Duration,
) -> Summary {
    let jobs = cluster.coordinator.jobs();
    let clever = cluster.clever.stats();
    let pickups = pickup_latencies_ms(&jobs);
    let succeeded = jobs
        .iter()
        .filter(|job| job.status == JobStatus::Success)
        .count();
    let failed = jobs
        .iter()
        .filter(|job| job.status == JobStatus::Failed)
        .count();
    Summary {
        jobs_total,
        jobs_succeeded: succeeded,
        jobs_failed: failed,
        jobs_unfinished: jobs_total.saturating_sub(succeeded + failed),
        apps_created: clever.apps_created,
        apps_left: clever.apps_live,
        max_weight: round1(clever.max_live_weight),
        quota: round1(snapshots.borrow().stats.quota),
        max_live_apps: clever.max_live_apps,
        pickup_p50_ms: round1(percentile(&pickups, 0.50)),
        pickup_p95_ms: round1(percentile(&pickups, 0.95)),
        wall_seconds: round1(wall.as_secs_f64()),
    }
}

fn print_summary(summary: &Summary) {
    println!("Summary");
    println!(
        "  jobs:        {} total, {} succeeded, {} failed, {} unfinished",
        summary.jobs_total, summary.jobs_succeeded, summary.jobs_failed, summary.jobs_unfinished
    );
    println!(
        "  machines:    {} created, {} left, at most {} at once",
        summary.apps_created, summary.apps_left, summary.max_live_apps
    );
    println!(
        "  weight:      at most {:.1} of a quota of {:.1}",
        summary.max_weight, summary.quota
    );
    println!(
        "  pickup:      p50 {:.1} ms, p95 {:.1} ms",
        summary.pickup_p50_ms, summary.pickup_p95_ms
    );
    println!("  wall time:   {:.1} s", summary.wall_seconds);
}

/// Time from queueing to pickup of each picked job, in milliseconds, sorted.
pub fn pickup_latencies_ms(jobs: &[JobRecord]) -> Vec<f64> {
    let mut latencies: Vec<f64> = jobs
        .iter()
        .filter_map(|job| {
            Some(
                job.picked_at?
                    .saturating_duration_since(job.queued_at)
                    .as_secs_f64()
                    * 1000.0,
            )
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    latencies
}

/// The `p`-quantile of sorted values (nearest rank), 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}
