//! Loads and validates a heptapod-paas-runner compatible TOML configuration.
//!
//! The file is a GitLab Runner `config.toml` with extra keys: global ones
//! tune the dispatcher, `[quota_computation]` sets the weighted quota, and
//! each `[[runners]]` entry mixes Clever Cloud settings (`cc_*`) with
//! standard runner settings forwarded to the inner runner on the job VM
//! ([`RunnerConfig::inner_config`]). Every error names the file, line and
//! key at fault; no error or warning shows a secret.
//!
//! What needs the cloud (whether `reference_flavor` and `cc_max_flavor`
//! exist, whether the quota fits the largest flavor) is checked by the
//! binary once flavors are known.

mod checks;
mod clever_auth;
mod error;
mod located;
mod placeholder;
mod reader;
mod runner;
mod secrets;
mod state_dir;
mod store;
pub mod store_tls;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::{ImDocument, Item, Value};

pub use clever_auth::{CleverAuth, DEFAULT_CC_API_BRIDGE_URL};
pub use error::ConfigError;
pub use located::{check_listen_address, key_error, LISTEN_ADDRESS_HINT};
pub use placeholder::placeholder_token;
pub use runner::{
    CleverSettings, Executor, RunnerConfig, TraceWatch, DEFAULT_CC_API_URL,
    DEFAULT_CC_INSTANCE_VARIANT_UUID, DEFAULT_HEPTAPOD_RUNNER_MAIN_IMAGE, INNER_EXECUTOR,
    SUPPORTED_EXECUTOR,
};
pub use secrets::SECRET_PREFIX;
pub use state_dir::check_state_file;
pub use store::{
    is_postgres_url, PostgresSettings, StoreSettings, DEFAULT_LEASE, DEFAULT_STATE_FILE, MIN_LEASE,
};

use reader::{display_line, Source, TableReader};
use secrets::ReadFile;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `concurrent`: maximum number of jobs across all runners.
    pub concurrent: usize,
    /// `check_interval`: time between two polls of a coordinator.
    pub check_interval: Duration,
    /// `job_progress_poll_interval` (the reference README says
    /// `job_progress_interval`): time between checks that launched jobs are
    /// finished, and wait when limits are reached.
    pub job_progress_poll_interval: Duration,
    /// `state_file`: where the reference kept its state across restarts
    /// (`None` for a PostgreSQL store: see [`Config::store`]).
    pub state_file: Option<PathBuf>,
    /// The store: SQLite at `state_file`, or PostgreSQL (`state_file =
    /// "postgresql://…"` or `[store]`).
    pub store: StoreSettings,
    /// `[quota_computation]`.
    pub quota: QuotaComputation,
    /// `paas_max_concurrent_provisioning`: jobs launched but not yet
    /// confirmed running, at most.
    pub max_concurrent_provisioning: usize,
    /// `paas_min_seconds_between_launches`.
    pub min_seconds_between_launches: Duration,
    /// `paas_reconcile_interval` (ours): time between listings of the
    /// cloud's applications, to adopt or delete what no job accounts for;
    /// 0 turns them off.
    pub reconcile_interval: Duration,
    /// `paas_orphan_min_age` (ours): an application of this installation
    /// that no job accounts for is deleted by reconciliation or `reap` only
    /// once it is at least this old; 0 is refused.
    pub orphan_min_age: Duration,
    /// `paas_slow_provisioning_notice` (ours): a job not launched after this
    /// long gets one line in its log saying what is being prepared; 0 turns
    /// it off.
    pub slow_provisioning_notice: Duration,
    /// `paas_finished_jobs_keep_resources`: never delete job VMs (debugging).
    pub finished_jobs_keep_resources: bool,
    /// `paas_decommission_launch_failures` (the reference README says
    /// `pass_decommision_launched_failures`): delete VMs whose launch failed.
    pub decommission_launch_failures: bool,
    /// `paas_repoll_same_runner_immediately`: poll a coordinator again at
    /// once when it gave a job. Defaults to `true`, unlike the reference.
    pub repoll_same_runner_immediately: bool,
    /// `paas_log_statistics`: log heptapod-paas-runner's `JSON statistics`
    /// line once per polling cycle.
    pub log_statistics: bool,
    /// `log_level` (gitlab-runner's): `debug`, `info`, `warn`, `error`
    /// (`fatal` and `panic` read as `error`); the command line wins.
    pub log_level: Option<String>,
    /// `log_format` (gitlab-runner's): `text` or `json` (`runner` reads as
    /// `text`); the command line wins.
    pub log_format: Option<String>,
    /// `listen_address`: where to serve metrics and status.
    pub listen_address: Option<String>,
    /// The `[[runners]]` entries, in file order; at least one.
    pub runners: Vec<RunnerConfig>,
    /// Things worth telling the operator that do not prevent running, such
    /// as unknown keys, each with file, line and key.
    pub warnings: Vec<String>,
}

/// `[quota_computation]`: the weighted quota is the weight of
/// `reference_jobs_count` jobs of flavor `reference_flavor` of the runner
/// named `reference_runner`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaComputation {
    /// Name of a runner of the file.
    pub reference_runner: String,
    /// A flavor name of that runner (checked against the cloud at start).
    pub reference_flavor: String,
    /// At least 1.
    pub reference_jobs_count: u32,
    /// The largest part of the quota one runner may use, in (0, 1].
    pub allowed_fraction_per_runner: f64,
}

impl Config {
    /// The runner named `name`.
    pub fn runner(&self, name: &str) -> Option<&RunnerConfig> {
        self.runners.iter().find(|runner| runner.name == name)
    }

    /// The runner that `[quota_computation]` refers to.
    pub fn reference_runner(&self) -> Option<&RunnerConfig> {
        self.runner(&self.quota.reference_runner)
    }
}

/// Reads and validates the configuration file at `path`, and the secrets
/// files it names.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigError::new(path, format!("cannot read configuration file: {error}"))
    })?;
    parse(&text, path)
}

/// Validates the configuration `text` of the file at `path` (used in
/// messages), reading the secrets files it names. A relative
/// `secrets_file` is relative to the current directory, as in the reference.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_with(text, path, &|secrets_path| {
        std::fs::read_to_string(secrets_path)
    })
}

/// Default of `paas_slow_provisioning_notice`.
pub const DEFAULT_SLOW_PROVISIONING_NOTICE: Duration = Duration::from_secs(120);

/// Default of `paas_reconcile_interval`.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(300);

/// Default of `paas_orphan_min_age`.
pub const DEFAULT_ORPHAN_MIN_AGE: Duration = Duration::from_secs(600);

/// Global keys read here.
const GLOBAL_KEYS: &[&str] = &[
    "concurrent",
    "check_interval",
    "job_progress_poll_interval",
    "job_progress_interval",
    "state_file",
    "store",
    "quota_computation",
    "paas_max_concurrent_provisioning",
    "paas_min_seconds_between_launches",
    "paas_finished_jobs_keep_resources",
    "paas_decommission_launch_failures",
    "pass_decommision_launched_failures",
    "paas_repoll_same_runner_immediately",
    "paas_log_statistics",
    "paas_reconcile_interval",
    "paas_orphan_min_age",
    "paas_slow_provisioning_notice",
    "listen_address",
    "runners",
    "log_level",
    "log_format",
];

/// Default of `check_interval` (also what 0 means, as in gitlab-runner).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(3);

/// gitlab-runner's `log_level` values.
pub const LOG_LEVELS: &[&str] = &[
    "trace", "debug", "info", "warn", "warning", "error", "fatal", "panic",
];

/// gitlab-runner's `log_format` values.
pub const LOG_FORMATS: &[&str] = &["runner", "text", "json"];

/// Global keys of GitLab Runner that are accepted and have no effect here
/// (each gets one warning).
const GITLAB_RUNNER_GLOBAL_KEYS: &[&str] = &[
    "shutdown_timeout",
    "sentry_dsn",
    "connection_max_age",
    "user",
    "session_server",
    "labels",
    "experimental",
];

const JOB_PROGRESS_KEYS: &[&str] = &["job_progress_poll_interval", "job_progress_interval"];
const DECOMMISSION_KEYS: &[&str] = &[
    "paas_decommission_launch_failures",
    "pass_decommision_launched_failures",
];
const QUOTA_KEYS: &[&str] = &[
    "reference_runner",
    "reference_flavor",
    "reference_jobs_count",
    "allowed_fraction_per_runner",
];

fn parse_with(text: &str, path: &Path, read_file: ReadFile<'_>) -> Result<Config, ConfigError> {
    let source = Source::new(path, text);
    let document = ImDocument::parse(text).map_err(|error| {
        let (line, column) = error
            .span()
            .map(|span| source.position_of(span.start))
            .unzip();
        // The message only, not the usual rendering that quotes the line
        // (which could hold a token).
        ConfigError::new(
            path,
            format!(
                "invalid TOML: {}",
                error.message().trim_end().replace('\n', "; ")
            ),
        )
        .at_line(line)
        .at_column(column)
    })?;
    let root = TableReader::root(&source, document.as_table());
    let mut warnings = Vec::new();

    for (key, _) in root.entries() {
        if GITLAB_RUNNER_GLOBAL_KEYS.contains(&key) {
            warnings.push(
                root.error(
                    key,
                    "gitlab-runner setting with no effect in paas-runner: ignored",
                )
                .to_string(),
            );
        } else if JOB_PROGRESS_KEYS.contains(&key) {
            warnings.push(
                root.error(
                    key,
                    "no effect in paas-runner (polling resumes as soon as capacity frees up; \
                     job status checks follow check_interval): ignored",
                )
                .to_string(),
            );
        } else if !GLOBAL_KEYS.contains(&key) {
            warnings.push(root.error(key, "unknown global key: ignored").to_string());
        }
    }
    let log_level = root.string("log_level")?;
    if let Some(level) = &log_level {
        if !LOG_LEVELS.contains(&level.to_lowercase().as_str()) {
            return Err(root.error(
                "log_level",
                format!(
                    "unknown level {level:?}; expected one of {}",
                    LOG_LEVELS.join(", ")
                ),
            ));
        }
    }
    let log_format = root.string("log_format")?;
    if let Some(format) = &log_format {
        if !LOG_FORMATS.contains(&format.as_str()) {
            return Err(root.error(
                "log_format",
                format!(
                    "unknown format {format:?}; expected one of {}",
                    LOG_FORMATS.join(", ")
                ),
            ));
        }
    }

    let quota = parse_quota(&root, &mut warnings)?;
    let concurrent = root.positive_integer("concurrent")?.unwrap_or(50);
    // gitlab-runner writes `check_interval = 0` and reads it as its default.
    let check_interval = root
        .seconds("check_interval", true)?
        .filter(|interval| !interval.is_zero())
        .unwrap_or(DEFAULT_CHECK_INTERVAL);
    let job_progress_poll_interval = match root.one_of(JOB_PROGRESS_KEYS)? {
        Some(key) => root.seconds(key, false)?,
        None => None,
    }
    .unwrap_or(Duration::from_secs(30));
    let decommission_launch_failures = match root.one_of(DECOMMISSION_KEYS)? {
        Some(key) => root.bool(key)?,
        None => None,
    }
    .unwrap_or(true);
    let listen_address = root.string("listen_address")?;
    if listen_address.as_deref() == Some("") {
        return Err(root.error("listen_address", "empty address"));
    }
    if let Some(Err(problem)) = listen_address.as_deref().map(check_listen_address) {
        return Err(root.error(
            "listen_address",
            format!("{problem}: {LISTEN_ADDRESS_HINT}"),
        ));
    }

    let runners = parse_runners(&root, &quota, read_file, &mut warnings)?;
    let store = store::parse_store(&root, read_file)?;
    check_quota_reference(&root, &quota, &runners)?;

    Ok(Config {
        concurrent,
        check_interval,
        job_progress_poll_interval,
        state_file: store.state_file().map(Path::to_path_buf),
        store,
        quota,
        max_concurrent_provisioning: root
            .positive_integer("paas_max_concurrent_provisioning")?
            .unwrap_or(10),
        min_seconds_between_launches: root
            .seconds("paas_min_seconds_between_launches", true)?
            .unwrap_or(Duration::ZERO),
        finished_jobs_keep_resources: root
            .bool("paas_finished_jobs_keep_resources")?
            .unwrap_or(false),
        decommission_launch_failures,
        repoll_same_runner_immediately: root
            .bool("paas_repoll_same_runner_immediately")?
            .unwrap_or(true),
        log_statistics: root.bool("paas_log_statistics")?.unwrap_or(true),
        slow_provisioning_notice: root
            .seconds("paas_slow_provisioning_notice", true)?
            .unwrap_or(DEFAULT_SLOW_PROVISIONING_NOTICE),
        reconcile_interval: root
            .seconds("paas_reconcile_interval", true)?
            .unwrap_or(DEFAULT_RECONCILE_INTERVAL),
        orphan_min_age: root
            .seconds("paas_orphan_min_age", false)?
            .unwrap_or(DEFAULT_ORPHAN_MIN_AGE),
        listen_address,
        log_level,
        log_format,
        runners,
        warnings,
    })
}

fn parse_quota(
    root: &TableReader<'_>,
    warnings: &mut Vec<String>,
) -> Result<QuotaComputation, ConfigError> {
    let Some(quota) = root.table("quota_computation")? else {
        return Err(root.source().error(
            None,
            Some("quota_computation"),
            "missing required section [quota_computation]: it sets the weighted quota \
             as the weight of `reference_jobs_count` jobs of flavor `reference_flavor` \
             of the runner named `reference_runner`",
        ));
    };
    for (key, _) in quota.entries() {
        if !QUOTA_KEYS.contains(&key) {
            warnings.push(quota.error(key, "unknown key: ignored").to_string());
        }
    }
    let reference_runner = quota.required_string("reference_runner")?;
    let reference_flavor = quota.required_string("reference_flavor")?;
    if reference_flavor.is_empty() {
        return Err(quota.error("reference_flavor", "empty flavor name"));
    }
    let reference_jobs_count = quota
        .positive_integer("reference_jobs_count")?
        .ok_or_else(|| quota.missing("reference_jobs_count"))?;
    Ok(QuotaComputation {
        reference_runner,
        reference_flavor,
        reference_jobs_count,
        allowed_fraction_per_runner: quota
            .fraction("allowed_fraction_per_runner")?
            .unwrap_or(1.0),
    })
}

fn parse_runners(
    root: &TableReader<'_>,
    quota: &QuotaComputation,
    read_file: ReadFile<'_>,
    warnings: &mut Vec<String>,
) -> Result<Vec<RunnerConfig>, ConfigError> {
    let source = root.source();
    let no_runner = || {
        source.error(
            None,
            Some("runners"),
            "at least one [[runners]] section is required",
        )
    };
    let Some(item) = root.item("runners") else {
        return Err(no_runner());
    };
    // `[[runners]]` sections, or, rarely, an array of inline tables.
    let tables: Vec<TableReader<'_>> = match item {
        Item::ArrayOfTables(tables) => tables
            .iter()
            .enumerate()
            .map(|(index, table)| {
                TableReader::nested(
                    source,
                    table.span(),
                    table,
                    format!("runners[{index}]"),
                    None,
                )
            })
            .collect(),
        Item::Value(Value::Array(array)) => {
            let mut tables = Vec::new();
            for (index, element) in array.iter().enumerate() {
                let Some(table) = element.as_inline_table() else {
                    return Err(root.error(
                        "runners",
                        "expected [[runners]] sections, got an array that is not of tables",
                    ));
                };
                tables.push(TableReader::nested(
                    source,
                    element.span(),
                    table,
                    format!("runners[{index}]"),
                    root.line_of("runners"),
                ));
            }
            tables
        }
        _ => {
            return Err(root.error(
                "runners",
                format!(
                    "expected [[runners]] sections (with double brackets), got {}",
                    reader::describe(item, false)
                ),
            ))
        }
    };
    if tables.is_empty() {
        return Err(no_runner());
    }

    let mut parsed: Vec<runner::ParsedRunner> = Vec::with_capacity(tables.len());
    for (index, table) in tables.iter().enumerate() {
        let runner = runner::parse_runner(table, read_file, warnings)?;
        if runner.config.quota_max_fraction > quota.allowed_fraction_per_runner {
            let message = format!(
                "{} is above quota_computation.allowed_fraction_per_runner ({}), which applies \
                 instead",
                runner.config.quota_max_fraction, quota.allowed_fraction_per_runner
            );
            warnings.push(table.error("quota_max_fraction", message).to_string());
        }
        for (other_index, other) in parsed.iter().enumerate() {
            if other.config.name == runner.config.name {
                return Err(source.error(
                    runner.name_line,
                    Some(&format!("runners[{index}].name")),
                    format!(
                        "duplicate runner name {:?}, already used by runners[{other_index}] \
                         (line {})",
                        runner.config.name,
                        display_line(other.name_line)
                    ),
                ));
            }
            if other.config.unique_id() == runner.config.unique_id() {
                return Err(source.error(
                    runner.token_line,
                    Some(&format!("runners[{index}].token")),
                    format!(
                        "the first 8 characters of this token are those of the token of \
                         runners[{other_index}] (line {}); they are the runner's unique id \
                         (as in heptapod-paas-runner, which names cloud resources and \
                         state after them), so they must differ",
                        display_line(other.token_line)
                    ),
                ));
            }
        }
        parsed.push(runner);
    }
    Ok(parsed.into_iter().map(|runner| runner.config).collect())
}

fn check_quota_reference(
    root: &TableReader<'_>,
    quota: &QuotaComputation,
    runners: &[RunnerConfig],
) -> Result<(), ConfigError> {
    if runners
        .iter()
        .any(|runner| runner.name == quota.reference_runner)
    {
        return Ok(());
    }
    let names: Vec<String> = runners
        .iter()
        .map(|runner| format!("{:?}", runner.name))
        .collect();
    let quota_table = root.table("quota_computation")?;
    let error = format!(
        "no runner is named {:?}; runner names: {}",
        quota.reference_runner,
        names.join(", ")
    );
    Err(match quota_table {
        Some(table) => table.error("reference_runner", error),
        None => root.error("quota_computation", error),
    })
}
