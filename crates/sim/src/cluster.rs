//! Both simulators started together on loopback, with the configuration file
//! a heptapod-paas-runner compatible runner needs to use them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clever::{AuthKinds, CleverConfig, CleverFaults, CleverSim};
use crate::coordinator::{CoordinatorConfig, CoordinatorFaults, CoordinatorSim};

/// How the simulated world behaves.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Number of `[[runners]]` (distinct runner tokens).
    pub runners: usize,
    pub long_poll: Duration,
    pub repo_ready_delay: Duration,
    pub boot_delay: Duration,
    pub require_git_credentials: bool,
    pub coordinator_faults: CoordinatorFaults,
    pub clever_faults: CleverFaults,
    /// Two-phase commit window of the coordinator.
    pub ack_window: Duration,
    pub seed: u64,
    /// The kinds of Clever Cloud credentials the simulator accepts.
    pub clever_auth_kinds: AuthKinds,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            runners: 1,
            long_poll: Duration::from_secs(2),
            repo_ready_delay: Duration::from_millis(100),
            boot_delay: Duration::from_millis(200),
            require_git_credentials: true,
            coordinator_faults: CoordinatorFaults::default(),
            clever_faults: CleverFaults::default(),
            ack_window: Duration::from_secs(120),
            seed: 0,
            clever_auth_kinds: AuthKinds::ALL,
        }
    }
}

/// What a generated runner configuration looks like.
#[derive(Debug, Clone)]
pub struct ConfigOptions {
    pub state_file: PathBuf,
    pub concurrent: usize,
    pub check_interval_secs: f64,
    pub reference_flavor: String,
    pub reference_jobs_count: u32,
    pub allowed_fraction_per_runner: f64,
    pub default_flavor: String,
    pub max_flavor: Option<String>,
    pub max_provisioning: usize,
    /// Give `[runners.paas_job_trace_watch]` the admin token (its timeout
    /// and poll step are written either way).
    pub trace_watch: bool,
    pub watch_timeout_secs: f64,
    pub watch_poll_step_secs: f64,
    /// Extra global lines (TOML) appended before the runners.
    pub extra_global: String,
    /// The kind of Clever Cloud credentials the runners are given.
    pub clever_credentials: CredentialKind,
}

/// A kind of Clever Cloud credentials in a generated configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CredentialKind {
    /// `cc_token` (and `cc_api_url`).
    #[default]
    Token,
    /// The four `cc_oauth_*` keys (and `cc_api_url`).
    OAuth1,
    /// `cc_api_token` and `cc_api_bridge_url`.
    ApiToken,
}

impl ConfigOptions {
    pub fn new(state_file: impl Into<PathBuf>) -> ConfigOptions {
        ConfigOptions {
            state_file: state_file.into(),
            concurrent: 1000,
            check_interval_secs: 0.5,
            reference_flavor: "M".into(),
            reference_jobs_count: 32,
            allowed_fraction_per_runner: 1.0,
            default_flavor: "S".into(),
            max_flavor: Some("2XL".into()),
            max_provisioning: 50,
            trace_watch: true,
            watch_timeout_secs: 30.0,
            watch_poll_step_secs: 0.2,
            extra_global: String::new(),
            clever_credentials: CredentialKind::Token,
        }
    }
}

/// The two simulators.
pub struct SimCluster {
    pub coordinator: CoordinatorSim,
    pub clever: CleverSim,
    pub runner_tokens: Vec<String>,
    pub admin_token: String,
    /// The coordinator's legacy registration token.
    pub registration_token: String,
    _git_root: tempfile::TempDir,
}

impl SimCluster {
    /// Starts both simulators on `127.0.0.1` ports chosen by the system.
    pub async fn start(settings: &ClusterSettings) -> std::io::Result<SimCluster> {
        let runner_tokens: Vec<String> = (0..settings.runners.max(1))
            .map(|idx| {
                format!(
                    "glrt-{idx:03}sim{:016x}",
                    settings.seed.wrapping_mul(31).wrapping_add(idx as u64)
                )
            })
            .collect();
        let admin_token = format!("glpat-simadmin{:012x}", settings.seed);
        let registration_token = format!("GR1348941sim{:012x}", settings.seed);
        let coordinator = CoordinatorSim::start(
            tokio::net::TcpListener::bind("127.0.0.1:0").await?,
            CoordinatorConfig {
                runner_tokens: runner_tokens.clone(),
                admin_token: admin_token.clone(),
                long_poll: settings.long_poll,
                faults: settings.coordinator_faults.clone(),
                seed: settings.seed,
                ack_window: settings.ack_window,
                registration_token: Some(registration_token.clone()),
                ..CoordinatorConfig::default()
            },
        )
        .await?;
        let git_root = tempfile::Builder::new().prefix("paas-sim-git-").tempdir()?;
        let mut clever_config = CleverConfig::new(git_root.path().to_path_buf());
        clever_config.require_git_credentials = settings.require_git_credentials;
        clever_config.git_user = Some("Jenkins".into());
        clever_config.repo_ready_delay = settings.repo_ready_delay;
        clever_config.boot_delay = settings.boot_delay;
        clever_config.faults = settings.clever_faults.clone();
        clever_config.seed = settings.seed;
        clever_config.auth_kinds = settings.clever_auth_kinds;
        let clever = CleverSim::start(
            tokio::net::TcpListener::bind("127.0.0.1:0").await?,
            clever_config,
        )
        .await?;
        Ok(SimCluster {
            coordinator,
            clever,
            runner_tokens,
            admin_token,
            registration_token,
            _git_root: git_root,
        })
    }

    pub fn git_root(&self) -> &Path {
        self._git_root.path()
    }

    /// A heptapod-paas-runner configuration file pointing at the simulators.
    pub fn config_toml(&self, options: &ConfigOptions) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "concurrent = {}", options.concurrent);
        let _ = writeln!(text, "check_interval = {}", options.check_interval_secs);
        let _ = writeln!(
            text,
            "state_file = {:?}",
            options.state_file.display().to_string()
        );
        let _ = writeln!(
            text,
            "paas_max_concurrent_provisioning = {}",
            options.max_provisioning
        );
        text.push_str(&options.extra_global);
        let _ = writeln!(text, "\n[quota_computation]");
        let _ = writeln!(text, "  reference_runner = \"sim-runner-0\"");
        let _ = writeln!(text, "  reference_flavor = {:?}", options.reference_flavor);
        let _ = writeln!(
            text,
            "  reference_jobs_count = {}",
            options.reference_jobs_count
        );
        let _ = writeln!(
            text,
            "  allowed_fraction_per_runner = {}",
            options.allowed_fraction_per_runner
        );
        let clever = self.clever.config();
        for (idx, token) in self.runner_tokens.iter().enumerate() {
            let _ = writeln!(text, "\n[[runners]]");
            let _ = writeln!(text, "  name = \"sim-runner-{idx}\"");
            let _ = writeln!(text, "  url = {:?}", self.coordinator.url());
            let _ = writeln!(text, "  token = {token:?}");
            let _ = writeln!(text, "  executor = \"clever-docker\"");
            let _ = writeln!(text, "  cc_orga_id = {:?}", clever.orga_id);
            let api_url = self.clever.api_url();
            match options.clever_credentials {
                CredentialKind::Token => {
                    let _ = writeln!(text, "  cc_api_url = {api_url:?}");
                    let _ = writeln!(text, "  cc_token = {:?}", clever.token);
                }
                CredentialKind::OAuth1 => {
                    let _ = writeln!(text, "  cc_api_url = {api_url:?}");
                    let _ = writeln!(
                        text,
                        "  cc_oauth_consumer_key = {:?}\n  cc_oauth_consumer_secret = {:?}\n  \
                         cc_oauth_token = {:?}\n  cc_oauth_secret = {:?}",
                        clever.oauth_consumer_key,
                        clever.oauth_consumer_secret,
                        clever.oauth_token,
                        clever.oauth_secret
                    );
                }
                CredentialKind::ApiToken => {
                    let _ = writeln!(text, "  cc_api_bridge_url = {api_url:?}");
                    let _ = writeln!(text, "  cc_api_token = {:?}", clever.api_token);
                }
            }
            let _ = writeln!(text, "  cc_default_flavor = {:?}", options.default_flavor);
            if let Some(max) = &options.max_flavor {
                let _ = writeln!(text, "  cc_max_flavor = {max:?}");
            }
            let _ = writeln!(text, "  cc_deployment_repo_timeout = 10");
            let _ = writeln!(text, "  cc_deployment_repo_wait_step = 0.05");
            let _ = writeln!(text, "  [runners.cc_extra_env]");
            let _ = writeln!(text, "    CC_ENABLE_HEPTAPOD_RUNNER = \"true\"");
            let _ = writeln!(text, "  [runners.paas_job_trace_watch]");
            if options.trace_watch {
                let _ = writeln!(text, "    token = {:?}", self.admin_token);
            }
            let _ = writeln!(text, "    timeout_seconds = {}", options.watch_timeout_secs);
            let _ = writeln!(text, "    poll_step = {}", options.watch_poll_step_secs);
            let _ = writeln!(text, "  [runners.cache]");
            let _ = writeln!(text, "    Type = \"s3\"");
            let _ = writeln!(text, "    Shared = true");
            let _ = writeln!(text, "    [runners.cache.s3]");
            let _ = writeln!(
                text,
                "      ServerAddress = \"cellar-c2.services.clever-cloud.com\""
            );
            let _ = writeln!(text, "      AccessKey = \"sim-access-key\"");
            let _ = writeln!(text, "      SecretKey = \"sim-secret-key\"");
            let _ = writeln!(text, "      BucketName = \"sim-ci-cache\"");
            let _ = writeln!(text, "  [runners.docker]");
            let _ = writeln!(text, "    image = \"debian:bookworm\"");
            let _ = writeln!(text, "    privileged = false");
            let _ = writeln!(text, "    volumes = [\"/cache\"]");
        }
        text
    }
}
