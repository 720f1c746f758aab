//! `paas-runner register`, `verify` and `unregister`: gitlab-runner's verbs
//! for the runner's life on the coordinator, editing the configuration file
//! in place (comments and order kept, `toml_edit`), written atomically with
//! mode 0600. No token is ever printed.
//!
//! Three ways to get a runner token, as GitLab offers them (reference §10):
//! a token created in GitLab (`glrt-…`, `--token`) is verified
//! (`POST /api/v4/runners/verify`); an administrator's access token
//! (`--access-token`) creates an instance runner (`POST /api/v4/user/runners`)
//! with the tags and settings given; a legacy registration token
//! (`--registration-token`) registers one (`POST /api/v4/runners`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use paas_core::Secret;
use paas_gitlab::{CoordinatorClient, GitlabError, NewRunner, RunnerSettings, Unregistered};
use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Item, Table};

use crate::run::EXIT_CONFIG;

/// Stands for the runner token while the new section is checked, before
/// GitLab gives the real one.
const PREFLIGHT_TOKEN: &str = "preflight-check-placeholder";

/// `paas-runner register`.
#[derive(clap::Args, Debug)]
pub struct RegisterArgs {
    /// Configuration file to edit (created if absent).
    #[arg(value_name = "CONFIG", required_unless_present = "config")]
    config_path: Option<PathBuf>,
    /// Configuration file (as gitlab-runner's `--config`).
    #[arg(short = 'c', long, env = "CONFIG_FILE", value_name = "CONFIG")]
    config: Option<PathBuf>,
    /// GitLab instance URL.
    #[arg(short = 'u', long, env = "CI_SERVER_URL")]
    url: String,
    /// Runner name in the configuration (unique in the file).
    #[arg(long, env = "RUNNER_NAME")]
    name: String,
    /// Runner authentication token created in GitLab (`glrt-…`): verified,
    /// then written. Tags and settings are GitLab's, not given here.
    #[arg(short = 't', long, env = "CI_SERVER_TOKEN", hide_env_values = true,
          conflicts_with_all = ["registration_token", "access_token"])]
    token: Option<String>,
    /// Legacy registration token (deprecated by GitLab): registers a new
    /// runner with the settings below.
    #[arg(
        short = 'r',
        long,
        env = "REGISTRATION_TOKEN",
        hide_env_values = true,
        conflicts_with = "access_token"
    )]
    registration_token: Option<String>,
    /// An administrator's personal access token (scope `create_runner` or
    /// `api`): creates a new instance runner with the settings below.
    #[arg(long, env = "PAAS_RUNNER_ACCESS_TOKEN", hide_env_values = true)]
    access_token: Option<String>,
    /// Description of the runner in GitLab (default: the name).
    #[arg(long, env = "RUNNER_DESCRIPTION")]
    description: Option<String>,
    /// Tags, comma-separated (e.g. `docker-registry-push,clever`).
    #[arg(long, env = "RUNNER_TAG_LIST", value_delimiter = ',')]
    tag_list: Vec<String>,
    /// Take jobs without tags too (always so when no tag is given).
    #[arg(long, env = "REGISTER_RUN_UNTAGGED")]
    run_untagged: bool,
    /// Create the runner paused.
    #[arg(long, env = "REGISTER_PAUSED")]
    paused: bool,
    /// Lock the runner to its projects.
    #[arg(long, env = "REGISTER_LOCKED")]
    locked: bool,
    /// `not_protected` or `ref_protected`.
    #[arg(long, env = "REGISTER_ACCESS_LEVEL", value_parser = ["not_protected", "ref_protected"])]
    access_level: Option<String>,
    /// Maximum job timeout, in seconds.
    #[arg(long, env = "REGISTER_MAXIMUM_TIMEOUT")]
    maximum_timeout: Option<u64>,
    /// Maintenance note shown in GitLab.
    #[arg(long, env = "REGISTER_MAINTENANCE_NOTE")]
    maintenance_note: Option<String>,
    /// Executor (only `clever-docker`).
    #[arg(long, default_value = paas_config::SUPPORTED_EXECUTOR, value_parser = [paas_config::SUPPORTED_EXECUTOR])]
    executor: String,
    /// Clever Cloud organisation running the jobs' machines.
    #[arg(long, env = "CC_ORGA_ID")]
    cc_orga_id: String,
    /// Clever Cloud API token, or `secret:NAME` (with --secrets-file).
    #[arg(long, env = "CC_TOKEN", hide_env_values = true)]
    cc_token: String,
    /// Clever Cloud API base URL (default: the public API).
    #[arg(long, env = "CC_API_URL")]
    cc_api_url: Option<String>,
    /// Clever Cloud zone (default `par`).
    #[arg(long)]
    cc_zone: Option<String>,
    /// Flavor of jobs that ask for none (default `M`).
    #[arg(long)]
    cc_default_flavor: Option<String>,
    /// Largest flavor a job may ask for.
    #[arg(long)]
    cc_max_flavor: Option<String>,
    /// A token able to read job logs, to confirm launches
    /// (`[runners.paas_job_trace_watch]`), or `secret:NAME`.
    #[arg(long, env = "PAAS_JOB_TRACE_WATCH_TOKEN", hide_env_values = true)]
    watch_token: Option<String>,
    /// Flat TOML file holding the values written `secret:NAME`.
    #[arg(long)]
    secrets_file: Option<PathBuf>,
    /// New file only: `state_file` (default: `paas-runner-state.db` beside
    /// the configuration file).
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// New file only: `concurrent`.
    #[arg(long, default_value_t = 50)]
    concurrent: u32,
    /// New file only: the quota is the weight of this many jobs of
    /// `--quota-reference-flavor`.
    #[arg(long, default_value_t = 4)]
    quota_reference_jobs: u32,
    /// New file only: flavor of the quota's reference jobs (default: the
    /// maximum flavor, else the default flavor, else `M`).
    #[arg(long)]
    quota_reference_flavor: Option<String>,
    /// Default image of the inner runner's docker executor
    /// (`[runners.docker] image`).
    #[arg(long, env = "DOCKER_IMAGE")]
    docker_image: Option<String>,
    /// Replace a runner of the same name or token already in the file.
    #[arg(long)]
    replace: bool,
}

/// `paas-runner verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Configuration file.
    #[arg(value_name = "CONFIG", required_unless_present = "config")]
    config_path: Option<PathBuf>,
    #[arg(short = 'c', long, env = "CONFIG_FILE", value_name = "CONFIG")]
    config: Option<PathBuf>,
    /// Only the runner of this name.
    #[arg(short = 'n', long)]
    name: Option<String>,
    /// Remove the runners whose token the coordinator refuses.
    #[arg(long)]
    delete: bool,
}

/// `paas-runner unregister`.
#[derive(clap::Args, Debug)]
pub struct UnregisterArgs {
    /// Configuration file.
    #[arg(value_name = "CONFIG", required_unless_present = "config")]
    config_path: Option<PathBuf>,
    #[arg(short = 'c', long, env = "CONFIG_FILE", value_name = "CONFIG")]
    config: Option<PathBuf>,
    /// The runner to unregister.
    #[arg(
        short = 'n',
        long,
        required_unless_present = "all_runners",
        conflicts_with = "all_runners"
    )]
    name: Option<String>,
    /// Unregister every runner of the file.
    #[arg(long)]
    all_runners: bool,
}

fn chosen_path(positional: Option<PathBuf>, option: Option<PathBuf>) -> PathBuf {
    positional.or(option).unwrap_or_default()
}

/// An error for the operator, printed as is (never holding a token).
#[derive(Debug)]
struct Refusal(String);

impl<T: std::fmt::Display> From<T> for Refusal {
    fn from(message: T) -> Self {
        Refusal(message.to_string())
    }
}

/// `paas-runner register`.
pub async fn register(args: RegisterArgs) -> ExitCode {
    match register_inner(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Refusal(message)) => {
            eprintln!("paas-runner register: {message}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

async fn register_inner(mut args: RegisterArgs) -> Result<(), Refusal> {
    let path = chosen_path(args.config_path.take(), args.config.take());
    let existing = read_document(&path)?;
    let created_file = existing.is_none();
    let mut document = existing.unwrap_or_default();
    if args.name.trim().is_empty() {
        return Err("--name must not be empty".into());
    }
    let client = coordinator(&args.url)?;
    let settings = RunnerSettings {
        description: args
            .description
            .clone()
            .unwrap_or_else(|| args.name.clone()),
        tags: args
            .tag_list
            .iter()
            .map(|tag| tag.trim().to_owned())
            .filter(|tag| !tag.is_empty())
            .collect(),
        // As gitlab-runner: untagged jobs too when no tag is given.
        run_untagged: args.run_untagged || args.tag_list.iter().all(|tag| tag.trim().is_empty()),
        paused: args.paused,
        locked: args.locked,
        access_level: args.access_level.clone(),
        maximum_timeout: args.maximum_timeout,
        maintenance_note: args.maintenance_note.clone(),
    };

    if args.token.is_some() {
        let server_side = !args.tag_list.is_empty()
            || args.run_untagged
            || args.paused
            || args.locked
            || args.access_level.is_some()
            || args.maximum_timeout.is_some()
            || args.maintenance_note.is_some();
        if server_side {
            return Err(
                "tags, --run-untagged, --paused, --locked, --access-level, --maximum-timeout and \
                 --maintenance-note belong to the runner in GitLab and cannot be given with a runner \
                 authentication token (--token): set them where the runner was created, or create it \
                 with --access-token"
                    .into(),
            );
        }
    }

    if document
        .get("runners")
        .is_some_and(|runners| !runners.is_array_of_tables())
    {
        return Err(format!(
            "{}: `runners` is not written as [[runners]] sections; rewrite it so before registering",
            path.display()
        )
        .into());
    }

    // Refuse a clash before asking GitLab for anything.
    let clash = find_clash(&document, &args.name, args.token.as_deref());
    if let (Some(index), false) = (clash, args.replace) {
        return Err(format!(
            "{}: runners[{index}] already has the name {:?} or this token; \
             pass --replace to replace it, or choose another --name",
            path.display(),
            args.name
        )
        .into());
    }

    // Check, before GitLab creates anything, that the file will load with
    // this runner (the token is not known yet: a placeholder stands in).
    let mut preflight = document.clone();
    if created_file {
        write_globals(&mut preflight, &args, &path);
    }
    let placeholder = Secret::new(PREFLIGHT_TOKEN);
    insert_runner(
        &mut preflight,
        runner_section(&args, client.base_url(), &placeholder, None),
        clash,
    );
    if let Err(error) = paas_config::parse(&preflight.to_string(), &path) {
        return Err(format!(
            "the configuration would not load with this runner, so nothing was registered: {error}"
        )
        .into());
    }

    let (token, runner_id) = match (
        args.token.take(),
        args.registration_token.take(),
        args.access_token.take(),
    ) {
        (Some(token), None, None) => {
            let token = Secret::new(token);
            // The service's system id when it already ran with this store,
            // so that GitLab files the verification under its manager.
            let system_id = known_system_id(&document, args.state_file.as_deref());
            let verified = client
                .verify_runner(&token, system_id.as_deref())
                .await
                .map_err(|error| explain(error, "the runner token (--token)"))?;
            (token, verified.id)
        }
        (None, Some(registration_token), None) => {
            let registration_token = Secret::new(registration_token);
            let NewRunner { id, token, .. } = client
                .register_runner(&registration_token, &settings)
                .await
                .map_err(|error| explain(error, "the registration token (--registration-token)"))?;
            (token, Some(id))
        }
        (None, None, Some(access_token)) => {
            let access_token = Secret::new(access_token);
            let NewRunner { id, token, .. } = client
                .create_instance_runner(&access_token, &settings)
                .await
                .map_err(|error| explain(error, "the access token (--access-token)"))?;
            (token, Some(id))
        }
        _ => {
            return Err(
                "give one of --token (created in GitLab), --access-token (creates the runner) \
                 or --registration-token (legacy), or their environment variables"
                    .into(),
            )
        }
    };

    if created_file {
        write_globals(&mut document, &args, &path);
    }
    let section = runner_section(&args, client.base_url(), &token, runner_id);
    insert_runner(&mut document, section, clash);
    let text = document.to_string();
    // What is written must load: check it as `run` would.
    if let Err(error) = paas_config::parse(&text, &path) {
        return Err(format!(
            "the runner was {} on GitLab, but the configuration would not load, so it was not written: {error}{}",
            if runner_id.is_some() { "registered" } else { "verified" },
            match runner_id {
                Some(id) => format!("; remove runner {id} in GitLab or register again with the fixed options"),
                None => String::new(),
            }
        )
        .into());
    }
    write_config(&path, &text)?;
    println!(
        "runner {:?} {} at {} (id {}); configuration {} {}",
        args.name,
        if clash.is_some() { "replaced" } else { "added" },
        client.base_url(),
        runner_id.map_or_else(|| "unknown".to_owned(), |id| id.to_string()),
        if created_file { "created:" } else { "updated:" },
        path.display()
    );
    Ok(())
}

/// The configuration at `path` and the system id of the service that used
/// its state database; a configuration error is printed for `verb` and
/// gives the exit status.
fn load_with_system_id(
    path: &Path,
    verb: &str,
) -> Result<(paas_config::Config, Option<String>), ExitCode> {
    let config = paas_config::load(path).map_err(|error| {
        eprintln!("paas-runner {verb}: {error}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    let system_id = service_system_id(&config);
    Ok((config, system_id))
}

/// `paas-runner verify CONFIG`: checks each runner's token; with
/// `--delete`, removes the runners whose token is refused (only a definite
/// 403 counts, as in gitlab-runner).
pub async fn verify(mut args: VerifyArgs) -> ExitCode {
    let path = chosen_path(args.config_path.take(), args.config.take());
    let (config, system_id) = match load_with_system_id(&path, "verify") {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let mut refused = Vec::new();
    let mut checked = 0;
    let mut unsure = 0;
    for runner in &config.runners {
        if args.name.as_deref().is_some_and(|name| name != runner.name) {
            continue;
        }
        checked += 1;
        let client = match coordinator(&runner.url) {
            Ok(client) => client,
            Err(Refusal(message)) => {
                unsure += 1;
                println!("runner {:?}: cannot verify: {message}", runner.name);
                continue;
            }
        };
        match client
            .verify_runner(&runner.token, system_id.as_deref())
            .await
        {
            Ok(_) => println!("runner {:?} at {}: valid", runner.name, runner.url),
            Err(GitlabError::Forbidden { .. }) => {
                println!(
                    "runner {:?} at {}: REFUSED (token unknown, revoked or expired)",
                    runner.name, runner.url
                );
                refused.push(runner.name.clone());
            }
            Err(error) => {
                unsure += 1;
                println!("runner {:?}: cannot verify: {error}", runner.name);
            }
        }
    }
    if checked == 0 {
        eprintln!("paas-runner verify: no runner matches");
        return ExitCode::from(EXIT_CONFIG);
    }
    if refused.is_empty() {
        return if unsure == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    if !args.delete {
        eprintln!("paas-runner verify: {} runner(s) refused; --delete removes them from the configuration", refused.len());
        return ExitCode::FAILURE;
    }
    match remove_runners(&path, &refused) {
        Ok(()) => {
            println!(
                "removed {} runner(s); updated {}",
                refused.len(),
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(Refusal(message)) => {
            eprintln!("paas-runner verify: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `paas-runner unregister CONFIG --name N | --all-runners`: as
/// gitlab-runner, a `glrt-` runner loses this host's runner manager
/// (`DELETE /api/v4/runners/managers` with the service's system id; the
/// runner itself stays in GitLab, where it was created), a legacy one is
/// deleted (`DELETE /api/v4/runners`); then the section is removed. A runner
/// the coordinator could not unregister stays in the file.
pub async fn unregister(mut args: UnregisterArgs) -> ExitCode {
    let path = chosen_path(args.config_path.take(), args.config.take());
    let (config, system_id) = match load_with_system_id(&path, "unregister") {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let targets: Vec<&paas_config::RunnerConfig> = config
        .runners
        .iter()
        .filter(|runner| args.all_runners || args.name.as_deref() == Some(runner.name.as_str()))
        .collect();
    if targets.is_empty() {
        eprintln!(
            "paas-runner unregister: no runner named {:?} in {}",
            args.name.as_deref().unwrap_or_default(),
            path.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let mut removed = Vec::new();
    let mut failed = 0;
    for runner in targets {
        let outcome = async {
            let client = coordinator(&runner.url).map_err(|Refusal(message)| message)?;
            if paas_gitlab::is_created_runner_token(&runner.token) {
                match &system_id {
                    Some(system_id) => client
                        .delete_runner_manager(&runner.token, system_id)
                        .await
                        .map(|outcome| match outcome {
                            Unregistered::Deleted => "runner manager deleted".to_owned(),
                            Unregistered::NoSuchManager => {
                                "no runner manager of this host on GitLab".to_owned()
                            }
                        })
                        .map_err(|error| error.to_string()),
                    None => {
                        Ok("the service never ran here: no runner manager to delete".to_owned())
                    }
                }
            } else {
                client
                    .delete_runner(&runner.token)
                    .await
                    .map(|_| "runner deleted".to_owned())
                    .map_err(|error| error.to_string())
            }
        }
        .await;
        match outcome {
            Ok(what) => {
                println!("runner {:?} at {}: {what}", runner.name, runner.url);
                removed.push(runner.name.clone());
            }
            Err(message) => {
                failed += 1;
                eprintln!(
                    "paas-runner unregister: runner {:?} at {}: {message}; kept in the configuration",
                    runner.name, runner.url
                );
            }
        }
    }
    if !removed.is_empty() {
        if let Err(Refusal(message)) = remove_runners(&path, &removed) {
            eprintln!("paas-runner unregister: {message}");
            return ExitCode::FAILURE;
        }
        println!("updated {}", path.display());
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn coordinator(url: &str) -> Result<CoordinatorClient, Refusal> {
    let http = crate::setup::http_client().map_err(|error| format!("http client: {error}"))?;
    Ok(CoordinatorClient::new(url, http)?)
}

/// What an API error means for the token the operator gave.
fn explain(error: GitlabError, what: &str) -> Refusal {
    match error {
        GitlabError::Forbidden { .. } => {
            Refusal(format!("the coordinator refused {what}: {error}"))
        }
        GitlabError::Unexpected { status: 410, .. } => Refusal(format!(
            "this GitLab instance no longer accepts registration tokens ({error}); \
             create the runner in GitLab (or with --access-token) and use --token"
        )),
        other => Refusal(other.to_string()),
    }
}

/// The system id of the service using this configuration's store, if it
/// ever ran (the runner manager GitLab knows it by).
fn service_system_id(config: &paas_config::Config) -> Option<String> {
    let path = paas_store::resolve_store_path(config.state_file.as_deref());
    if !path.exists() {
        return None;
    }
    paas_store::Store::open(&path)
        .ok()?
        .get_meta("system_id")
        .ok()
        .flatten()
}

/// The system id recorded in the state database the file names (or
/// `--state-file`), if that database exists.
fn known_system_id(document: &DocumentMut, state_file: Option<&Path>) -> Option<String> {
    let state_file = document
        .get("state_file")
        .and_then(Item::as_str)
        .map(PathBuf::from)
        .or_else(|| state_file.map(Path::to_path_buf))?;
    let path = paas_store::resolve_store_path(Some(&state_file));
    if !path.exists() {
        return None;
    }
    paas_store::Store::open(&path)
        .ok()?
        .get_meta("system_id")
        .ok()
        .flatten()
}

fn read_document(path: &Path) -> Result<Option<DocumentMut>, Refusal> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .parse::<DocumentMut>()
            .map(Some)
            // The message only: the usual rendering quotes a line, which
            // could hold a token.
            .map_err(|error| {
                format!(
                    "{}: invalid TOML: {}",
                    path.display(),
                    error.message().trim()
                )
                .into()
            }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(format!("{}: cannot read: {error}", path.display()).into()),
    }
}

/// Index of the runner with this name, or this token.
fn find_clash(document: &DocumentMut, name: &str, token: Option<&str>) -> Option<usize> {
    let tables = document.get("runners")?.as_array_of_tables()?;
    tables.iter().position(|table| {
        table.get("name").and_then(Item::as_str) == Some(name)
            || token.is_some_and(|token| table.get("token").and_then(Item::as_str) == Some(token))
    })
}

/// The global keys of a new file, its quota referring to this runner.
fn write_globals(document: &mut DocumentMut, args: &RegisterArgs, config_path: &Path) {
    let state_file = args.state_file.clone().unwrap_or_else(|| {
        let dir = config_path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        dir.join(paas_config::DEFAULT_STATE_FILE)
    });
    document.as_table_mut().decor_mut().set_prefix(
        "# paas-runner configuration, written by `paas-runner register`.\n\
         # Keys: README.md, \"Configuration\".\n",
    );
    document["concurrent"] = value(i64::from(args.concurrent));
    document["state_file"] = value(state_file.display().to_string());
    let reference_flavor = args
        .quota_reference_flavor
        .clone()
        .or_else(|| args.cc_max_flavor.clone())
        .or_else(|| args.cc_default_flavor.clone())
        .unwrap_or_else(|| "M".to_owned());
    let mut quota = Table::new();
    quota["reference_runner"] = value(args.name.clone());
    quota["reference_flavor"] = value(reference_flavor);
    quota["reference_jobs_count"] = value(i64::from(args.quota_reference_jobs));
    document["quota_computation"] = Item::Table(quota);
}

/// The `[[runners]]` section.
fn runner_section(args: &RegisterArgs, url: &str, token: &Secret, runner_id: Option<u64>) -> Table {
    let mut table = Table::new();
    table["name"] = value(args.name.clone());
    table["url"] = value(url);
    if let Some(id) = runner_id.and_then(|id| i64::try_from(id).ok()) {
        table["id"] = value(id);
    }
    table["token"] = value(token.expose());
    table["executor"] = value(args.executor.clone());
    if let Some(secrets_file) = &args.secrets_file {
        table["secrets_file"] = value(secrets_file.display().to_string());
    }
    if let Some(api_url) = &args.cc_api_url {
        table["cc_api_url"] = value(api_url.clone());
    }
    table["cc_orga_id"] = value(args.cc_orga_id.clone());
    table["cc_token"] = value(args.cc_token.clone());
    if let Some(zone) = &args.cc_zone {
        table["cc_zone"] = value(zone.clone());
    }
    if let Some(flavor) = &args.cc_default_flavor {
        table["cc_default_flavor"] = value(flavor.clone());
    }
    if let Some(flavor) = &args.cc_max_flavor {
        table["cc_max_flavor"] = value(flavor.clone());
    }
    let mut env = Table::new();
    env["CC_ENABLE_HEPTAPOD_RUNNER"] = value("true");
    table["cc_extra_env"] = Item::Table(env);
    if let Some(watch_token) = &args.watch_token {
        let mut watch = Table::new();
        watch["token"] = value(watch_token.clone());
        table["paas_job_trace_watch"] = Item::Table(watch);
    }
    if let Some(image) = &args.docker_image {
        // The inner runner's docker executor: the image of jobs that name
        // none.
        let mut docker = Table::new();
        docker["image"] = value(image.clone());
        docker["volumes"] = value(Array::from_iter(["/cache"]));
        table["docker"] = Item::Table(docker);
    }
    table
}

/// Adds `section` at the end of `[[runners]]`, or in place of runners[i].
fn insert_runner(document: &mut DocumentMut, section: Table, replace: Option<usize>) {
    // `register_inner` refused any other shape of `runners`.
    let runners = document
        .entry("runners")
        .or_insert_with(|| Item::ArrayOfTables(ArrayOfTables::new()));
    let Some(tables) = runners.as_array_of_tables_mut() else {
        return;
    };
    match replace.and_then(|index| tables.get_mut(index)) {
        Some(existing) => *existing = section,
        None => tables.push(section),
    }
}

/// Removes the runners named `names` from the file.
fn remove_runners(path: &Path, names: &[String]) -> Result<(), Refusal> {
    let mut document = read_document(path)?
        .ok_or_else(|| Refusal(format!("{}: the file disappeared", path.display())))?;
    if let Some(tables) = document
        .get_mut("runners")
        .and_then(Item::as_array_of_tables_mut)
    {
        tables.retain(|table| {
            !table
                .get("name")
                .and_then(Item::as_str)
                .is_some_and(|name| names.iter().any(|removed| removed == name))
        });
    }
    write_config(path, &document.to_string())
}

/// Writes the configuration atomically with mode 0600, keeping the owner of
/// the file it replaces when allowed to.
fn write_config(path: &Path, text: &str) -> Result<(), Refusal> {
    let owner = std::fs::metadata(path).ok().map(|metadata| {
        use std::os::unix::fs::MetadataExt as _;
        (metadata.uid(), metadata.gid())
    });
    crate::signals::write_private_file_owned(path, text.as_bytes(), owner)
        .map_err(|error| format!("{}: cannot write: {error}", path.display()).into())
}
