//! Workloads: parsing, deterministic arrivals, and feeding a coordinator.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use paas_sim::coordinator::{CoordinatorConfig, CoordinatorSim};
use paas_sim::vars;
use paas_sim::workload::{feed, Workload, WorkloadError};

fn tokens() -> Vec<String> {
    vec![
        "glrt-first-runner".to_string(),
        "glrt-second-runner".to_string(),
    ]
}

fn variables(spec: &paas_sim::coordinator::JobSpec) -> BTreeMap<&str, &str> {
    spec.variables
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect()
}

#[test]
fn example_workload_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads/mixed.toml");
    let workload = Workload::from_path(&path).expect("mixed.toml");
    assert_eq!(workload.seed, Some(42));
    assert_eq!(workload.sim.long_poll_ms, 2000);
    assert!(workload.job_count() > 50);
    workload.check_runners(1).expect("runner 0 exists");
    let arrivals = workload.arrivals(&tokens());
    assert_eq!(arrivals.len() as u64, workload.job_count());
}

#[test]
fn defaults_apply_to_missing_keys() {
    let workload = Workload::from_toml("[[jobs]]\nduration_ms = 50\n").expect("workload");
    assert_eq!(workload.seed, None);
    assert_eq!(workload.sim.boot_delay_ms, 300);
    assert_eq!(workload.sim.repo_ready_delay_ms, 200);
    assert!(!workload.sim.require_git_credentials);
    assert_eq!(workload.jobs[0].count, 1);
    let arrivals = workload.arrivals(&tokens());
    assert_eq!(arrivals.len(), 1);
    assert_eq!(arrivals[0].at, Duration::ZERO);
    assert_eq!(arrivals[0].spec.runner_token, None);
    assert_eq!(
        variables(&arrivals[0].spec).get(vars::JOB_DURATION_MS),
        Some(&"50")
    );
    assert!(!variables(&arrivals[0].spec).contains_key(vars::FLAVOR));
}

#[test]
fn errors_name_the_key_and_the_group() {
    let error =
        Workload::from_toml("[[jobs]]\ncount = 1\ndurations_ms = 5\n").expect_err("unknown key");
    assert!(matches!(error, WorkloadError::Parse { .. }));
    assert!(error.to_string().contains("durations_ms"), "{error}");

    let error =
        Workload::from_toml("[[jobs]]\n[[jobs]]\nresult = \"maybe\"\n").expect_err("bad result");
    assert!(
        matches!(error, WorkloadError::Invalid { group: 1, .. }),
        "{error}"
    );

    let workload = Workload::from_toml("[[jobs]]\nrunner = 2\n").expect("workload");
    assert!(workload.check_runners(2).is_err());
}

#[test]
fn arrivals_are_sorted_deterministic_and_carry_the_sim_variables() {
    let text = r#"
        seed = 3
        [[jobs]]
        count = 20
        flavor = "M"
        duration_ms = 1000
        duration_spread_ms = 500
        result = "failed"
        log_lines = 7
        start_after_ms = 100
        spread_ms = 1000
        runner = 1
        variables = { EXTRA = "yes", SIM_JOB_RESULT = "success" }
        [[jobs]]
        count = 5
        spread_ms = 3000
    "#;
    let workload = Workload::from_toml(text).expect("workload");
    let arrivals = workload.arrivals(&tokens());
    assert_eq!(arrivals, workload.arrivals(&tokens()));
    assert_eq!(arrivals.len(), 25);
    assert!(arrivals.windows(2).all(|pair| pair[0].at <= pair[1].at));

    let flavored: Vec<_> = arrivals
        .iter()
        .filter(|arrival| variables(&arrival.spec).get(vars::FLAVOR) == Some(&"M"))
        .collect();
    assert_eq!(flavored.len(), 20);
    for arrival in flavored {
        let variables = variables(&arrival.spec);
        assert!(arrival.at >= Duration::from_millis(100));
        assert!(arrival.at <= Duration::from_millis(1100));
        let duration: u64 = variables[vars::JOB_DURATION_MS].parse().expect("number");
        assert!((1000..=1500).contains(&duration));
        // The group's own fields win over its free variables.
        assert_eq!(variables[vars::JOB_RESULT], "failed");
        assert_eq!(variables[vars::JOB_LOG_LINES], "7");
        assert_eq!(variables["EXTRA"], "yes");
        assert_eq!(
            arrival.spec.runner_token.as_deref(),
            Some("glrt-second-runner")
        );
    }

    let mut reseeded = workload.clone();
    reseeded.seed = Some(4);
    assert_ne!(arrivals, reseeded.arrivals(&tokens()));
}

#[test]
fn sample_mixes_flavors_and_is_deterministic() {
    let sample = Workload::sample(200, 11);
    assert_eq!(sample, Workload::sample(200, 11));
    assert_eq!(sample.job_count(), 200);
    let arrivals = sample.arrivals(&tokens());
    let mut per_flavor: BTreeMap<String, u32> = BTreeMap::new();
    for arrival in &arrivals {
        let variables = variables(&arrival.spec);
        *per_flavor
            .entry(variables[vars::FLAVOR].to_string())
            .or_default() += 1;
        let duration: u64 = variables[vars::JOB_DURATION_MS].parse().expect("number");
        assert!((500..=4000).contains(&duration));
    }
    let small =
        per_flavor.get("XS").copied().unwrap_or(0) + per_flavor.get("S").copied().unwrap_or(0);
    let large =
        per_flavor.get("XL").copied().unwrap_or(0) + per_flavor.get("2XL").copied().unwrap_or(0);
    assert!(small > 100, "{per_flavor:?}");
    assert!(large > 0 && large < 40, "{per_flavor:?}");
    assert!(per_flavor.contains_key("M") && per_flavor.contains_key("L"));
    assert_ne!(arrivals, Workload::sample(200, 12).arrivals(&tokens()));
}

#[tokio::test]
async fn feed_enqueues_each_job_at_its_time() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let sim = CoordinatorSim::start(
        listener,
        CoordinatorConfig {
            runner_tokens: tokens(),
            ..CoordinatorConfig::default()
        },
    )
    .await
    .expect("start");
    let workload = Workload::from_toml(
        "seed = 1\n[[jobs]]\ncount = 3\nstart_after_ms = 50\n[[jobs]]\ncount = 2\nstart_after_ms = 150\n",
    )
    .expect("workload");
    let started = tokio::time::Instant::now();
    let ids = feed(&sim, workload.arrivals(&tokens())).await;
    assert_eq!(ids.len(), 5);
    let offsets: Vec<u64> = ids
        .iter()
        .map(|id| {
            let record = sim.job(*id).expect("record");
            record.queued_at.duration_since(started).as_millis() as u64
        })
        .collect();
    // Real time (tokio's paused clock needs its `test-util` feature): each
    // job is enqueued no earlier than its arrival time.
    assert!(
        offsets[..3].iter().all(|offset| *offset >= 50),
        "{offsets:?}"
    );
    assert!(
        offsets[3..].iter().all(|offset| *offset >= 150),
        "{offsets:?}"
    );
    assert!(
        offsets.windows(2).all(|pair| pair[0] <= pair[1]),
        "{offsets:?}"
    );
    assert_eq!(sim.stats().pending, 5);
    sim.shutdown();
}
