//! One `[[runners]]` entry: its coordinator, its Clever Cloud settings and the inner runner's config.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use paas_core::Secret;
use toml_edit::{Item, TableLike, Value};

use crate::reader::{Source, TableReader};
use crate::secrets::{ReadFile, Secrets};
use crate::ConfigError;

/// The executor this program implements.
pub const SUPPORTED_EXECUTOR: &str = "clever-docker";

/// Which cloud runs a runner's jobs (its `executor` key). Adding a cloud
/// adds one variant here (with its spelling in [`Executor::ALL`]) and one
/// provider crate, chosen where the binary builds its providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executor {
    /// `clever-docker`: one Clever Cloud application per job.
    CleverDocker,
}

impl Executor {
    /// Every executor with its spelling in the file.
    pub const ALL: &'static [(&'static str, Executor)] =
        &[(SUPPORTED_EXECUTOR, Executor::CleverDocker)];

    /// The executor spelled `name` in the file.
    pub fn from_name(name: &str) -> Option<Executor> {
        Executor::ALL
            .iter()
            .find(|(spelling, _)| *spelling == name)
            .map(|(_, executor)| *executor)
    }

    /// Its spelling in the file.
    pub fn name(self) -> &'static str {
        match self {
            Executor::CleverDocker => SUPPORTED_EXECUTOR,
        }
    }

    /// The supported spellings, for messages (`` `clever-docker` ``).
    fn supported() -> String {
        Executor::ALL
            .iter()
            .map(|(spelling, _)| format!("`{spelling}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq<&str> for Executor {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

/// The executor the inner runner on the job VM uses.
pub const INNER_EXECUTOR: &str = "docker";

/// Image of the Heptapod Runner run on the job VM (reference default).
pub const DEFAULT_HEPTAPOD_RUNNER_MAIN_IMAGE: &str =
    "registry.heptapod.net:443/heptapod/heptapod-runner/runner:0.7.0";

/// Clever Cloud API base URL (reference default).
pub const DEFAULT_CC_API_URL: &str = "https://api.clever-cloud.com/v2";

/// Clever Cloud instance variant of Heptapod Runner (reference default).
pub const DEFAULT_CC_INSTANCE_VARIANT_UUID: &str = "70d676a0-a775-4dc9-a43d-3121036e8515";

/// One `[[runners]]` entry.
#[derive(Clone, PartialEq)]
pub struct RunnerConfig {
    /// `name`: the human-readable name, unique in the file.
    pub name: String,
    /// `url`: the coordinator's base URL, without trailing slash.
    pub url: String,
    /// `token`: the runner authentication token, resolved from the secrets
    /// file if written `secret:NAME`.
    pub token: Secret,
    /// `executor`: which cloud runs the jobs.
    pub executor: Executor,
    /// `quota_max_fraction`: the largest part of the weighted quota this
    /// runner may use, in (0, 1]. The global
    /// `quota_computation.allowed_fraction_per_runner` caps it.
    pub quota_max_fraction: f64,
    /// The `cc_*` keys.
    pub cc: CleverSettings,
    /// `heptapod_runner_main_image`: base image of the build context pushed
    /// to the job VM.
    pub heptapod_runner_main_image: String,
    /// `heptapod_paas_runner_helper_image`, if set.
    pub paas_helper_image: Option<String>,
    /// `[runners.paas_job_trace_watch]` (or `[runners.job_trace_watch]`).
    pub trace_watch: TraceWatch,
    /// `limit` (as gitlab-runner): the most jobs of this runner at once;
    /// `None` when absent or 0 (no limit of its own).
    pub limit: Option<usize>,
    /// `tls-ca-file` (as gitlab-runner): a PEM bundle of certificate
    /// authorities trusted for the coordinator, besides the public ones.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// The `[[runners]]` entry for the inner runner on the job VM: this
    /// entry without the keys of this program (`cc_*`, `paas_*`, trace
    /// watch, secrets file…), with `executor = "docker"`, a placeholder
    /// `token` ([`crate::placeholder_token`]: never the runner token), and
    /// `secret:NAME` values of other keys resolved.
    ///
    /// It may hold other secrets (S3 cache keys): `Debug` only shows its
    /// keys.
    pub inner_config: toml::Table,
    /// The 1-based line of this entry's `[[runners]]` header.
    pub line: usize,
}

/// The Clever Cloud settings of a runner (its `cc_*` keys).
#[derive(Debug, Clone, PartialEq)]
pub struct CleverSettings {
    /// `cc_api_url`, without trailing slash.
    pub api_url: String,
    /// `cc_zone`.
    pub zone: String,
    /// `cc_default_flavor`: flavor of jobs that do not ask for one.
    pub default_flavor: String,
    /// `cc_max_flavor`: largest flavor a job may ask for.
    pub max_flavor: Option<String>,
    /// `cc_orga_id`: the organization owning (and paying for) the VMs.
    pub orga_id: String,
    /// The credentials (`cc_token`, `cc_oauth_*` or `cc_api_token`; see
    /// `clever_auth.rs`). With an API token, `api_url` is the bridge's.
    pub auth: crate::CleverAuth,
    /// `[runners.cc_extra_env]`: environment of every job VM, values
    /// stringified.
    pub extra_env: BTreeMap<String, String>,
    /// `cc_flavor_context`: context of the flavors query.
    pub flavor_context: String,
    /// `cc_flavor_name_prefix`: prefix removed from flavor names
    /// (default: the context and a dash).
    pub flavor_name_prefix: String,
    /// `cc_instance_variant_uuid`.
    pub instance_variant_uuid: String,
    /// `cc_auth_user`: user name for the deployment git repository.
    pub auth_user: String,
    /// `cc_deployment_repo_timeout`: how long to wait for the deployment
    /// repository to be ready.
    pub deployment_repo_timeout: Duration,
    /// `cc_deployment_repo_wait_step`: time between readiness checks.
    pub deployment_repo_wait_step: Duration,
    /// `cc_tls_ca_file` (ours): a PEM bundle of certificate authorities
    /// trusted for `cc_api_url` and the deployment repositories, besides the
    /// public ones.
    pub tls_ca_file: Option<std::path::PathBuf>,
}

/// Watching the job log on the coordinator to confirm a launch.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceWatch {
    /// `token`: a coordinator token able to read job logs (admin, `read_api`).
    pub token: Option<Secret>,
    /// `timeout_seconds` (the reference README spells it `timout_seconds`):
    /// after this, a launch not visible in the job log has failed.
    pub timeout: Duration,
    /// `poll_step`: time between two reads of the job log.
    pub poll_step: Duration,
}

impl Default for TraceWatch {
    fn default() -> Self {
        TraceWatch {
            token: None,
            timeout: Duration::from_secs(300),
            poll_step: Duration::from_secs(10),
        }
    }
}

/// What the core needs of a runner's executor settings, whichever
/// executor it is, with the keys they come from (for messages).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MachineSettings<'a> {
    /// The flavor of jobs that ask for none, and its key.
    pub default_flavor: &'a str,
    pub default_flavor_key: &'static str,
    /// The largest flavor a job may ask for, and its key.
    pub max_flavor: Option<&'a str>,
    pub max_flavor_key: &'static str,
    /// Where the machines run (for messages to users).
    pub zone: &'a str,
    /// How long a new machine may take to be ready for its job, and how
    /// often it is checked meanwhile (the deployment's cancellation watch
    /// follows it).
    pub ready_timeout: Duration,
    pub ready_step: Duration,
}

impl RunnerConfig {
    /// The executor's settings the core uses ([`MachineSettings`]).
    pub fn machine_settings(&self) -> MachineSettings<'_> {
        match self.executor {
            Executor::CleverDocker => MachineSettings {
                default_flavor: &self.cc.default_flavor,
                default_flavor_key: "cc_default_flavor",
                max_flavor: self.cc.max_flavor.as_deref(),
                max_flavor_key: "cc_max_flavor",
                zone: &self.cc.zone,
                ready_timeout: self.cc.deployment_repo_timeout,
                ready_step: self.cc.deployment_repo_wait_step,
            },
        }
    }

    /// The runner's unique id: the first 8 characters of its token, as
    /// GitLab and heptapod-paas-runner use (in cloud application names and
    /// the state). Unique in a loaded configuration.
    pub fn unique_id(&self) -> String {
        token_prefix(&self.token)
    }
}

impl fmt::Debug for RunnerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner_keys: Vec<&String> = self.inner_config.keys().collect();
        f.debug_struct("RunnerConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("token", &self.token)
            .field("executor", &self.executor)
            .field("quota_max_fraction", &self.quota_max_fraction)
            .field("cc", &self.cc)
            .field(
                "heptapod_runner_main_image",
                &self.heptapod_runner_main_image,
            )
            .field("paas_helper_image", &self.paas_helper_image)
            .field("trace_watch", &self.trace_watch)
            .field("inner_config (keys)", &inner_keys)
            .field("line", &self.line)
            .finish()
    }
}

/// The first 8 characters of a token: the runner's unique id.
pub(crate) fn token_prefix(token: &Secret) -> String {
    token.expose().chars().take(8).collect()
}

/// A parsed runner and where its identifying keys are, for cross-checks.
pub(crate) struct ParsedRunner {
    pub(crate) config: RunnerConfig,
    pub(crate) name_line: Option<usize>,
    pub(crate) token_line: Option<usize>,
}

/// Executors of heptapod-paas-runner that this program does not implement.
const REFERENCE_ONLY_EXECUTORS: &[&str] = &["clever-service-docker", "local-docker"];

/// `cc_*` keys read by this program.
const CC_KEYS: &[&str] = &[
    "cc_api_url",
    "cc_zone",
    "cc_default_flavor",
    "cc_max_flavor",
    "cc_orga_id",
    "cc_token",
    "cc_extra_env",
    "cc_flavor_context",
    "cc_flavor_name_prefix",
    "cc_instance_variant_uuid",
    "cc_auth_user",
    "cc_deployment_repo_timeout",
    "cc_deployment_repo_wait_step",
    "cc_multi_tenant",
    "cc_tls_ca_file",
];

/// `cc_*` keys of the reference's multi-tenant mode.
const CC_MULTI_TENANT_KEYS: &[&str] = &[
    "cc_gitlab_namespace_attributes_token",
    "cc_orga_id_attribute",
    "cc_orga_token_attribute",
];

const TRACE_WATCH_KEYS: &[&str] = &["paas_job_trace_watch", "job_trace_watch"];
const TIMEOUT_KEYS: &[&str] = &["timeout_seconds", "timout_seconds"];

/// Keys of a runner entry that are for this program, not the inner runner.
fn is_forwarded(key: &str) -> bool {
    const NOT_FORWARDED: &[&str] = &[
        "heptapod_runner_main_image",
        "heptapod_paas_runner_helper_image",
        "job_trace_watch",
        "quota_max_fraction",
        "secrets_file",
        // A file of this machine, not of the job's.
        "tls-ca-file",
        // Replaced by the resolved token and the inner executor.
        "token",
        "executor",
    ];
    !(key.starts_with("cc_") || key.starts_with("paas_") || NOT_FORWARDED.contains(&key))
}

/// Reads the `[[runners]]` entry `table`.
pub(crate) fn parse_runner(
    table: &TableReader<'_>,
    read_file: ReadFile<'_>,
    warnings: &mut Vec<String>,
) -> Result<ParsedRunner, ConfigError> {
    let executor = table.required_string("executor")?;
    let executor = check_executor(table, &executor)?;
    let secrets = Secrets::load(table, "secrets_file", read_file)?;

    let name = table.required_string("name")?;
    let url = http_url(table, "url", table.required_string("url")?)?;
    let token = required_secret(table, &secrets, "token")?;
    crate::checks::check_token(table, "token", "runner token", &token)?;
    let quota_max_fraction = table.fraction("quota_max_fraction")?.unwrap_or(1.0);
    let cc = parse_clever_settings(table, &secrets)?;
    let heptapod_runner_main_image = table
        .string("heptapod_runner_main_image")?
        .unwrap_or_else(|| DEFAULT_HEPTAPOD_RUNNER_MAIN_IMAGE.to_owned());
    crate::checks::check_image(
        table,
        "heptapod_runner_main_image",
        &heptapod_runner_main_image,
    )?;
    let paas_helper_image = table.string("heptapod_paas_runner_helper_image")?;
    let trace_watch = parse_trace_watch(table, &secrets, warnings)?;
    let limit = match table.item("limit") {
        None => None,
        Some(item) if item.as_integer() == Some(0) => None,
        Some(_) => table.positive_integer("limit").map_err(|_| {
            table.error(
                "limit",
                "expected the most jobs of this runner at once (0 or absent: no limit of its own)",
            )
        })?,
    };
    let tls_ca_file = table
        .string("tls-ca-file")?
        .filter(|path| !path.is_empty())
        .map(std::path::PathBuf::from);

    for (key, _) in table.entries() {
        let message = if key.starts_with("cc_") && CC_MULTI_TENANT_KEYS.contains(&key) {
            "only used in the multi-tenant mode, which paas-runner does not support: ignored"
        } else if key.starts_with("cc_")
            && !CC_KEYS.contains(&key)
            && !crate::clever_auth::KEYS.contains(&key)
        {
            "unknown Clever Cloud setting: ignored"
        } else if key.starts_with("paas_") && !TRACE_WATCH_KEYS.contains(&key) {
            "not used by paas-runner: ignored"
        } else {
            continue;
        };
        warnings.push(table.error(key, message).to_string());
    }

    let inner_config = inner_config(table, &secrets, &token)?;
    Ok(ParsedRunner {
        name_line: table.line_of("name"),
        token_line: table.line_of("token"),
        config: RunnerConfig {
            name,
            url,
            token,
            executor,
            quota_max_fraction,
            cc,
            heptapod_runner_main_image,
            paas_helper_image,
            trace_watch,
            limit,
            tls_ca_file,
            inner_config,
            line: table.line().unwrap_or(1),
        },
    })
}

fn check_executor(table: &TableReader<'_>, executor: &str) -> Result<Executor, ConfigError> {
    if let Some(executor) = Executor::from_name(executor) {
        return Ok(executor);
    }
    let supported = Executor::supported();
    let message = if REFERENCE_ONLY_EXECUTORS.contains(&executor) {
        format!(
            "executor `{executor}` of heptapod-paas-runner is not supported by paas-runner; \
             supported executors: {supported}"
        )
    } else {
        format!("unknown executor {executor:?}; supported executors: {supported}")
    };
    Err(table.error("executor", message))
}

/// `url`, checked to be an absolute http(s) URL, without trailing slash.
fn http_url(table: &TableReader<'_>, key: &str, url: String) -> Result<String, ConfigError> {
    let trimmed = url.trim_end_matches('/');
    // The URL is not shown: it could hold credentials.
    match url::Url::parse(trimmed) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {
            Ok(trimmed.to_owned())
        }
        Ok(parsed) => Err(table.error(
            key,
            format!(
                "expected an http or https URL, got scheme `{}`",
                parsed.scheme()
            ),
        )),
        Err(error) => Err(table.error(key, format!("expected an http or https URL ({error})"))),
    }
}

/// A secret-capable string value, resolved; `None` if absent.
fn secret(
    table: &TableReader<'_>,
    secrets: &Secrets,
    key: &str,
) -> Result<Option<Secret>, ConfigError> {
    let Some(value) = table.secret_string(key)? else {
        return Ok(None);
    };
    let value = secrets.resolve(value, table, key)?;
    if value.is_empty() {
        return Err(table.error(key, "empty token"));
    }
    Ok(Some(Secret::new(value)))
}

fn required_secret(
    table: &TableReader<'_>,
    secrets: &Secrets,
    key: &str,
) -> Result<Secret, ConfigError> {
    secret(table, secrets, key)?.ok_or_else(|| table.missing(key))
}

fn parse_clever_settings(
    table: &TableReader<'_>,
    secrets: &Secrets,
) -> Result<CleverSettings, ConfigError> {
    if table.bool("cc_multi_tenant")? == Some(true) {
        return Err(table.error(
            "cc_multi_tenant",
            "the multi-tenant mode of heptapod-paas-runner is not supported yet; \
             remove `cc_multi_tenant` and set `cc_orga_id` and `cc_token` \
             for a single Clever Cloud organization",
        ));
    }
    let api_url = match table.string("cc_api_url")? {
        Some(url) => Some(http_url(table, "cc_api_url", url)?),
        None => None,
    };
    let orga_id = table.required_string("cc_orga_id")?;
    if orga_id.is_empty() {
        return Err(table.error("cc_orga_id", "empty organization id"));
    }
    crate::checks::check_orga_id(table, "cc_orga_id", &orga_id)?;
    let (auth, api_url) =
        crate::clever_auth::parse(table, secrets, api_url, DEFAULT_CC_API_URL, |key, url| {
            http_url(table, key, url)
        })?;
    let extra_env = match table.table("cc_extra_env")? {
        Some(env_table) => {
            let extra_env = parse_extra_env(&env_table)?;
            crate::checks::check_extra_env(table, "cc_extra_env", &extra_env)?;
            extra_env
        }
        None => BTreeMap::new(),
    };
    let flavor_context = string_or(table, "cc_flavor_context", "heptapod-runner")?;
    let flavor_name_prefix = string_or(
        table,
        "cc_flavor_name_prefix",
        &format!("{flavor_context}-"),
    )?;
    Ok(CleverSettings {
        api_url,
        zone: string_or(table, "cc_zone", "par")?,
        default_flavor: string_or(table, "cc_default_flavor", "M")?,
        max_flavor: table.string("cc_max_flavor")?,
        orga_id,
        auth,
        extra_env,
        flavor_context,
        flavor_name_prefix,
        instance_variant_uuid: string_or(
            table,
            "cc_instance_variant_uuid",
            DEFAULT_CC_INSTANCE_VARIANT_UUID,
        )?,
        auth_user: string_or(table, "cc_auth_user", "Jenkins")?,
        deployment_repo_timeout: table
            .seconds("cc_deployment_repo_timeout", false)?
            .unwrap_or(Duration::from_secs(20)),
        deployment_repo_wait_step: table
            .seconds("cc_deployment_repo_wait_step", false)?
            .unwrap_or(Duration::from_secs(2)),
        tls_ca_file: table
            .string("cc_tls_ca_file")?
            .filter(|path| !path.is_empty())
            .map(std::path::PathBuf::from),
    })
}

fn string_or(table: &TableReader<'_>, key: &str, default: &str) -> Result<String, ConfigError> {
    Ok(table.string(key)?.unwrap_or_else(|| default.to_owned()))
}

/// `[runners.cc_extra_env]`: strings, integers and booleans, as strings.
fn parse_extra_env(env_table: &TableReader<'_>) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut extra_env = BTreeMap::new();
    for (name, item) in env_table.entries() {
        let value = match item.as_value() {
            Some(Value::String(text)) => text.value().clone(),
            Some(Value::Integer(number)) => number.value().to_string(),
            Some(Value::Boolean(flag)) => flag.value().to_string(),
            _ => {
                return Err(env_table.error(
                    name,
                    format!(
                        "expected a string, an integer or a boolean, got {}",
                        crate::reader::describe(item, false)
                    ),
                ))
            }
        };
        if name.is_empty() {
            return Err(env_table.error(name, "empty environment variable name"));
        }
        extra_env.insert(name.to_owned(), value);
    }
    Ok(extra_env)
}

fn parse_trace_watch(
    table: &TableReader<'_>,
    secrets: &Secrets,
    warnings: &mut Vec<String>,
) -> Result<TraceWatch, ConfigError> {
    let defaults = TraceWatch::default();
    let Some(section_key) = table.one_of(TRACE_WATCH_KEYS)? else {
        return Ok(defaults);
    };
    let Some(watch) = table.table(section_key)? else {
        return Ok(defaults);
    };
    let timeout = match watch.one_of(TIMEOUT_KEYS)? {
        Some(key) => watch.seconds(key, false)?,
        None => None,
    };
    for (key, _) in watch.entries() {
        if !["token", "poll_step"].contains(&key) && !TIMEOUT_KEYS.contains(&key) {
            warnings.push(watch.error(key, "unknown key: ignored").to_string());
        }
    }
    let token = secret(&watch, secrets, "token")?;
    if let Some(token) = &token {
        crate::checks::check_token(&watch, "token", "job log watch token", token)?;
    }
    Ok(TraceWatch {
        token,
        timeout: timeout.unwrap_or(defaults.timeout),
        poll_step: watch
            .seconds("poll_step", false)?
            .unwrap_or(defaults.poll_step),
    })
}

/// The inner runner's `[[runners]]` entry (see [`RunnerConfig::inner_config`]).
fn inner_config(
    table: &TableReader<'_>,
    secrets: &Secrets,
    token: &Secret,
) -> Result<toml::Table, ConfigError> {
    let converter = Converter {
        source: table.source(),
        secrets,
    };
    let mut inner = toml::Table::new();
    for (key, item) in table.entries() {
        if !is_forwarded(key) {
            continue;
        }
        if let Some(value) = converter.item(item, &table.key_path(key))? {
            inner.insert(key.to_owned(), value);
        }
    }
    inner.insert(
        "executor".to_owned(),
        toml::Value::String(INNER_EXECUTOR.to_owned()),
    );
    // The inner runner talks to the coordinator with the job's token only;
    // the runner token would let a job that reads the machine's files take
    // other projects' jobs, so it gets a placeholder that keeps the short
    // token (`placeholder.rs`).
    inner.insert(
        "token".to_owned(),
        toml::Value::String(crate::placeholder_token(token.expose())),
    );
    Ok(inner)
}

/// Turns forwarded `toml_edit` items into `toml` values, resolving
/// `secret:NAME` strings that are the value of a key (not array elements).
struct Converter<'s> {
    source: &'s Source<'s>,
    secrets: &'s Secrets,
}

impl Converter<'_> {
    fn item(&self, item: &Item, path: &str) -> Result<Option<toml::Value>, ConfigError> {
        Ok(match item {
            Item::None => None,
            Item::Value(value) => Some(self.value(value, path, true)?),
            Item::Table(table) => Some(toml::Value::Table(self.table(table, path)?)),
            Item::ArrayOfTables(tables) => Some(toml::Value::Array(
                tables
                    .iter()
                    .enumerate()
                    .map(|(index, table)| {
                        self.table(table, &format!("{path}[{index}]"))
                            .map(toml::Value::Table)
                    })
                    .collect::<Result<_, _>>()?,
            )),
        })
    }

    fn table(&self, table: &dyn TableLike, path: &str) -> Result<toml::Table, ConfigError> {
        let mut converted = toml::Table::new();
        for (key, item) in table.iter() {
            if let Some(value) = self.item(item, &format!("{path}.{key}"))? {
                converted.insert(key.to_owned(), value);
            }
        }
        Ok(converted)
    }

    fn value(
        &self,
        value: &Value,
        path: &str,
        resolve_secret: bool,
    ) -> Result<toml::Value, ConfigError> {
        Ok(match value {
            Value::String(text) if resolve_secret => {
                let line = value.span().map(|span| self.source.line_of(span.start));
                let resolved = self.secrets.resolve_at(text.value().clone(), |message| {
                    self.source.error(line, Some(path), message)
                })?;
                toml::Value::String(resolved)
            }
            Value::String(text) => toml::Value::String(text.value().clone()),
            Value::Integer(number) => toml::Value::Integer(*number.value()),
            Value::Float(number) => toml::Value::Float(*number.value()),
            Value::Boolean(flag) => toml::Value::Boolean(*flag.value()),
            Value::Datetime(datetime) => toml::Value::Datetime(*datetime.value()),
            Value::Array(array) => toml::Value::Array(
                array
                    .iter()
                    .enumerate()
                    .map(|(index, element)| self.value(element, &format!("{path}[{index}]"), false))
                    .collect::<Result<_, _>>()?,
            ),
            Value::InlineTable(table) => toml::Value::Table(self.table(table, path)?),
        })
    }
}

#[cfg(test)]
mod executor_tests {
    use super::Executor;

    #[test]
    fn executors_are_read_by_their_spelling() {
        assert_eq!(
            Executor::from_name("clever-docker"),
            Some(Executor::CleverDocker)
        );
        assert_eq!(Executor::from_name("docker"), None);
        assert_eq!(Executor::from_name("local-docker"), None);
        for (spelling, executor) in Executor::ALL {
            assert_eq!(executor.name(), *spelling);
            assert_eq!(Executor::from_name(spelling), Some(*executor));
        }
        assert_eq!(Executor::supported(), "`clever-docker`");
    }
}
