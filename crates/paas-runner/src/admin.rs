//! Operator commands: `state` (what the service tracks) and `reap` (what
//! reconciliation would delete, and deleting it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use paas_core::naming;
use paas_core::{OrphanVerdict, TrackedApps};
use paas_store::Store;

use crate::driver::{age_text, ForeignSeen, FOREIGN_META_KEY};
use crate::runners::RunnerIo;

/// Where the state database of a configuration is, made absolute (against
/// the current directory, as the service resolves it) for messages.
pub fn store_location(config: &paas_config::Config) -> PathBuf {
    paas_store::resolve_store_path(config.state_file.as_deref())
}

/// The state database of a configuration, which must exist (an operator
/// command never creates one). The one place where operator commands open
/// the store.
pub fn open_existing_store(config: &paas_config::Config) -> anyhow::Result<Store> {
    let path = store_location(config);
    if !path.exists() {
        anyhow::bail!(
            "no state database at {} (the service has not run with this configuration, \
             or `state_file` is not the one it uses)",
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
    if let paas_config::StoreSettings::Postgres(settings) = &config.store {
        return match crate::ha::print_state(settings).await {
            Ok(records) => {
                print_jobs(&config, records);
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("paas-runner state: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let result = (|| -> anyhow::Result<()> {
        let store = open_existing_store(&config)?;
        let records = store.load()?;
        println!("state database: {}", store.path().display());
        match paas_store::lock_holder(store.path())? {
            Some(holder) => println!("held by the service: {holder}"),
            None => println!("no service holds it (not running, or stopped)"),
        }
        print_foreign(&store)?;
        print_jobs(&config, records);
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

/// The tracked jobs, one line each (no secrets; outside text sanitised).
pub(crate) fn print_jobs(config: &paas_config::Config, records: Vec<paas_core::JobRecord>) {
    println!("{} tracked job(s)", records.len());
    if records.is_empty() {
        return;
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
            (None, true) => format!(
                "(maybe) {}",
                naming::app_name(&record.runner_key, record.job_id)
            ),
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
}

/// Prints the applications of other installations (or unmarked) that the
/// service saw under its runner keys at its last reconciliation.
fn print_foreign(store: &Store) -> anyhow::Result<()> {
    let Some(json) = store.get_meta(FOREIGN_META_KEY)? else {
        return Ok(());
    };
    let seen: Vec<ForeignSeen> = serde_json::from_str(&json).unwrap_or_default();
    if seen.is_empty() {
        return Ok(());
    }
    println!(
        "{} application(s) under this configuration's runner keys belong to another installation \
         or carry no owner marker (last reconciliation); counted in the quota, never deleted \
         (`paas-runner reap CONFIG --yes --include-foreign` deletes them):",
        seen.len()
    );
    for app in seen {
        println!(
            "  foreign  app={} name={} owner={} age={}",
            shown(&app.app_id),
            shown(&app.name),
            shown(&app.owner),
            app.age_secs
                .map(age_text)
                .unwrap_or_else(|| "unknown".into())
        );
    }
    Ok(())
}

/// Text from the cloud, made safe for a terminal line.
fn shown(text: &str) -> String {
    text.chars()
        .take(100)
        .flat_map(char::escape_debug)
        .collect()
}

/// `paas-runner reap CONFIG [--yes [--include-foreign]]`: applications of
/// this configuration's runners that no tracked job accounts for.
pub async fn reap(config_path: &Path, yes: bool, include_foreign: bool) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let paas_config::StoreSettings::Postgres(settings) = &config.store {
        // Read with the service running: what it tracks now.
        let known = match crate::ha::tracked(settings).await {
            Ok(known) => known,
            Err(error) => {
                eprintln!("paas-runner reap: {error:#}; refusing to go on without the store");
                return ExitCode::from(crate::run::EXIT_CONFIG);
            }
        };
        return match reap_inner(&config, Some(known), yes, include_foreign).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("paas-runner reap: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    // Without the store, every live job's machine looks untracked: deleting
    // is refused, listing is still allowed.
    let store = match open_existing_store(&config) {
        Ok(store) => Some(store),
        Err(error) if yes => {
            eprintln!("paas-runner reap: {error:#}; refusing to delete anything without it");
            return ExitCode::from(crate::run::EXIT_CONFIG);
        }
        Err(error) => {
            println!("{error:#}: every application is shown as untracked and nobody's");
            None
        }
    };
    let known = match store
        .as_ref()
        .map(|store| anyhow::Ok((store.load()?, store.get_meta("system_id")?)))
        .transpose()
    {
        Ok(known) => known,
        Err(error) => {
            eprintln!("paas-runner reap: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    match reap_inner(&config, known, yes, include_foreign).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("paas-runner reap: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn reap_inner(
    config: &paas_config::Config,
    known: Option<(Vec<paas_core::JobRecord>, Option<String>)>,
    yes: bool,
    include_foreign: bool,
) -> anyhow::Result<()> {
    let (records, system_id) = known.unwrap_or_default();
    let system_id = system_id.unwrap_or_default();
    // The core's rules: which applications the recorded jobs account for,
    // and what an untracked one is (as reconciliation sees it).
    let tracked = TrackedApps::from_records(&records);
    let http = crate::setup::http_client()?;
    let min_age = config.orphan_min_age;
    let (mut deletable, mut young, mut foreign, mut deleted) = (0, 0, 0, 0);
    for runner_config in &config.runners {
        let io = RunnerIo::new(runner_config.clone(), http.clone())?;
        let apps = io.provider.list_owned(&io.key, 0.0, &system_id).await?;
        for app in apps {
            if tracked.accounts_for(&app) {
                continue;
            }
            let verdict = OrphanVerdict::of(&app.owner, app.age, min_age);
            let (label, delete) = match verdict {
                OrphanVerdict::Orphan => {
                    deletable += 1;
                    ("orphan", yes)
                }
                OrphanVerdict::Young => {
                    young += 1;
                    ("young", false)
                }
                OrphanVerdict::Foreign => {
                    foreign += 1;
                    let old_enough = paas_core::dispatcher::old_enough(app.age, min_age);
                    ("foreign", yes && include_foreign && old_enough)
                }
            };
            let age = app
                .age
                .map(|age| age_text(age.as_secs()))
                .unwrap_or_else(|| "unknown".into());
            println!(
                "{label:<7} runner={} app={} name={} owner={} weight={:.1} age={}",
                shown(&io.name),
                shown(&app.id),
                shown(&app.name),
                app.owner.label(&system_id),
                app.weight,
                age
            );
            if delete {
                match io
                    .provider
                    .delete(Some(&app.id), &app.name, &system_id)
                    .await
                {
                    paas_core::StepOutcome::Done(()) => {
                        deleted += 1;
                        println!("deleted {}", shown(&app.id))
                    }
                    paas_core::StepOutcome::Failed { user_message, .. } => {
                        println!("could not delete {}: {user_message}", shown(&app.id))
                    }
                }
            }
        }
    }
    let min_age_text = age_text(min_age.as_secs());
    if deletable + young + foreign == 0 {
        println!("no untracked application");
        return Ok(());
    }
    println!(
        "{deletable} orphan(s) of this installation older than {min_age_text}, {young} younger \
         (or of unknown age, kept), {foreign} of other installations or unmarked; {deleted} deleted"
    );
    if !yes && deletable > 0 {
        println!("run again with --yes to delete the orphans of this installation");
    }
    if foreign > 0 && !include_foreign {
        println!(
            "applications of other installations or unmarked are never deleted unless asked: \
             --yes --include-foreign (only those older than {min_age_text})"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_text_is_shown_escaped() {
        assert_eq!(shown("app_1\n\u{1b}[31m"), "app_1\\n\\u{1b}[31m");
    }
}
