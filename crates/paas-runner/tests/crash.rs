//! Crash safety of the real binary: SIGKILL at random moments of a workload,
//! restart each time; at the end nothing is left, nothing is stuck, nothing
//! ran twice.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Harness, DEADLINE, SIGKILL, SIGTERM};
use paas_sim::cluster::ClusterSettings;
use paas_sim::coordinator::JobStatus;
use paas_sim::vars;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Number of SIGKILLs per run.
const KILLS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_leaks_nothing() {
    let seed: u64 = std::env::var("PAAS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261128);
    println!("crash test seed: {seed} (replay with PAAS_CRASH_SEED={seed})");
    let mut rng = SmallRng::seed_from_u64(seed);
    let settings = ClusterSettings {
        long_poll: Duration::from_millis(300),
        repo_ready_delay: Duration::from_millis(100),
        boot_delay: Duration::from_millis(150),
        ack_window: Duration::from_secs(5),
        seed,
        ..ClusterSettings::default()
    };
    let mut harness = Harness::start(settings, |options| {
        options.check_interval_secs = 0.2;
        options.extra_global = "paas_reconcile_interval = 2\n".into();
    })
    .await;

    // Jobs keep arriving while the runner is killed and restarted.
    let mut ids = Vec::new();
    for kill in 0..KILLS {
        for _ in 0..rng.gen_range(1..=3) {
            let duration = rng.gen_range(200..2500).to_string();
            let flavor = ["XS", "S", "M"][rng.gen_range(0..3)];
            ids.push(
                harness.enqueue(&[(vars::FLAVOR, flavor), (vars::JOB_DURATION_MS, &duration)]),
            );
        }
        harness.spawn_runner();
        // The moment of the kill is the fault being injected, not a wait.
        let alive_for = Duration::from_millis(rng.gen_range(50..1500));
        tokio::time::sleep(alive_for).await;
        let status = harness.signal_and_wait(SIGKILL).await;
        assert!(!status.success(), "kill {kill}: the runner was killed");
    }

    harness.spawn_runner();
    harness.wait_all_done(&ids).await;
    let status = harness.signal_and_wait(SIGTERM).await;
    assert!(status.success(), "final graceful stop\n{}", harness.logs());

    let jobs = harness.cluster.coordinator.jobs();
    let mut dropped = 0;
    for id in &ids {
        let job = jobs.iter().find(|job| job.id == *id).expect("job exists");
        assert!(
            job.status.is_finished(),
            "job {id} stuck in {:?}",
            job.status
        );
        if job.failure_reason.as_deref() == Some("runner_provisioning_timeout") {
            // Taken by a process killed before it recorded the job: the
            // coordinator's two-phase commit window gave it back, visibly.
            dropped += 1;
            continue;
        }
        assert_eq!(
            job.status,
            JobStatus::Success,
            "job {id}: {:?} {:?}\n{}",
            job.failure_reason,
            String::from_utf8_lossy(&job.trace),
            harness.logs()
        );
    }
    let apps = harness.cluster.clever.apps();
    let stats = harness.cluster.clever.stats();
    assert_eq!(stats.apps_live, 0, "applications leaked: {stats:?}");
    let mut runs_per_job: HashMap<String, u32> = HashMap::new();
    for app in &apps {
        *runs_per_job.entry(app.name.clone()).or_default() += app.pushes;
    }
    for (name, runs) in &runs_per_job {
        assert!(*runs <= 1, "{name} deployed {runs} times");
    }
    println!(
        "crash test: {} kills, {} jobs, {} dropped by the coordinator's commit window, {} applications created, max weight {:.1}",
        KILLS,
        ids.len(),
        dropped,
        stats.apps_created,
        stats.max_live_weight
    );
    let _ = DEADLINE;
}
