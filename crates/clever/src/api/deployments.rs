//! The organisation-wide listing of deployments: one call that tells which
//! job machines' tasks have ended.
//!
//! Evidence (`docs/protocol-notes.md` §3.d): `GET
//! /v2/organisations/{o}/deployments` answers an object keyed by
//! application id, each value an array of the legacy deployment objects
//! (`{uuid, id, date, state, action, commit, cause, instances, author}`) of
//! `@clevercloud/client` 12's `ListOrganisationDeploymentCommand` (which
//! maps a 404 to "none"). States: `WIP`, `OK`, `FAIL`, `CANCELLED`,
//! `TASK_RUNNING`. UNVERIFIED: what a TASK application's deployment says
//! once its task ended (`OK` after `TASK_RUNNING`, `FAIL` on a non-zero
//! exit?), and the order of each array. So callers use this only as a
//! hint, behind feature detection: a 404 or an answer of another shape
//! means the listing is not there ([`CleverError::is_not_found`] or
//! [`CleverError::Decode`]); an ended state only triggers a coordinator
//! check, which decides.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::{Auth, CleverClient, CleverError};

/// Where an application's latest deployment is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeploymentState {
    /// Building, booting or running its task (`WIP`, `TASK_RUNNING`, or a
    /// state this client does not know: only known end states end).
    InProgress(String),
    /// `OK`, `FAIL` or `CANCELLED`: the machine's task is over.
    Ended(String),
}

impl CleverClient {
    /// `GET /v2/organisations/{o}/deployments`: the state of the latest
    /// deployment of every application that has one, by application id.
    pub async fn organisation_deployments(
        &self,
    ) -> Result<BTreeMap<String, DeploymentState>, CleverError> {
        const ACTION: &str = "list organisation deployments";
        let url = self.endpoint(&["organisations", self.orga_id.as_str(), "deployments"])?;
        let answer: Listing = self
            .call_json(ACTION, Method::GET, url, Auth::Credentials, None::<&()>)
            .await?;
        latest_states(answer).ok_or_else(|| CleverError::Decode {
            action: ACTION,
            detail: "not an object of deployment arrays keyed by application".to_owned(),
        })
    }
}

/// The listing as read: every application's deployments, each reduced to
/// the two fields used. The listing covers the whole organisation and is
/// read twice per `check_interval`, so nothing else of it is kept: the
/// other fields are skipped by the parser without being stored.
type Listing = BTreeMap<String, Vec<Deployment>>;

#[derive(Debug, Deserialize)]
struct Deployment {
    #[serde(default)]
    date: Option<Date>,
    #[serde(default)]
    state: Option<String>,
}

/// `date` is epoch milliseconds; any other value counts as no date.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Date {
    Millis(i64),
    Other(IgnoredAny),
}

impl Deployment {
    fn date(&self) -> Option<i64> {
        match self.date {
            Some(Date::Millis(millis)) => Some(millis),
            _ => None,
        }
    }
}

/// The latest deployment state per application; `None` if a deployment
/// has no state (the answer is not the documented listing).
fn latest_states(listing: Listing) -> Option<BTreeMap<String, DeploymentState>> {
    let mut states = BTreeMap::new();
    for (app_id, deployments) in listing {
        // The latest by `date` (epoch ms), else by position (first).
        let latest = deployments
            .into_iter()
            .enumerate()
            .max_by_key(|(index, deployment)| (deployment.date(), std::cmp::Reverse(*index)))
            .map(|(_, deployment)| deployment);
        let Some(latest) = latest else {
            continue;
        };
        let state = match latest.state? {
            state if matches!(state.as_str(), "OK" | "FAIL" | "CANCELLED") => {
                DeploymentState::Ended(state)
            }
            other => DeploymentState::InProgress(other.chars().take(32).collect()),
        };
        states.insert(app_id, state);
    }
    Some(states)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse_deployments(answer: &Value) -> Option<BTreeMap<String, DeploymentState>> {
        latest_states(serde_json::from_value(answer.clone()).ok()?)
    }

    #[test]
    fn the_latest_deployment_of_each_application_counts() {
        let answer = json!({
            "app_a": [
                {"uuid": "1", "date": 1000, "state": "OK"},
                {"uuid": "2", "date": 2000, "state": "TASK_RUNNING"}
            ],
            "app_b": [{"uuid": "3", "date": 5, "state": "FAIL"}],
            "app_c": [{"uuid": "4", "state": "WIP"}, {"uuid": "5", "state": "OK"}],
            "app_d": [],
            "app_e": [{"uuid": "6", "date": 1, "state": "SOMETHING_NEW"}],
            "app_f": [{
                "uuid": "7", "id": 3, "date": "yesterday", "state": "CANCELLED",
                "action": "DEPLOY", "commit": "abc", "cause": null,
                "instances": [{"id": 1}], "author": {"id": "u", "name": "n"}
            }]
        });
        let states = parse_deployments(&answer).expect("shape");
        assert_eq!(
            states.get("app_a"),
            Some(&DeploymentState::InProgress("TASK_RUNNING".into()))
        );
        assert_eq!(
            states.get("app_b"),
            Some(&DeploymentState::Ended("FAIL".into()))
        );
        assert_eq!(
            states.get("app_c"),
            Some(&DeploymentState::InProgress("WIP".into()))
        );
        assert_eq!(states.get("app_d"), None);
        assert_eq!(
            states.get("app_e"),
            Some(&DeploymentState::InProgress("SOMETHING_NEW".into()))
        );
        assert_eq!(
            states.get("app_f"),
            Some(&DeploymentState::Ended("CANCELLED".into()))
        );
    }

    #[test]
    fn other_shapes_are_not_the_listing() {
        for answer in [
            json!([]),
            json!({"app_a": {"state": "OK"}}),
            json!({"app_a": [{"date": 1}]}),
            json!("deployments"),
        ] {
            assert_eq!(parse_deployments(&answer), None, "{answer}");
        }
    }
}
