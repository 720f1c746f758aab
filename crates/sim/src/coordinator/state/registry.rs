//! The coordinator's runners (Rails' `Ci::Runner` and `Ci::RunnerManager`):
//! registration, verification, deletion, and which jobs a runner may take
//! (tags, `run_untagged`, `paused`), following reference §2 and §10.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::State;

/// A runner as `GET /sim/runners` shows it (no token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerInfo {
    pub id: u64,
    /// First 8 characters of the token.
    pub token_prefix: String,
    pub description: String,
    pub tags: Vec<String>,
    pub run_untagged: bool,
    pub paused: bool,
    pub locked: bool,
    /// `instance_type` for the runners of the simulator's configuration and
    /// those created with `POST /user/runners`; legacy registrations are
    /// instance runners too (an instance registration token).
    pub runner_type: String,
    /// How its token came: `configured`, `created` (`glrt-`, UI or
    /// `POST /user/runners`) or `registered` (legacy `POST /runners`).
    pub origin: String,
    /// `system_id`s of its runner managers (hosts that verified or asked
    /// for jobs with this token).
    pub managers: Vec<String>,
}

/// Server-side settings sent at registration or creation.
#[derive(Debug, Clone, Default)]
pub(crate) struct NewRunnerSettings {
    pub description: String,
    pub tags: Vec<String>,
    pub run_untagged: bool,
    pub paused: bool,
    pub locked: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Runner {
    pub info: RunnerInfo,
    managers: BTreeSet<String>,
}

impl Runner {
    /// Rails' `Ci::Runner#matches_build?` on tags: the job's tags are all
    /// the runner's, and a job without tags needs `run_untagged`.
    pub fn takes(&self, job_tags: &[String]) -> bool {
        (self.info.run_untagged || !job_tags.is_empty())
            && job_tags.iter().all(|tag| self.info.tags.contains(tag))
    }
}

/// Runners by token.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    runners: BTreeMap<String, Runner>,
    next_id: u64,
}

/// Manager name Rails files requests without `system_id` under.
pub(crate) const LEGACY_MANAGER: &str = "<legacy>";

/// Why `DELETE /runners/managers` did nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ManagerDeletion {
    Deleted,
    UnknownToken,
    NoSuchManager,
}

impl Registry {
    pub fn get(&self, token: &str) -> Option<&Runner> {
        self.runners.get(token)
    }

    pub fn infos(&self) -> Vec<RunnerInfo> {
        let mut infos: Vec<RunnerInfo> = self
            .runners
            .values()
            .map(|runner| RunnerInfo {
                managers: runner.managers.iter().cloned().collect(),
                ..runner.info.clone()
            })
            .collect();
        infos.sort_by_key(|info| info.id);
        infos
    }

    fn insert(&mut self, token: String, settings: NewRunnerSettings, origin: &str) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let info = RunnerInfo {
            id,
            token_prefix: token.chars().take(8).collect(),
            description: settings.description,
            tags: settings.tags,
            run_untagged: settings.run_untagged,
            paused: settings.paused,
            locked: settings.locked,
            runner_type: "instance_type".to_owned(),
            origin: origin.to_owned(),
            managers: Vec::new(),
        };
        self.runners.insert(
            token,
            Runner {
                info,
                managers: BTreeSet::new(),
            },
        );
        id
    }

    /// Heartbeat of a runner manager (`authenticate_runner!` on verify and
    /// job requests creates it on first sight).
    pub fn touch_manager(&mut self, token: &str, system_id: Option<&str>) {
        if let Some(runner) = self.runners.get_mut(token) {
            let system_id = system_id
                .filter(|id| !id.is_empty())
                .unwrap_or(LEGACY_MANAGER);
            runner.managers.insert(system_id.to_owned());
        }
    }
}

impl State {
    /// A runner of the simulator's configuration: untagged jobs only.
    pub(crate) fn add_configured_runner(&mut self, token: &str) {
        let settings = NewRunnerSettings {
            description: format!("configured runner {}", self.registry.next_id + 1),
            run_untagged: true,
            ..NewRunnerSettings::default()
        };
        self.registry
            .insert(token.to_owned(), settings, "configured");
    }

    /// Creates a runner with a fresh token: `glrt-` for `created`, none for
    /// a legacy registration (UNVERIFIED: the exact form of tokens returned
    /// by `POST /runners`; recent GitLab may prefix them too).
    pub(crate) fn create_runner(
        &mut self,
        settings: NewRunnerSettings,
        created_in_gitlab: bool,
    ) -> (u64, String) {
        let random = self.random_alphanumeric(20);
        let (token, origin) = if created_in_gitlab {
            (format!("glrt-{random}"), "created")
        } else {
            (random, "registered")
        };
        let id = self.registry.insert(token.clone(), settings, origin);
        self.runner_tokens.push(token.clone());
        self.tick(&token);
        (id, token)
    }

    /// `POST /runners/verify`: the runner's id, and its manager refreshed.
    pub(crate) fn verify_runner(&mut self, token: &str, system_id: Option<&str>) -> Option<u64> {
        let id = self.registry.get(token)?.info.id;
        self.registry.touch_manager(token, system_id);
        Some(id)
    }

    /// `DELETE /runners`: whether the token was known.
    pub(crate) fn delete_runner(&mut self, token: &str) -> bool {
        let known = self.registry.runners.remove(token).is_some();
        self.runner_tokens
            .retain(|known_token| known_token != token);
        known
    }

    /// `DELETE /runners/managers`.
    pub(crate) fn delete_runner_manager(
        &mut self,
        token: &str,
        system_id: &str,
    ) -> ManagerDeletion {
        let Some(runner) = self.registry.runners.get_mut(token) else {
            return ManagerDeletion::UnknownToken;
        };
        if runner.managers.remove(system_id) {
            ManagerDeletion::Deleted
        } else {
            ManagerDeletion::NoSuchManager
        }
    }

    /// `/jobs/request` heartbeats the manager of its `system_id`.
    pub(crate) fn touch_runner_manager(&mut self, token: &str, system_id: Option<&str>) {
        self.registry.touch_manager(token, system_id);
    }

    pub(crate) fn runner_infos(&self) -> Vec<RunnerInfo> {
        self.registry.infos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(tags: &[&str], run_untagged: bool) -> Runner {
        Runner {
            info: RunnerInfo {
                id: 1,
                token_prefix: String::new(),
                description: String::new(),
                tags: tags.iter().map(|tag| tag.to_string()).collect(),
                run_untagged,
                paused: false,
                locked: false,
                runner_type: "instance_type".into(),
                origin: "created".into(),
                managers: Vec::new(),
            },
            managers: BTreeSet::new(),
        }
    }

    fn tags(tags: &[&str]) -> Vec<String> {
        tags.iter().map(|tag| tag.to_string()).collect()
    }

    #[test]
    fn tags_decide_which_jobs_a_runner_takes() {
        let announced = runner(&["docker-registry-push", "clever"], true);
        assert!(announced.takes(&[]));
        assert!(announced.takes(&tags(&["clever"])));
        assert!(announced.takes(&tags(&["clever", "docker-registry-push"])));
        assert!(!announced.takes(&tags(&["clever", "gpu"])));
        let tagged_only = runner(&["clever"], false);
        assert!(!tagged_only.takes(&[]));
        assert!(tagged_only.takes(&tags(&["clever"])));
        let untagged_only = runner(&[], true);
        assert!(untagged_only.takes(&[]));
        assert!(!untagged_only.takes(&tags(&["clever"])));
    }
}
