//! Failure reasons a runner may report to the coordinator, and their mapping to what a given coordinator accepts.

use std::fmt;

/// A `failure_reason` of `PUT /api/v4/jobs/:id {state: "failed"}`.
///
/// These are the reasons gitlab-runner itself sends (reference §3). The
/// coordinator turns reasons it does not know into `unknown_failure`, and
/// older coordinators know fewer of them: use [`FailureReason::accepted_by`]
/// with the job payload's `features.failure_reasons` before reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The job's own script failed (an ordinary job failure).
    ScriptFailure,
    /// The machinery running the job failed; GitLab suggests a retry.
    RunnerSystemFailure,
    /// The job ran past its timeout.
    JobExecutionTimeout,
    /// The job's image could not be pulled.
    ImagePullFailure,
    /// Nothing more precise is known (also how canceled jobs are reported).
    UnknownFailure,
    /// The job asked for something the runner's configuration forbids,
    /// e.g. a flavor above the allowed maximum.
    RunnerConfigurationError,
    /// A service the runner depends on (e.g. the cloud API) failed.
    RunnerExternalDependencyFailure,
    /// The runner was interrupted while running the job.
    RunnerInterrupted,
}

/// Reasons every coordinator accepts, whatever `features.failure_reasons`
/// says (gitlab-runner's behaviour, reference §3).
const ALWAYS_ACCEPTED: [FailureReason; 3] = [
    FailureReason::ScriptFailure,
    FailureReason::RunnerSystemFailure,
    FailureReason::JobExecutionTimeout,
];

impl FailureReason {
    /// Every reason, in declaration order.
    pub const ALL: [FailureReason; 8] = [
        FailureReason::ScriptFailure,
        FailureReason::RunnerSystemFailure,
        FailureReason::JobExecutionTimeout,
        FailureReason::ImagePullFailure,
        FailureReason::UnknownFailure,
        FailureReason::RunnerConfigurationError,
        FailureReason::RunnerExternalDependencyFailure,
        FailureReason::RunnerInterrupted,
    ];

    /// The wire value.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureReason::ScriptFailure => "script_failure",
            FailureReason::RunnerSystemFailure => "runner_system_failure",
            FailureReason::JobExecutionTimeout => "job_execution_timeout",
            FailureReason::ImagePullFailure => "image_pull_failure",
            FailureReason::UnknownFailure => "unknown_failure",
            FailureReason::RunnerConfigurationError => "runner_configuration_error",
            FailureReason::RunnerExternalDependencyFailure => "runner_external_dependency_failure",
            FailureReason::RunnerInterrupted => "runner_interrupted",
        }
    }

    /// The reason from its wire value.
    pub fn from_wire(value: &str) -> Option<FailureReason> {
        FailureReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == value)
    }

    /// The reason to actually send to a coordinator whose job payload listed
    /// `accepted` as `features.failure_reasons` (`None` when absent).
    ///
    /// As gitlab-runner does (reference §3): a reason listed, or one of the
    /// three always accepted, is kept; otherwise `image_pull_failure` and
    /// `runner_external_dependency_failure` become `runner_system_failure`,
    /// `runner_configuration_error` becomes `script_failure`, and anything
    /// else `unknown_failure`.
    pub fn accepted_by(self, accepted: Option<&[String]>) -> FailureReason {
        let listed = accepted
            .unwrap_or_default()
            .iter()
            .any(|value| value == self.as_str());
        if listed || ALWAYS_ACCEPTED.contains(&self) {
            return self;
        }
        match self {
            FailureReason::ImagePullFailure | FailureReason::RunnerExternalDependencyFailure => {
                FailureReason::RunnerSystemFailure
            }
            FailureReason::RunnerConfigurationError => FailureReason::ScriptFailure,
            _ => FailureReason::UnknownFailure,
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::FailureReason::{self, *};

    fn check(reason: FailureReason, accepted: Option<&[&str]>, expected: FailureReason) {
        let accepted: Option<Vec<String>> =
            accepted.map(|list| list.iter().map(|value| value.to_string()).collect());
        assert_eq!(
            reason.accepted_by(accepted.as_deref()),
            expected,
            "{reason} with {accepted:?}"
        );
    }

    #[test]
    fn wire_values_round_trip() {
        for reason in FailureReason::ALL {
            assert_eq!(FailureReason::from_wire(reason.as_str()), Some(reason));
            assert_eq!(reason.to_string(), reason.as_str());
        }
        assert_eq!(FailureReason::from_wire("job_canceled"), None);
    }

    #[test]
    fn always_accepted_reasons_are_kept() {
        for reason in [ScriptFailure, RunnerSystemFailure, JobExecutionTimeout] {
            check(reason, None, reason);
            check(reason, Some(&[]), reason);
        }
    }

    #[test]
    fn listed_reasons_are_kept() {
        let all: Vec<&str> = FailureReason::ALL.iter().map(|r| r.as_str()).collect();
        for reason in FailureReason::ALL {
            check(reason, Some(&all), reason);
        }
    }

    #[test]
    fn unlisted_reasons_map_down_like_gitlab_runner() {
        let old = Some(&["script_failure", "unknown_failure"][..]);
        check(ImagePullFailure, old, RunnerSystemFailure);
        check(RunnerExternalDependencyFailure, old, RunnerSystemFailure);
        check(RunnerConfigurationError, old, ScriptFailure);
        check(RunnerInterrupted, old, UnknownFailure);
        check(RunnerConfigurationError, None, ScriptFailure);
        check(UnknownFailure, None, UnknownFailure);
    }
}
