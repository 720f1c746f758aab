//! Operator commands: `state` (what the service tracks) and `reap` (what
//! reconciliation would delete, and deleting it).

use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;

use paas_store::Store;

use crate::runners::RunnerIo;

/// The store a configuration uses.
fn open_store(config: &paas_config::Config) -> anyhow::Result<Store> {
    let path = match &config.state_file {
        Some(state_file) => paas_store::store_path(state_file),
        None => std::path::PathBuf::from("paas-runner-state.db"),
    };
    if !path.exists() {
        anyhow::bail!(
            "{}: no state database (the service has not run with this configuration)",
            path.display()
        );
    }
    Ok(Store::open(&path)?)
}

fn load_config(path: &Path) -> Result<paas_config::Config, ExitCode> {
    paas_config::load(path).map_err(|error| {
        eprintln!("paas-runner: {error}");
        ExitCode::from(crate::run::EXIT_CONFIG)
    })
}

/// `paas-runner state CONFIG`: the tracked jobs and their resources.
pub async fn state(config_path: &Path) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let result = (|| -> anyhow::Result<()> {
        let store = open_store(&config)?;
        let records = store.load()?;
        println!("state database: {}", store.path().display());
        println!("{} tracked job(s)", records.len());
        if records.is_empty() {
            return Ok(());
        }
        println!(
            "{:<10} {:>10}  {:<16} {:<7} {:>7}  {:<44} note",
            "runner", "job", "stage", "flavor", "weight", "application"
        );
        for record in records {
            let runner = config
                .runners
                .iter()
                .find(|runner| runner.unique_id() == record.runner_key)
                .map(|runner| runner.name.clone())
                .unwrap_or_else(|| format!("?{}", record.runner_key));
            let app = match (&record.app_id, record.app_maybe) {
                (Some(id), _) => id.clone(),
                (None, true) => format!("(maybe) hpd-job-{}-{}", record.runner_key, record.job_id),
                (None, false) => "-".to_owned(),
            };
            let weight = if record.app_id.is_some() {
                record.app_weight
            } else {
                record.expected_weight
            };
            let note = match (&record.failure_message, record.confirmed) {
                (Some(message), _) => {
                    format!("failing: {}", message.lines().next().unwrap_or_default())
                }
                (None, false) => "not yet confirmed to the coordinator".to_owned(),
                (None, true) => String::new(),
            };
            // The flavor comes from a job variable, the note may quote a
            // cloud message: outside text, printed only sanitised.
            let shown = |text: &str, max_chars| paas_core::sanitize(text, max_chars, &[]);
            println!(
                "{:<10} {:>10}  {:<16} {:<7} {:>7.1}  {:<44} {}",
                runner,
                record.job_id,
                record.stage.as_str(),
                shown(&record.flavor, paas_core::sanitize::MAX_VALUE_CHARS),
                weight,
                shown(&app, paas_core::sanitize::MAX_VALUE_CHARS),
                shown(&note, paas_core::sanitize::MAX_MESSAGE_CHARS)
            );
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("paas-runner state: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `paas-runner reap CONFIG [--yes]`: applications of this configuration's
/// runners that no tracked job accounts for.
pub async fn reap(config_path: &Path, yes: bool) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match reap_inner(&config, yes).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("paas-runner reap: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn reap_inner(config: &paas_config::Config, yes: bool) -> anyhow::Result<()> {
    let records = tracked_records(config)?;
    // Applications a tracked job accounts for, by id and (when its creation
    // outcome is unknown) by name.
    let tracked_ids: HashSet<String> = records.iter().filter_map(|r| r.app_id.clone()).collect();
    let tracked_names: HashSet<String> = records
        .iter()
        .filter(|r| r.app_id.is_none())
        .map(|r| format!("hpd-job-{}-{}", r.runner_key, r.job_id))
        .collect();
    let http = crate::setup::http_client()?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut found = 0;
    for runner_config in &config.runners {
        let io = RunnerIo::new(runner_config.clone(), http.clone())?;
        let apps = io.list_own_apps(0.0).await?;
        for app in apps {
            if tracked_ids.contains(&app.id) || tracked_names.contains(&app.name) {
                continue;
            }
            found += 1;
            let age = app
                .created_ms
                .map(|ms| format!("{} s", (now_ms - ms).max(0) / 1000))
                .unwrap_or_else(|| "unknown".into());
            println!(
                "orphan  runner={} app={} name={} weight={:.1} age={}",
                io.name, app.id, app.name, app.weight, age
            );
            if yes {
                match io.delete_app(Some(&app.id), &app.name).await {
                    paas_core::StepOutcome::Done(()) => println!("deleted {}", app.id),
                    paas_core::StepOutcome::Failed { user_message, .. } => {
                        println!("could not delete {}: {user_message}", app.id)
                    }
                }
            }
        }
    }
    if found == 0 {
        println!("no orphan application");
    } else if !yes {
        println!("{found} orphan application(s); run again with --yes to delete them");
    }
    Ok(())
}

/// Records of the store, or none when the service never ran.
fn tracked_records(config: &paas_config::Config) -> anyhow::Result<Vec<paas_core::JobRecord>> {
    let path = match &config.state_file {
        Some(state_file) => paas_store::store_path(state_file),
        None => std::path::PathBuf::from("paas-runner-state.db"),
    };
    if !path.exists() {
        println!("no state database at {}: no job is tracked", path.display());
        return Ok(Vec::new());
    }
    Ok(Store::open(&path)?.load()?)
}
