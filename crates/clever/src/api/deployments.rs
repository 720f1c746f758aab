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
use serde_json::Value;

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
        let answer: Value = self
            .call_json(ACTION, Method::GET, url, Auth::Credentials, None::<&()>)
            .await?;
        parse_deployments(&answer).ok_or_else(|| CleverError::Decode {
            action: ACTION,
            detail: "not an object of deployment arrays keyed by application".to_owned(),
        })
    }
}

/// The latest deployment state per application; `None` if the answer does
/// not have the documented shape.
fn parse_deployments(answer: &Value) -> Option<BTreeMap<String, DeploymentState>> {
    let apps = answer.as_object()?;
    let mut states = BTreeMap::new();
    for (app_id, deployments) in apps {
        let deployments = deployments.as_array()?;
        // The latest by `date` (epoch ms), else by position (first).
        let latest = deployments
            .iter()
            .enumerate()
            .max_by_key(|(index, deployment)| {
                let date = deployment.get("date").and_then(Value::as_i64);
                (date, std::cmp::Reverse(*index))
            })
            .map(|(_, deployment)| deployment);
        let Some(latest) = latest else {
            continue;
        };
        let state = latest.get("state")?.as_str()?;
        let state = match state {
            "OK" | "FAIL" | "CANCELLED" => DeploymentState::Ended(state.to_owned()),
            other => DeploymentState::InProgress(other.chars().take(32).collect()),
        };
        states.insert(app_id.clone(), state);
    }
    Some(states)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
            "app_e": [{"uuid": "6", "date": 1, "state": "SOMETHING_NEW"}]
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
