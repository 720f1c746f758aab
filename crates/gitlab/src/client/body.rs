//! The JSON bodies the client sends: the job request (with the runner's
//! `info` and [`ADVERTISED_FEATURES`]) and the job updates.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::error::GitlabError;
use crate::job::JobRequest;

/// The `info.features` of our job requests.
///
/// The job runs on the job machine under Heptapod Runner with its docker
/// executor, so we claim what a docker-executor gitlab-runner claims for the
/// features that runner supports: the reference's set, plus the flags
/// gitlab-runner sets about its own log and update handling, which the inner
/// runner does as well since it talks to the coordinator itself. Claiming
/// too little is not harmless: Rails fails jobs needing a feature we did not
/// claim (`runner_unsupported`, reference §2.2).
///
/// `two_phase_job_commit` is claimed (reference §2.6): on GitLab >= 18.5 the
/// 201 then leaves the job `pending`, reserved for us, and paas-runner
/// commits it with [`CoordinatorClient::confirm_job`] right after recording
/// it durably. A process killed between the 201 and that record leaves a
/// job that GitLab drops after 2 minutes as `runner_provisioning_timeout`
/// (visible, and retried if `retry:` allows) instead of one running with
/// nobody behind it. Provisioning happens after the commit, so no
/// keep-alives are needed. Older coordinators ignore the flag and answer
/// the commit as a keep-alive.
///
/// Deliberately absent:
///
/// - `cancel_gracefully`: it makes Rails use the `canceling` state, which
///   needs a final PUT from the runner to ever end (reference §6); whether
///   the inner runner version sends it is unknown, and a job canceled before
///   the inner runner starts would then stay `canceling` forever;
/// - `proxy` and `shared` are claimed `false` as the docker executor does;
/// - flags newer than the inner runner (`fallback_cache_keys`,
///   `service_variables`, `job_inputs`, `vault_secrets`, …): unknown
///   support, add them once the inner runner version is pinned.
pub const ADVERTISED_FEATURES: &[(&str, bool)] = &[
    ("variables", true),
    ("image", true),
    ("services", true),
    ("artifacts", true),
    ("cache", true),
    ("shared", false),
    ("upload_multiple_artifacts", true),
    ("upload_raw_artifacts", true),
    ("session", true),
    ("terminal", true),
    ("refspecs", true),
    ("masking", true),
    ("proxy", false),
    ("raw_variables", true),
    ("artifacts_exclude", true),
    ("multi_build_steps", true),
    ("return_exit_code", true),
    ("trace_reset", true),
    ("trace_checksum", true),
    ("trace_size", true),
    ("cancelable", true),
    ("two_phase_job_commit", true),
];

#[derive(Serialize)]
struct JobRequestBody<'a> {
    token: &'a str,
    // Without it Rails files the request under a `<legacy>` manager.
    #[serde(skip_serializing_if = "str::is_empty")]
    system_id: &'a str,
    // Workhorse only long-polls requests with a non-empty `last_update`.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_update: Option<&'a str>,
    info: RunnerInfo,
}

#[derive(Serialize)]
struct RunnerInfo {
    name: &'static str,
    version: &'static str,
    revision: &'static str,
    platform: &'static str,
    architecture: &'static str,
    executor: &'static str,
    shell: &'static str,
    features: Features,
}

/// Serialises [`ADVERTISED_FEATURES`] as a JSON object, in order.
struct Features;

impl Serialize for Features {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(ADVERTISED_FEATURES.len()))?;
        for (name, enabled) in ADVERTISED_FEATURES {
            map.serialize_entry(name, enabled)?;
        }
        map.end()
    }
}

/// `PUT /jobs/:id` with a state and nothing else.
#[derive(Serialize)]
pub(super) struct StateBody<'a> {
    pub(super) token: &'a str,
    pub(super) state: &'static str,
}

#[derive(Serialize)]
pub(super) struct FailJobBody<'a> {
    pub(super) token: &'a str,
    pub(super) state: &'static str,
    pub(super) failure_reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) exit_code: Option<i32>,
}

pub(super) fn job_request_body(req: &JobRequest<'_>) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&JobRequestBody {
        token: req.token.expose(),
        system_id: req.system_id,
        last_update: req.last_update.filter(|value| !value.is_empty()),
        info: RunnerInfo {
            name: "paas-runner",
            version: env!("CARGO_PKG_VERSION"),
            revision: match option_env!("PAAS_RUNNER_REVISION") {
                Some(revision) => revision,
                None => "unknown",
            },
            // What the job machine runs: Heptapod Runner, docker executor,
            // on linux/amd64.
            platform: "linux",
            architecture: "amd64",
            executor: "docker",
            shell: "bash",
            features: Features,
        },
    })
}

/// A request body that cannot be encoded (for `url`).
pub(super) fn encode_error(url: &str, error: serde_json::Error) -> GitlabError {
    GitlabError::Decode {
        url: url.to_owned(),
        detail: format!("cannot encode the request body: {error}"),
    }
}
