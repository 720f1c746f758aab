//! High availability with the real binary: replicas of one runner on a
//! PostgreSQL store (a throwaway cluster; skipped with a notice when
//! PostgreSQL is not installed, unless `PAAS_RUNNER_REQUIRE_TOOLS=1`), the
//! simulators as coordinator and cloud.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Harness, DEADLINE, SIGKILL, SIGTERM};
use paas_sim::cluster::ClusterSettings;
use paas_sim::coordinator::JobStatus;
use paas_sim::vars;
use paas_store::postgres::lease::{Lease, LeaseInfo};
use paas_store::postgres::throwaway::{start_or_skip, Throwaway, PASSWORD};
use paas_store::postgres::PgStore;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// The lease of these tests (the shortest accepted).
const LEASE_SECS: u64 = 3;

struct Replica {
    child: Child,
    log: std::path::PathBuf,
}

impl Replica {
    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }
}

fn spawn_replica(dir: &Path, config: &Path, number: usize) -> Replica {
    let log = dir.join(format!("replica-{number}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_paas-runner"))
        .arg("--log-level")
        .arg("info,paas_runner=debug")
        .arg("run")
        .arg(config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn paas-runner");
    Replica { child, log }
}

fn logs(replicas: &[&Path]) -> String {
    replicas
        .iter()
        .map(|path| {
            format!(
                "----- {} -----\n{}",
                path.display(),
                std::fs::read_to_string(path).unwrap_or_default()
            )
        })
        .collect()
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: plain kill(2) on our own child.
    let rc = unsafe { libc_kill(pid as i32, signal) };
    assert_eq!(rc, 0, "kill failed");
}

/// The simulators, a configuration whose `[store]` is database `database`
/// of `pg` through `port`, and the quota's weight.
async fn harness_on(pg: &Throwaway, database: &str, port: u16, seed: u64) -> (Harness, f64) {
    pg.create_database(database).expect("database");
    let settings = ClusterSettings {
        long_poll: Duration::from_millis(300),
        repo_ready_delay: Duration::from_millis(100),
        boot_delay: Duration::from_millis(150),
        ack_window: Duration::from_secs(5),
        seed,
        ..ClusterSettings::default()
    };
    let harness = Harness::start(settings, |options| {
        options.check_interval_secs = 0.2;
        options.reference_jobs_count = 4;
        options.max_flavor = Some("M".into());
        options.extra_global = "paas_reconcile_interval = 2\n".into();
    })
    .await;
    let secrets = harness.dir.path().join("secrets.toml");
    std::fs::write(&secrets, format!("store_password = {PASSWORD:?}\n")).unwrap();
    let text = std::fs::read_to_string(&harness.config_path).unwrap();
    let mut text: String = text
        .lines()
        .filter(|line| !line.starts_with("state_file"))
        .map(|line| format!("{line}\n"))
        .collect();
    text.push_str(&format!(
        "\n[store]\nurl = {:?}\npassword = \"secret:store_password\"\nsecrets_file = {:?}\nlease_seconds = {LEASE_SECS}\n",
        pg.url_via(port, database),
        secrets.display().to_string()
    ));
    std::fs::write(&harness.config_path, text).unwrap();
    // Quota: 4 jobs of flavor M (8 GiB).
    let quota = 4.0 * paas_core::weight_of_ram_mib(8192);
    (harness, quota)
}

async fn lease_of(store: &PgStore) -> LeaseInfo {
    store.lease_info().await.expect("lease readable")
}

/// The pid in a replica identity (`name:pid:tag`).
fn pid_of(holder: &str) -> Option<u32> {
    holder.split(':').nth(1)?.parse().ok()
}

/// Waits until some replica holds the lease with an epoch above `after`.
async fn wait_active(store: &PgStore, after: i64, deadline: Duration) -> Option<LeaseInfo> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        let info = lease_of(store).await;
        if info.epoch > after && info.is_held() {
            return Some(info);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_the_active_one_killed_again_and_again() {
    let Some(pg) = start_or_skip("three_replicas_the_active_one_killed_again_and_again")
        .expect("throwaway PostgreSQL")
    else {
        return;
    };
    let seed: u64 = std::env::var("PAAS_HA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261203);
    let kills: usize = std::env::var("PAAS_HA_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!("HA test seed: {seed} (replay with PAAS_HA_SEED={seed}), {kills} kills");
    let mut rng = SmallRng::seed_from_u64(seed);
    let (harness, quota) = harness_on(&pg, "ha", pg.port(), seed).await;
    let observer = PgStore::open(&pg.settings("ha", Duration::from_secs(LEASE_SECS)))
        .await
        .expect("observer");
    let dir = harness.dir.path().to_path_buf();
    let mut count = 0;
    let mut replicas: Vec<Replica> = (0..3)
        .map(|_| {
            count += 1;
            spawn_replica(&dir, &harness.config_path, count)
        })
        .collect();
    let mut log_paths: Vec<std::path::PathBuf> = replicas.iter().map(|r| r.log.clone()).collect();
    let mut info = wait_active(&observer, 0, DEADLINE)
        .await
        .unwrap_or_else(|| panic!("no replica became active\n{}", logs(&paths(&log_paths))));

    let mut ids = Vec::new();
    let mut takeovers = Vec::new();
    for kill in 0..kills {
        for _ in 0..rng.gen_range(1..=3) {
            let duration = rng.gen_range(200..2500).to_string();
            let flavor = ["XS", "S", "M"][rng.gen_range(0..3)];
            ids.push(
                harness.enqueue(&[(vars::FLAVOR, flavor), (vars::JOB_DURATION_MS, &duration)]),
            );
        }
        // The moment of the kill is the fault being injected, not a wait.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..2500))).await;
        let active_pid = info
            .holder
            .as_deref()
            .and_then(pid_of)
            .expect("holder names its pid");
        let index = replicas
            .iter()
            .position(|replica| replica.pid() == active_pid)
            .expect("the active replica is one of ours");
        let mut victim = replicas.remove(index);
        signal(active_pid, SIGKILL);
        let killed_at = Instant::now();
        let _ = victim.child.wait().await;
        // A new replica replaces it (as a supervisor would restart it).
        count += 1;
        let replica = spawn_replica(&dir, &harness.config_path, count);
        log_paths.push(replica.log.clone());
        replicas.push(replica);
        let next = wait_active(&observer, info.epoch, Duration::from_secs(LEASE_SECS * 5))
            .await
            .unwrap_or_else(|| panic!("kill {kill}: no takeover\n{}", logs(&paths(&log_paths))));
        let took = killed_at.elapsed();
        println!(
            "kill {kill}: epoch {} -> {}, takeover after {:.2} s",
            info.epoch,
            next.epoch,
            took.as_secs_f64()
        );
        takeovers.push(took);
        assert!(
            took < Duration::from_secs(LEASE_SECS) + Duration::from_secs(2),
            "kill {kill}: takeover took {took:?} (lease {LEASE_SECS} s)"
        );
        info = next;
    }

    harness.wait_all_done(&ids).await;
    // A graceful stop of every replica, the active one last.
    for mut replica in replicas {
        signal(replica.pid(), SIGTERM);
        let status = tokio::time::timeout(DEADLINE, replica.child.wait())
            .await
            .expect("stops in time")
            .expect("wait");
        assert!(status.success(), "graceful stop: {status:?}");
    }
    let all_logs = logs(&paths(&log_paths));
    let jobs = harness.cluster.coordinator.jobs();
    let mut dropped = 0;
    for id in &ids {
        let job = jobs.iter().find(|job| job.id == *id).expect("job exists");
        if job.failure_reason.as_deref() == Some("runner_provisioning_timeout") {
            // Taken by a replica killed before it recorded the job: the
            // coordinator's two-phase commit window gave it back, visibly.
            dropped += 1;
            continue;
        }
        assert_eq!(
            job.status,
            JobStatus::Success,
            "job {id}: {:?}\n{all_logs}",
            job.failure_reason
        );
    }
    let stats = harness.cluster.clever.stats();
    assert_eq!(stats.apps_live, 0, "applications leaked: {stats:?}");
    let mut runs_per_job: HashMap<String, u32> = HashMap::new();
    for app in harness.cluster.clever.apps() {
        *runs_per_job.entry(app.name.clone()).or_default() += app.pushes;
    }
    for (name, runs) in &runs_per_job {
        assert!(*runs <= 1, "{name} deployed {runs} times\n{all_logs}");
    }
    assert!(
        stats.max_live_weight <= quota + 1e-6,
        "quota {quota:.1} exceeded: {:.1}",
        stats.max_live_weight
    );
    let slowest = takeovers.iter().max().copied().unwrap_or_default();
    println!(
        "HA test: {kills} kills, {} jobs ({dropped} dropped by the commit window), takeovers {:?}, slowest {:.2} s, max weight {:.1} of {quota:.1}",
        ids.len(),
        takeovers
            .iter()
            .map(|t| format!("{:.2}", t.as_secs_f64()))
            .collect::<Vec<_>>(),
        slowest.as_secs_f64(),
        stats.max_live_weight
    );
}

/// The status address a replica logged (`listen_address` on port 0).
async fn status_address(log: &Path) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        // Without the colour sequences.
        let plain: String = text
            .split('\x1b')
            .map(|part| match part.find('m') {
                Some(end) if part.starts_with('[') => &part[end + 1..],
                _ => part,
            })
            .collect();
        let address = plain
            .lines()
            .filter(|line| line.contains("status server listening"))
            .find_map(|line| line.split("address=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned);
        if let Some(address) = address {
            return address;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no status address logged:\n{plain}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `/metrics` text once it contains `expected`.
async fn metrics_until(url: &str, expected: &str) -> String {
    let start = Instant::now();
    loop {
        if let Ok(response) = reqwest::get(url).await {
            let text = response.text().await.unwrap_or_default();
            if text.contains(expected) {
                return text;
            }
            assert!(start.elapsed() < DEADLINE, "{expected} never in:\n{text}");
        }
        assert!(start.elapsed() < DEADLINE, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/status.json` once `accept` holds for it, and the page then.
async fn status_until(
    base: &str,
    accept: impl Fn(&serde_json::Value) -> bool,
) -> (serde_json::Value, String) {
    let start = Instant::now();
    loop {
        if let Ok(response) = reqwest::get(format!("{base}/status.json")).await {
            let json: serde_json::Value = response.json().await.unwrap_or_default();
            if accept(&json) {
                let page = reqwest::get(format!("{base}/"))
                    .await
                    .expect("page")
                    .text()
                    .await
                    .expect("page text");
                return (json, page);
            }
            assert!(start.elapsed() < DEADLINE, "status never matched:\n{json}");
        }
        assert!(start.elapsed() < DEADLINE, "{base} never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_pauses_pickup_briefly_and_loses_nothing() {
    let Some(pg) = start_or_skip("a_rolling_restart_pauses_pickup_briefly_and_loses_nothing")
        .expect("throwaway PostgreSQL")
    else {
        return;
    };
    let (harness, _) = harness_on(&pg, "rolling", pg.port(), 11).await;
    let observer = PgStore::open(&pg.settings("rolling", Duration::from_secs(LEASE_SECS)))
        .await
        .expect("observer");
    let dir = harness.dir.path().to_path_buf();
    let mut count = 0;
    let mut replicas: Vec<Replica> = (0..2)
        .map(|_| {
            count += 1;
            spawn_replica(&dir, &harness.config_path, count)
        })
        .collect();
    let mut log_paths: Vec<std::path::PathBuf> = replicas.iter().map(|r| r.log.clone()).collect();
    let mut info = wait_active(&observer, 0, DEADLINE)
        .await
        .unwrap_or_else(|| panic!("no active replica\n{}", logs(&paths(&log_paths))));
    let mut ids = Vec::new();
    let mut handovers = Vec::new();
    // Every replica restarted once, the active one last each time.
    for round in 0..4 {
        for _ in 0..3 {
            ids.push(harness.enqueue(&[(vars::JOB_DURATION_MS, "800")]));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let active_pid = info.holder.as_deref().and_then(pid_of).expect("pid");
        let index = replicas
            .iter()
            .position(|replica| replica.pid() == active_pid)
            .expect("ours");
        let mut stopping = replicas.remove(index);
        signal(active_pid, SIGTERM);
        let stopped_at = Instant::now();
        let next = wait_active(&observer, info.epoch, DEADLINE)
            .await
            .unwrap_or_else(|| panic!("round {round}: no handover\n{}", logs(&paths(&log_paths))));
        let took = stopped_at.elapsed();
        let status = tokio::time::timeout(DEADLINE, stopping.child.wait())
            .await
            .expect("stops")
            .expect("wait");
        assert!(status.success(), "round {round}: {status:?}");
        println!(
            "round {round}: handover {:.2} s after SIGTERM",
            took.as_secs_f64()
        );
        handovers.push(took);
        // Well before the lease could have expired: released, not expired.
        assert!(
            took < Duration::from_secs(LEASE_SECS),
            "round {round}: handover took {took:?}\n{}",
            logs(&paths(&log_paths))
        );
        count += 1;
        let replica = spawn_replica(&dir, &harness.config_path, count);
        log_paths.push(replica.log.clone());
        replicas.push(replica);
        info = next;
    }
    harness.wait_all_done(&ids).await;
    for id in &ids {
        let job = harness.job(*id);
        assert_eq!(
            job.status,
            JobStatus::Success,
            "job {id}: {:?}",
            job.failure_reason
        );
    }
    for mut replica in replicas {
        signal(replica.pid(), SIGTERM);
        assert!(replica.child.wait().await.unwrap().success());
    }
    println!(
        "rolling restart: handovers {:?} s",
        handovers
            .iter()
            .map(|t| format!("{:.2}", t.as_secs_f64()))
            .collect::<Vec<_>>()
    );
}

fn paths(paths: &[std::path::PathBuf]) -> Vec<&Path> {
    paths.iter().map(|p| p.as_path()).collect()
}

/// A TCP proxy the test can cut: every connection through it is closed,
/// and new ones are refused, once `cut` is set.
async fn proxy(target: u16) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cut = Arc::new(AtomicBool::new(false));
    let flag = cut.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            if flag.load(Ordering::SeqCst) {
                drop(client);
                continue;
            }
            let flag = flag.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up = tokio::io::copy(&mut client_read, &mut server_write);
                let down = tokio::io::copy(&mut server_read, &mut client_write);
                let cut = async {
                    while !flag.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                };
                // A cut partition drops traffic silently: hold the sockets
                // open but copy nothing more.
                tokio::select! {
                    _ = async { tokio::join!(up, down) } => {}
                    () = cut => std::future::pending::<()>().await,
                }
            });
        }
    });
    (port, cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_from_the_database_stops_before_a_standby_starts() {
    let Some(pg) = start_or_skip("a_replica_cut_from_the_database_stops_before_a_standby_starts")
        .expect("throwaway PostgreSQL")
    else {
        return;
    };
    let (proxy_port, cut) = proxy(pg.port()).await;
    // The first replica reaches the database through the proxy only.
    let (harness, _quota) = harness_on(&pg, "partition", proxy_port, 7).await;
    let dir = harness.dir.path().to_path_buf();
    let observer = PgStore::open(&pg.settings("partition", Duration::from_secs(LEASE_SECS)))
        .await
        .expect("observer");
    let mut isolated = spawn_replica(&dir, &harness.config_path, 1);
    let first = wait_active(&observer, 0, DEADLINE)
        .await
        .unwrap_or_else(|| panic!("no active replica\n{}", logs(&[isolated.log.as_path()])));
    assert_eq!(
        first.holder.as_deref().and_then(pid_of),
        Some(isolated.pid())
    );
    // A standby with a direct connection.
    let direct = harness.dir.path().join("direct.toml");
    let text = std::fs::read_to_string(&harness.config_path)
        .unwrap()
        .replace(
            &format!("127.0.0.1:{proxy_port}/"),
            &format!("127.0.0.1:{}/", pg.port()),
        );
    // The standby serves its metrics.
    std::fs::write(&direct, format!("listen_address = \"127.0.0.1:0\"\n{text}")).unwrap();
    let mut standby = spawn_replica(&dir, &direct, 2);
    let status_base = format!("http://{}", status_address(&standby.log).await);
    let metrics_url = format!("{status_base}/metrics");
    let standby_metrics = metrics_until(&metrics_url, "paas_runner_replica_active 0").await;
    assert!(
        standby_metrics.contains(&format!("paas_runner_lease_epoch {}", first.epoch)),
        "{standby_metrics}"
    );
    // Its status page and document say so, and name the active replica.
    let first_holder = first.holder.clone().expect("holder");
    let (json, page) = status_until(&status_base, |json| {
        json["replica"]["role"] == "standby"
            && json["replica"]["active"].as_str() == Some(first_holder.as_str())
    })
    .await;
    let replica = &json["replica"];
    assert_eq!(replica["epoch"], first.epoch, "{json}");
    assert_eq!(
        replica["replica"].as_str().and_then(pid_of),
        Some(standby.pid()),
        "{json}"
    );
    assert!(
        replica["active_for_secs"]
            .as_f64()
            .is_some_and(|secs| secs >= 0.0 && secs < DEADLINE.as_secs_f64() * 2.0),
        "the active replica's takeover, read from the lease: {json}"
    );
    assert!(
        replica["active_since"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z')),
        "{json}"
    );
    // The active replica renews its lease: it expires within the lease.
    assert!(
        replica["lease_expires_in_secs"]
            .as_f64()
            .is_some_and(|left| left > 0.0 && left <= LEASE_SECS as f64),
        "{json}"
    );
    for expected in [
        "Standby: this replica".to_owned(),
        "waits for the lease".to_owned(),
        format!(
            "the active replica is <code>{first_holder}</code> (lease epoch {}",
            first.epoch
        ),
    ] {
        assert!(page.contains(&expected), "missing {expected:?} in\n{page}");
    }
    // Jobs flow through the active replica.
    let ids: Vec<u64> = (0..3)
        .map(|_| harness.enqueue(&[(vars::JOB_DURATION_MS, "3000")]))
        .collect();
    let started = harness.wait_started(ids[0]).await;
    assert!(started, "{}", logs(&[isolated.log.as_path()]));

    cut.store(true, Ordering::SeqCst);
    let cut_at = Instant::now();
    // The isolated replica exits on its own (lease lost) ...
    let status = tokio::time::timeout(DEADLINE, isolated.child.wait())
        .await
        .expect("the isolated replica stops by itself")
        .expect("wait");
    let stopped_after = cut_at.elapsed();
    assert_eq!(status.code(), Some(3), "exit status of a lost lease");
    // ... before the standby took over.
    let info = lease_of(&observer).await;
    assert_eq!(
        info.epoch, first.epoch,
        "a standby took over before the isolated replica stopped"
    );
    let next = wait_active(&observer, first.epoch, DEADLINE)
        .await
        .unwrap_or_else(|| {
            panic!(
                "the standby takes over\n{}",
                logs(&[standby.log.as_path(), isolated.log.as_path()])
            )
        });
    let took_over_after = cut_at.elapsed();
    assert_eq!(next.holder.as_deref().and_then(pid_of), Some(standby.pid()));
    println!(
        "partition: isolated replica stopped {:.2} s after the cut, standby active after {:.2} s",
        stopped_after.as_secs_f64(),
        took_over_after.as_secs_f64()
    );
    assert!(stopped_after < took_over_after);
    let log = std::fs::read_to_string(&isolated.log).unwrap();
    assert!(log.contains("LEASE LOST"), "{log}");
    let active_metrics = metrics_until(&metrics_url, "paas_runner_replica_active 1").await;
    assert!(
        active_metrics.contains(&format!("paas_runner_lease_epoch {}", next.epoch)),
        "{active_metrics}"
    );
    // The former standby's page and document: active, a higher epoch, a
    // takeover after the cut.
    let (json, page) = status_until(&status_base, |json| json["replica"]["role"] == "active").await;
    let replica = &json["replica"];
    let next_holder = next.holder.clone().expect("holder");
    assert_eq!(replica["epoch"], next.epoch, "{json}");
    assert!(next.epoch > first.epoch);
    assert_eq!(
        replica["replica"].as_str(),
        Some(next_holder.as_str()),
        "{json}"
    );
    assert_eq!(replica["active"], replica["replica"], "{json}");
    let since_cut = cut_at.elapsed().as_secs_f64();
    assert!(
        replica["active_for_secs"]
            .as_f64()
            .is_some_and(|secs| (0.0..since_cut + 0.5).contains(&secs)),
        "took over after the cut, {since_cut:.2} s ago: {json}"
    );
    let expected = format!(
        "Role: <b>active</b> replica <code>{next_holder}</code> &middot; lease epoch {}",
        next.epoch
    );
    assert!(page.contains(&expected), "missing {expected:?} in\n{page}");
    assert!(!page.contains("Standby"), "{page}");

    // The standby finishes the jobs; nothing left.
    harness.wait_all_done(&ids).await;
    for id in &ids {
        let job = harness.job(*id);
        assert_eq!(
            job.status,
            JobStatus::Success,
            "job {id}: {:?}",
            job.failure_reason
        );
    }
    signal(standby.pid(), SIGTERM);
    let status = standby.child.wait().await.unwrap();
    assert!(status.success());
}

fn job(job_id: u64) -> paas_core::JobRecord {
    paas_core::JobRecord {
        runner_key: "abcdefgh".into(),
        job_id,
        token: paas_core::Secret::new("glcbt-job-token"),
        project_id: Some(7),
        payload: format!(r#"{{"id":{job_id}}}"#),
        failure_reasons: None,
        flavor: "S".into(),
        expected_weight: 5.65,
        stage: paas_core::StageRecord::Running,
        app_id: Some(format!("app_{job_id}")),
        app_weight: 5.65,
        app_maybe: false,
        failure_kind: None,
        failure_message: None,
        message_written: false,
        failed: false,
        confirmed: true,
        log_bytes: 0,
        slow_notice_sent: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrate_copies_sqlite_to_postgresql_and_back_refusing_held_stores() {
    let Some(pg) = start_or_skip("store_migrate_copies_sqlite_to_postgresql_and_back")
        .expect("throwaway PostgreSQL")
    else {
        return;
    };
    let (harness, _) = harness_on(&pg, "moved", pg.port(), 1).await;
    let dir = harness.dir.path();
    let sqlite = dir.join("old.db");
    {
        let store = paas_store::SqliteStore::open(&sqlite).unwrap();
        store.save(&job(1)).unwrap();
        store.save(&job(2)).unwrap();
        store.set_meta("system_id", "r_moved").unwrap();
    }
    let migrate = |from: &Path, to: &Path| {
        let args: Vec<std::ffi::OsString> =
            vec!["store".into(), "migrate".into(), from.into(), to.into()];
        async move {
            let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
            common::run_to_exit(dir, &refs).await
        }
    };
    // A service holding the SQLite store: refused.
    let held = paas_store::SqliteStore::open_exclusive(&sqlite).unwrap();
    let output = migrate(&sqlite, &harness.config_path).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("in use by another paas-runner"),
        "{output:?}"
    );
    drop(held);
    // SQLite -> PostgreSQL.
    let output = migrate(&sqlite, &harness.config_path).await;
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("copied 2 job(s)"));
    let settings = pg.settings("moved", Duration::from_secs(LEASE_SECS));
    let mut store = PgStore::open(&settings).await.unwrap();
    use paas_store::JobStore;
    assert_eq!(store.load().await.unwrap(), vec![job(1), job(2)]);
    assert_eq!(
        store.get_meta("system_id").await.unwrap().as_deref(),
        Some("r_moved")
    );
    // `paas-runner state` reads it.
    let output =
        common::run_to_exit(dir, &["state".as_ref(), harness.config_path.as_os_str()]).await;
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        shown.contains("(PostgreSQL)") && shown.contains("no active replica"),
        "{shown}"
    );
    assert!(
        shown.contains("2 tracked job(s)") && !shown.contains(PASSWORD),
        "{shown}"
    );
    // `paas-runner reap --yes` reads the jobs it tracks there (the SQLite
    // default path, absent, is not looked at).
    let output = common::run_to_exit(
        dir,
        &[
            "reap".as_ref(),
            harness.config_path.as_os_str(),
            "--yes".as_ref(),
        ],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    // A second copy into a store that tracks jobs: refused.
    let output = migrate(&sqlite, &harness.config_path).await;
    assert!(!output.status.success());
    // A replica holding the lease: refused.
    let lease = paas_store::postgres::lease::Lease::connect(&settings, "svc:1:x".into())
        .await
        .unwrap();
    let acquired = lease.try_acquire().await.unwrap().expect("free");
    let back = dir.join("back.db");
    let output = migrate(&harness.config_path, &back).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("in use by a paas-runner service"),
        "{output:?}"
    );
    assert!(lease.release(acquired.epoch).await.unwrap());
    // PostgreSQL -> SQLite.
    let output = migrate(&harness.config_path, &back).await;
    assert!(output.status.success(), "{output:?}");
    let back = paas_store::SqliteStore::open(&back).unwrap();
    assert_eq!(back.load().unwrap(), vec![job(1), job(2)]);
    assert_eq!(
        back.get_meta("system_id").unwrap().as_deref(),
        Some("r_moved")
    );
    // The lease is free again for the service.
    assert!(!store.lease_info().await.unwrap().is_held());

    // heptapod-paas-runner's JSON state -> PostgreSQL, through the import
    // `run` does (into the SQLite store beside it), into a new database.
    pg.create_database("imported").expect("database");
    let config_text = std::fs::read_to_string(&harness.config_path).unwrap();
    let imported_config = dir.join("imported.toml");
    std::fs::write(
        &imported_config,
        config_text.replace(
            &pg.url_via(pg.port(), "moved"),
            &pg.url_via(pg.port(), "imported"),
        ),
    )
    .unwrap();
    let reference_state = dir.join("reference-state.json");
    let state = serde_json::json!({
        "launched": [{"runner_name": "glrt-abc", "job_id": 11, "token": "t11", "trace_offset": 0,
                      "expected_weight": 5.6,
                      "paas_resource": {"id": "app_11", "weight": 5.6, "launched": true,
                                        "deploy_url": "https://x"}}],
        "to_decommission": [],
        "standby_resources": [],
        "pending": []
    });
    std::fs::write(&reference_state, state.to_string()).unwrap();
    let output = migrate(&reference_state, &imported_config).await;
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("copied 1 job(s)"),
        "{output:?}"
    );
    assert!(!reference_state.exists(), "the JSON state is renamed aside");
    let settings = pg.settings("imported", Duration::from_secs(LEASE_SECS));
    let mut imported = PgStore::open(&settings).await.unwrap();
    let records = imported.load().await.unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].job_id, 11);
    assert_eq!(records[0].app_id.as_deref(), Some("app_11"));
    assert_eq!(records[0].stage, paas_core::StageRecord::Running);
}

/// A plain client of database `database` of `pg` (autocommit).
async fn sql_client(pg: &Throwaway, database: &str) -> tokio_postgres::Client {
    let mut config: tokio_postgres::Config = pg.url_via(pg.port(), database).parse().expect("URL");
    config.password(PASSWORD);
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// `paas-runner store migrate FROM TO`, running.
fn spawn_migrate(dir: &Path, from: &Path, to: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_paas-runner"))
        .args([
            "store".as_ref(),
            "migrate".as_ref(),
            from.as_os_str(),
            to.as_os_str(),
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn paas-runner store migrate")
}

/// The lease once `store migrate` (process `pid`) holds it.
async fn held_by_migrate(store: &PgStore, pid: u32) -> LeaseInfo {
    let holder = format!("store-migrate:{pid}");
    let start = Instant::now();
    loop {
        let info = lease_of(store).await;
        if info.holder.as_deref() == Some(holder.as_str()) && info.is_held() {
            return info;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "never held by {holder}: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrate_holds_a_renewed_lease_and_stops_when_it_is_lost() {
    let Some(pg) = start_or_skip("store_migrate_holds_a_renewed_lease_and_stops_when_it_is_lost")
        .expect("throwaway PostgreSQL")
    else {
        return;
    };
    let (harness, _) = harness_on(&pg, "migrating", pg.port(), 3).await;
    let dir = harness.dir.path();
    let sqlite = dir.join("old.db");
    {
        let store = paas_store::SqliteStore::open(&sqlite).unwrap();
        store.save(&job(1)).unwrap();
        store.save(&job(2)).unwrap();
    }
    let settings = pg.settings("migrating", Duration::from_secs(LEASE_SECS));
    let observer = PgStore::open(&settings).await.expect("schema");
    // The test holds the jobs' table: the copy waits on its first read of
    // the target, with the lease taken.
    let blocker = sql_client(&pg, "migrating").await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE paas_runner_jobs IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");

    // 1. The lease has the configured duration, and is renewed.
    let mut migrate = spawn_migrate(dir, &sqlite, &harness.config_path);
    let pid = migrate.id().expect("running");
    let held = held_by_migrate(&observer, pid).await;
    let remaining = held.remaining_secs.expect("held");
    assert!(
        remaining <= LEASE_SECS as f64 + 0.1,
        "the migration's lease is lease_seconds = {LEASE_SECS}: {held:?}"
    );
    let start = Instant::now();
    let mut previous = remaining;
    loop {
        let info = lease_of(&observer).await;
        assert_eq!((&info.holder, info.epoch), (&held.holder, held.epoch));
        assert!(info.is_held(), "expired while the copy holds it: {info:?}");
        let left = info.remaining_secs.expect("held");
        if left > previous + 0.2 {
            break;
        }
        previous = left;
        assert!(
            start.elapsed() < Duration::from_secs(LEASE_SECS * 2),
            "never renewed: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 2. Killed mid-copy, it holds the replicas back one lease at most.
    signal(pid, SIGKILL);
    let killed_at = Instant::now();
    let _ = migrate.wait().await;
    let replica = Lease::connect(&settings, "replica:1:test".into())
        .await
        .unwrap();
    let acquired = loop {
        if let Some(acquired) = replica.try_acquire().await.unwrap() {
            break acquired;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(LEASE_SECS + 2),
            "the lease of a killed migration still held: {:?}",
            lease_of(&observer).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let freed_after = killed_at.elapsed();
    println!(
        "store migrate killed mid-copy: lease free after {:.2} s (lease_seconds = {LEASE_SECS})",
        freed_after.as_secs_f64()
    );
    assert!(freed_after < Duration::from_secs(LEASE_SECS + 1));
    assert!(replica.release(acquired.epoch).await.unwrap());

    // 3. Its lease taken by another process mid-copy: the copy stops with
    // an error saying so.
    let migrate = spawn_migrate(dir, &sqlite, &harness.config_path);
    let pid = migrate.id().expect("running");
    held_by_migrate(&observer, pid).await;
    let thief = sql_client(&pg, "migrating").await;
    thief
        .execute(
            "UPDATE paas_runner_lease SET holder = 'thief:1:test', epoch = epoch + 1, \
             expires_at = now() + interval '1 minute' WHERE id = 1",
            &[],
        )
        .await
        .expect("steal the lease");
    let output = tokio::time::timeout(DEADLINE, migrate.wait_with_output())
        .await
        .expect("the copy stops by itself")
        .expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("was lost during the copy: another process holds it now")
            && stderr.contains("start again with a new target"),
        "{stderr}"
    );
    blocker.batch_execute("ROLLBACK").await.expect("unlock");
    let mut store = PgStore::open(&settings).await.unwrap();
    use paas_store::JobStore;
    assert_eq!(store.load().await.unwrap(), vec![], "nothing copied");

    // 4. Free again: the copy runs to its end and releases the lease.
    thief
        .execute(
            "UPDATE paas_runner_lease SET holder = NULL, expires_at = NULL WHERE id = 1",
            &[],
        )
        .await
        .expect("release");
    let output = common::run_to_exit(
        dir,
        &[
            "store".as_ref(),
            "migrate".as_ref(),
            sqlite.as_os_str(),
            harness.config_path.as_os_str(),
        ],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(store.load().await.unwrap(), vec![job(1), job(2)]);
    let info = lease_of(&observer).await;
    assert!(!info.is_held(), "{info:?}");
    assert!(
        info.released_by
            .as_deref()
            .is_some_and(|by| by.starts_with("store-migrate:")),
        "{info:?}"
    );
}
