//! heptapod-paas-runner's command-line options, applied at start and again
//! to every file a reload reads (used by `run` and `reload` alike).

use tracing::{debug, warn};

/// heptapod-paas-runner's options of its command line, accepted so that a
/// unit file written for it starts this service unchanged.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReferenceOptions {
    /// (heptapod-paas-runner, deprecated there) seconds between polls:
    /// overrides `check_interval`.
    #[arg(long, global = true, value_name = "SECONDS")]
    pub poll_interval: Option<u64>,
    /// (heptapod-paas-runner, deprecated there) sets
    /// `job_progress_poll_interval`, which has no effect here.
    #[arg(long, global = true, value_name = "SECONDS")]
    pub job_progress_poll_interval: Option<u64>,
    /// (heptapod-paas-runner) stop, as on SIGTERM, after this many polling
    /// cycles (one cycle per `check_interval`); for tests.
    #[arg(long, global = true, value_name = "N")]
    pub poll_cycles: Option<u64>,
    /// (heptapod-paas-runner) dump the state on SIGUSR1; accepted, the
    /// dump needs no option here.
    #[arg(long, global = true)]
    pub debug_signal: bool,
}

/// Options of [`ReferenceOptions`] that take a value (for the rewriting of
/// heptapod-paas-runner's command lines).
pub const REFERENCE_VALUE_OPTIONS: &[&str] = &[
    "--poll-interval",
    "--job-progress-poll-interval",
    "--poll-cycles",
];

impl ReferenceOptions {
    /// Applies the options to `config`: at start, and to every file a
    /// reload reads (the command line wins over the file each time).
    pub fn apply(&self, config: &mut paas_config::Config) {
        if let Some(seconds) = self.poll_interval.filter(|seconds| *seconds > 0) {
            config.check_interval = std::time::Duration::from_secs(seconds);
        }
        if let Some(seconds) = self.job_progress_poll_interval {
            config.job_progress_poll_interval = std::time::Duration::from_secs(seconds);
        }
    }

    /// A warning for each deprecated option given (as heptapod-paas-runner
    /// does), once at start.
    pub(crate) fn warn_deprecated(&self) {
        if let Some(seconds) = self.poll_interval {
            warn!(
                seconds,
                "--poll-interval is deprecated: use the `check_interval` global key instead"
            );
        }
        if let Some(seconds) = self.job_progress_poll_interval {
            warn!(
                seconds,
                "--job-progress-poll-interval is deprecated, and job_progress_poll_interval has \
                 no effect in paas-runner"
            );
        }
        if self.debug_signal {
            debug!("--debug-signal accepted (heptapod-paas-runner's option)");
        }
    }
}
