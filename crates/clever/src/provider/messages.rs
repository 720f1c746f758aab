//! What the CI user (job log) and the operator (refusals at start) read of
//! Clever Cloud: every such text of [`super::CleverProvider`] is worded here.

use crate::api::CleverError;

/// The cloud refused to create the machine.
pub fn create_failed(error: &CleverError) -> String {
    format!(
        "Clever Cloud could not create the machine for this job: {}",
        error.user_message()
    )
}

/// The application's deployment repository has no URL.
pub fn no_deployment_url(app_id: &str) -> String {
    format!("The Clever Cloud application {app_id} has no git deployment URL.")
}

/// The application's state cannot be read (not a transient failure).
pub fn cannot_read_app(app_id: &str, error: &CleverError) -> String {
    format!(
        "Clever Cloud: cannot read application {app_id}: {}",
        error.user_message()
    )
}

/// The build context could not be made (or would carry a credential).
pub fn cannot_prepare(error: &dyn std::fmt::Display) -> String {
    format!("Could not prepare the job for its machine: {error}")
}

/// The git push of the build context failed.
pub fn push_failed(error: &dyn std::fmt::Display) -> String {
    format!("Could not deploy the job to its Clever Cloud application: {error}")
}

/// The catalogue offers no flavor of the runner's context (operator).
pub fn empty_catalogue(api_url: &str, prefix: &str) -> String {
    format!("the Clever Cloud catalogue at {api_url} has no available flavor named {prefix}*")
}

/// A refusal of the token (`key`: `cc_token`, `cc_oauth_token` or
/// `cc_api_token`) or of `cc_orga_id` at start that can never pass
/// (operator, naming the keys of runner `index`); `None`: not a refusal.
pub fn access_refused(error: &CleverError, orga: &str, index: usize, key: &str) -> Option<String> {
    match error {
        CleverError::Unauthorized { status: 401, .. } => Some(format!(
            "Clever Cloud refused `{key}` (HTTP 401): the token is invalid or expired. \
             Fix `{key}` (key `runners[{index}].{key}`, or its `secret:` entry) with a valid token"
        )),
        CleverError::Unauthorized { status, .. } => Some(format!(
            "Clever Cloud does not let `{key}` use organisation {orga:?} (HTTP {status}). \
             Check `cc_orga_id` (key `runners[{index}].cc_orga_id`) and that the token belongs to a member of that organisation"
        )),
        error if error.status() == Some(404) => Some(format!(
            "Clever Cloud knows no organisation {orga:?} (HTTP 404). \
             Fix `cc_orga_id` (key `runners[{index}].cc_orga_id`): an id such as `orga_…`"
        )),
        _ => None,
    }
}
