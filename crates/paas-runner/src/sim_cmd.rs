//! `paas-runner sim`: the simulators alone, so that any runner (this one in
//! another process, or heptapod-paas-runner) can be pointed at them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use paas_sim::cluster::{ConfigOptions, SimCluster};
use paas_sim::coordinator::JobStatus;
use paas_sim::workload::{self, Workload};

use crate::demo::{cluster_settings, percentile, pickup_latencies_ms};

#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// Workload file (TOML). Without it, the sample workload of `--jobs` jobs.
    #[arg(long)]
    pub workload: Option<PathBuf>,
    /// Jobs of the sample workload.
    #[arg(long, default_value_t = 20)]
    pub jobs: u32,
    /// Number of runner tokens the coordinator accepts.
    #[arg(long, default_value_t = 1)]
    pub runners: usize,
    /// Write a heptapod-paas-runner configuration for these simulators here.
    #[arg(long)]
    pub write_config: Option<PathBuf>,
    /// `listen_address` of the written configuration (status page and
    /// metrics of the service); empty: none.
    #[arg(long, default_value = "127.0.0.1:9252")]
    pub listen_address: String,
    /// State file to name in the written configuration.
    #[arg(long, default_value = "paas-runner-state.json")]
    pub state_file: PathBuf,
    /// Exit once every job is finished and no application is left, instead
    /// of running until interrupted.
    #[arg(long)]
    pub exit_when_done: bool,
    /// In the written configuration: room for this many jobs of the
    /// default flavor (0: the generator's default quota).
    #[arg(long, default_value_t = 0)]
    pub room: u32,
    /// In the written configuration: `check_interval`, in seconds.
    #[arg(long)]
    pub check_interval: Option<f64>,
    /// In the written configuration: `[runners.paas_job_trace_watch]
    /// poll_step`, in seconds (heptapod-paas-runner's default is 10).
    #[arg(long)]
    pub poll_step: Option<f64>,
}

pub async fn main(args: SimArgs) -> ExitCode {
    match run(args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("paas-runner sim: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let workload = match &args.workload {
        Some(path) => Workload::from_path(path)?,
        None => Workload::sample(args.jobs, 1),
    };
    let cluster = SimCluster::start(&cluster_settings(&workload, args.runners)).await?;
    let clever = cluster.clever.config();
    println!("coordinator url:   {}", cluster.coordinator.url());
    for (idx, token) in cluster.runner_tokens.iter().enumerate() {
        println!("runner token {idx}:    {token}");
    }
    println!(
        "admin token:       {}  (for [runners.paas_job_trace_watch], and an administrator's access token for `register --access-token`)",
        cluster.admin_token
    );
    println!(
        "registration token: {}  (legacy, for `register --registration-token`)",
        cluster.registration_token
    );
    println!("cc_api_url:        {}", cluster.clever.api_url());
    println!("cc_orga_id:        {}", clever.orga_id);
    println!("cc_token:          {}", clever.token);
    println!("cc_auth_user:      Jenkins");
    println!(
        "OAuth 1:           consumer {} / {}, token {} / {}",
        clever.oauth_consumer_key,
        clever.oauth_consumer_secret,
        clever.oauth_token,
        clever.oauth_secret
    );
    println!("cc_api_token:      {}", clever.api_token);
    if let Some(path) = &args.write_config {
        let mut options = ConfigOptions::new(args.state_file.clone());
        if !args.listen_address.is_empty() {
            options.extra_global = format!("listen_address = {:?}\n", args.listen_address);
        }
        if args.room > 0 {
            options.reference_flavor = options.default_flavor.clone();
            options.reference_jobs_count = args.room;
        }
        if let Some(seconds) = args.check_interval {
            options.check_interval_secs = seconds;
        }
        if let Some(seconds) = args.poll_step {
            options.watch_poll_step_secs = seconds;
            options.watch_timeout_secs = options.watch_timeout_secs.max(seconds * 3.0);
        }
        std::fs::write(path, cluster.config_toml(&options))?;
        println!("configuration:     {}", path.display());
    }
    println!(
        "control:           GET {0}/sim/jobs, GET {0}/sim/stats, GET {0}/sim/runners, POST {0}/sim/jobs",
        cluster.coordinator.url()
    );

    let arrivals = workload.arrivals(&cluster.runner_tokens);
    let jobs_total = arrivals.len();
    println!("workload:          {jobs_total} jobs");
    let started = Instant::now();
    let coordinator = cluster.coordinator.clone();
    let feeder = tokio::spawn(async move { workload::feed(&coordinator, arrivals).await });
    let done = async {
        loop {
            let jobs = cluster.coordinator.jobs();
            let finished = jobs.iter().filter(|job| job.status.is_finished()).count();
            if feeder.is_finished()
                && finished >= jobs_total
                && cluster.clever.stats().apps_live == 0
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    if args.exit_when_done {
        tokio::select! {
            () = done => {},
            () = crate::run::shutdown_signal() => {},
        }
    } else {
        crate::run::shutdown_signal().await;
    }

    let jobs = cluster.coordinator.jobs();
    let stats = cluster.clever.stats();
    let count = |status: JobStatus| jobs.iter().filter(|job| job.status == status).count();
    let pickups = pickup_latencies_ms(&jobs);
    println!(
        "after {:.1} s: {} jobs, {} succeeded, {} failed, {} canceled, {} pending, {} running",
        started.elapsed().as_secs_f64(),
        jobs.len(),
        count(JobStatus::Success),
        count(JobStatus::Failed),
        count(JobStatus::Canceled),
        count(JobStatus::Pending),
        count(JobStatus::Running),
    );
    println!(
        "applications: {} created, {} deleted, {} left; max weight {:.1}; pickup p50 {:.0} ms p95 {:.0} ms",
        stats.apps_created,
        stats.apps_deleted,
        stats.apps_live,
        stats.max_live_weight,
        percentile(&pickups, 0.5),
        percentile(&pickups, 0.95)
    );
    let coordinator = cluster.coordinator.stats();
    let apps = cluster.clever.apps();
    let mut decommissions: Vec<f64> = jobs
        .iter()
        .filter_map(|job| {
            let finished = job.finished_at?.into_std();
            let suffix = format!("-{}", job.id);
            let deleted = apps
                .iter()
                .find(|app| app.name.ends_with(&suffix))?
                .deleted_at?;
            Some(deleted.saturating_duration_since(finished).as_secs_f64() * 1000.0)
        })
        .collect();
    decommissions.sort_by(f64::total_cmp);
    println!(
        "watching: {} requests spent watching jobs, {:.2} per launched job; finish to delete p50 {:.0} ms p95 {:.0} ms",
        coordinator.watch_requests,
        coordinator.watch_requests as f64 / stats.pushes.max(1) as f64,
        percentile(&decommissions, 0.5),
        percentile(&decommissions, 0.95)
    );
    cluster.coordinator.shutdown();
    cluster.clever.shutdown();
    Ok(ExitCode::SUCCESS)
}
