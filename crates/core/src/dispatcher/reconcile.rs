//! Reconciliation: the cloud's listing of each runner's applications
//! against the jobs; orphans deleted once old enough, foreign ones counted,
//! adoption of creations whose outcome was unknown, vanished machines.

use super::*;

/// What an application that no job accounts for is, by its owner and age:
/// the one rule of reconciliation (which deletes [`OrphanVerdict::Orphan`]s
/// at once, the young ones once old enough) and of `paas-runner reap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrphanVerdict {
    /// This installation's, at least `paas_orphan_min_age` old: deleted.
    Orphan,
    /// This installation's, younger (or of unknown age): perhaps a creation
    /// under way, kept.
    Young,
    /// Another installation's, or unmarked: counted, never deleted by the
    /// service.
    Foreign,
}

impl OrphanVerdict {
    pub fn of(owner: &AppOwner, age: Option<Duration>, min_age: Duration) -> OrphanVerdict {
        match (owner, old_enough(age, min_age)) {
            (AppOwner::Ours, true) => OrphanVerdict::Orphan,
            (AppOwner::Ours, false) => OrphanVerdict::Young,
            _ => OrphanVerdict::Foreign,
        }
    }
}

/// Whether an application of age `age` (`None`: unknown) is at least
/// `min_age` old.
pub fn old_enough(age: Option<Duration>, min_age: Duration) -> bool {
    age.is_some_and(|age| age >= min_age)
}

/// When an application aged `age` at `now` becomes [`old_enough`] (`None`:
/// never, its age is unknown).
fn deletable_at(age: Option<Duration>, min_age: Duration, now: Instant) -> Option<Instant> {
    age.map(|age| now + min_age.saturating_sub(age))
}

/// The applications that recorded jobs account for: by id, and by name
/// (`naming::app_name`) for a job whose creation outcome is unknown.
#[derive(Debug, Clone, Default)]
pub struct TrackedApps {
    ids: BTreeSet<String>,
    names: BTreeSet<String>,
}

impl TrackedApps {
    pub fn from_records(records: &[JobRecord]) -> TrackedApps {
        TrackedApps {
            ids: records.iter().filter_map(|r| r.app_id.clone()).collect(),
            names: records
                .iter()
                .filter(|r| r.app_id.is_none())
                .map(|r| naming::app_name(&r.runner_key, r.job_id))
                .collect(),
        }
    }

    /// Whether a recorded job accounts for `app`.
    pub fn accounts_for(&self, app: &ListedApp) -> bool {
        self.ids.contains(&app.id) || self.names.contains(&app.name)
    }
}

/// An application under a runner's name prefix that is not ours.
#[derive(Debug, Clone)]
pub(super) struct ForeignApp {
    pub(super) runner: RunnerIdx,
    pub(super) weight: f64,
}

#[derive(Debug, Clone)]
pub(super) struct Orphan {
    pub(super) runner: RunnerIdx,
    pub(super) name: String,
    pub(super) weight: f64,
    pub(super) created_ms: Option<i64>,
    /// When it is old enough to be deleted (`None`: its age is unknown, it
    /// is never deleted).
    pub(super) deletable_at: Option<Instant>,
    pub(super) busy: bool,
    /// Its last deletion failed: tried again at the next reconciliation
    /// only (not at every drive, which would hammer a failing API).
    pub(super) failed: bool,
}
impl Dispatcher {
    /// The applications of a runner found in the cloud (`None`: the listing
    /// failed; it is tried again at the next reconciliation).
    ///
    /// Applications of this installation that no job accounts for are
    /// deleted once `orphan_min_age` old; those of other owners, or without
    /// owner marker, are reported and counted in the quota, never deleted.
    /// A job under way whose application is missing from a listing started
    /// after the application was known to exist is failed.
    pub fn handle_app_list(
        &mut self,
        runner: RunnerIdx,
        apps: Option<Vec<ListedApp>>,
        now: Instant,
    ) {
        if let Some(listing) = self.listing.get_mut(runner) {
            *listing = false;
        }
        if let Some(unlisted) = self.unlisted.get_mut(runner) {
            *unlisted = false;
        }
        let Some(apps) = apps else {
            self.drive(now);
            return;
        };
        let listed: BTreeSet<&str> = apps.iter().map(|app| app.id.as_str()).collect();
        // What is no longer listed is gone: it counts no more.
        self.orphans.retain(|id, orphan| {
            orphan.runner != runner || orphan.busy || listed.contains(id.as_str())
        });
        self.foreign
            .retain(|id, app| app.runner != runner || listed.contains(id.as_str()));
        self.find_vanished(runner, &listed);
        let runner_key = self.runners[runner].spec.key.clone();
        for app in apps {
            let Some(job_id) = naming::job_id_of(&app.name, &runner_key) else {
                continue;
            };
            let key = JobKey { runner, job_id };
            if self.tracked_by_other_runner(runner, job_id) {
                continue;
            }
            if let Some(Resource::Exists(existing)) = self.jobs.get(&key).map(|job| &job.resource) {
                if existing.id == app.id {
                    continue;
                }
            }
            if app.owner != AppOwner::Ours {
                self.note_foreign(runner, app);
                continue;
            }
            let adopt = match self.jobs.get(&key) {
                Some(job) => match &job.resource {
                    // A second application for one job: the extra one goes.
                    Resource::Exists(_) => false,
                    Resource::Maybe | Resource::None => {
                        !job.failed && !matches!(job.stage, Stage::Decommissioning)
                    }
                },
                None => false,
            };
            if adopt {
                if let Some(job) = self.jobs.get_mut(&key) {
                    job.resource = Resource::Exists(App {
                        id: app.id.clone(),
                        weight: app.weight,
                    });
                }
                self.exists_since.insert(key, self.list_generation);
                self.commands.push_back(Command::Notice(Notice::Adopted {
                    job: key,
                    app_id: app.id,
                }));
                self.save(key);
                self.ready.insert(key);
                continue;
            }
            if self.jobs.get(&key).is_some_and(|job| {
                matches!(job.resource, Resource::Maybe)
                    && matches!(job.stage, Stage::Decommissioning | Stage::Failing { .. })
            }) {
                // Its job already deletes every application of that name.
                continue;
            }
            if self.config.keep_resources || !self.config.decommission_launch_failures {
                // Applications are kept on purpose in this mode: report
                // them once, neither count nor delete them.
                if self.kept_reported.insert(app.id.clone()) {
                    self.commands.push_back(Command::Notice(Notice::Orphan {
                        runner,
                        app_id: app.id.clone(),
                        name: app.name.clone(),
                    }));
                }
                continue;
            }
            // Young applications may be a creation whose job this process
            // does not know yet (or no more): deleted only once old enough.
            let deletable_at = deletable_at(app.age, self.config.orphan_min_age, now);
            if let Some(orphan) = self.orphans.get_mut(&app.id) {
                orphan.deletable_at = deletable_at;
                continue;
            }
            self.commands.push_back(Command::Notice(Notice::Orphan {
                runner,
                app_id: app.id.clone(),
                name: app.name.clone(),
            }));
            self.orphans.insert(
                app.id.clone(),
                Orphan {
                    runner,
                    name: app.name,
                    weight: app.weight,
                    created_ms: app.created_ms,
                    deletable_at,
                    busy: false,
                    failed: false,
                },
            );
        }
        self.drive(now);
    }

    /// Records an application that is not ours; reports it the first time.
    pub(super) fn note_foreign(&mut self, runner: RunnerIdx, app: ListedApp) {
        if self.foreign.contains_key(&app.id) {
            return;
        }
        self.foreign.insert(
            app.id.clone(),
            ForeignApp {
                runner,
                weight: app.weight,
            },
        );
        self.commands.push_back(Command::Notice(Notice::Foreign {
            runner,
            app_id: app.id,
            name: app.name,
            owner: app.owner,
            age: app.age,
        }));
    }

    /// Marks the jobs of `runner` whose application a listing should show
    /// but does not. Left out: jobs whose application became known after
    /// the listing started (a creation in flight), and jobs that delete it
    /// themselves or are failing already.
    pub(super) fn find_vanished(&mut self, runner: RunnerIdx, listed: &BTreeSet<&str>) {
        let generation = self.list_started.get(runner).copied().unwrap_or(0);
        for job in self.jobs.values() {
            if job.key.runner != runner || job.failed {
                continue;
            }
            if !matches!(
                job.stage,
                Stage::Deploying | Stage::Launching { .. } | Stage::Running
            ) {
                continue;
            }
            let Some(app_id) = job.app_id() else {
                continue;
            };
            let known_before = self
                .exists_since
                .get(&job.key)
                .is_some_and(|since| *since < generation);
            if known_before && !listed.contains(app_id) {
                self.vanished.insert(job.key, app_id.to_owned());
                self.ready.insert(job.key);
            }
        }
    }

    /// The job's machine is gone (see [`Dispatcher::find_vanished`]): the
    /// job is failed with a message saying so, its weight released at once.
    /// Returns whether it was (the job may have moved on meanwhile).
    pub(super) fn end_vanished(&mut self, key: JobKey, app_id: String) -> bool {
        let Some(job) = self.jobs.get_mut(&key) else {
            return false;
        };
        let still = !job.failed
            && job.app_id() == Some(app_id.as_str())
            && matches!(
                job.stage,
                Stage::Deploying | Stage::Launching { .. } | Stage::Running
            );
        if !still {
            return false;
        }
        job.resource = Resource::None;
        if let Some(at) = job.next_step_at.take() {
            self.wakeups.remove(&(at, key));
        }
        self.exists_since.remove(&key);
        self.commands
            .push_back(Command::Notice(Notice::MachineVanished {
                job: key,
                app_id: app_id.clone(),
            }));
        self.fail(
            key,
            Failure {
                kind: FailureKind::System,
                message: messages::machine_vanished(&app_id),
            },
        );
        self.ready.insert(key);
        true
    }

    /// Outcome of an orphan deletion (a failed one is tried again at the
    /// next reconciliation).
    pub fn handle_orphan_deleted(&mut self, app_id: &str, deleted: bool, now: Instant) {
        if deleted {
            self.orphans.remove(app_id);
        } else if let Some(orphan) = self.orphans.get_mut(app_id) {
            orphan.busy = false;
            orphan.failed = true;
        }
        self.drive(now);
    }

    /// Weight of applications no job accounts for: ours until deleted,
    /// and those of other owners (or unmarked) while listed. A machine of
    /// another installation under our runner key uses the same
    /// organisation: counting it keeps the organisation within the quota.
    pub fn orphan_weight(&self) -> f64 {
        self.orphans
            .values()
            .map(|orphan| orphan.weight)
            .sum::<f64>()
            + self.foreign.values().map(|app| app.weight).sum::<f64>()
    }

    pub(super) fn start_reconciliation(&mut self, now: Instant) {
        if self.shutting_down || self.config.reconcile_interval.is_zero() {
            return;
        }
        if self.next_reconcile_at.is_some_and(|at| at > now) {
            return;
        }
        self.next_reconcile_at = Some(now + self.config.reconcile_interval);
        for runner in 0..self.runners.len() {
            if !self.listing[runner] && !self.runners[runner].retired {
                self.listing[runner] = true;
                self.list_generation += 1;
                self.list_started[runner] = self.list_generation;
                self.commands.push_back(Command::ListApps { runner });
            }
        }
        for orphan in self.orphans.values_mut() {
            orphan.failed = false;
        }
    }

    /// Deletes orphans as soon as they are old enough (the periodic pass
    /// retries failed deletions).
    pub(super) fn delete_orphans(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        for (app_id, orphan) in self.orphans.iter_mut() {
            let old_enough = orphan.deletable_at.is_some_and(|at| at <= now);
            if !orphan.busy && !orphan.failed && old_enough {
                orphan.busy = true;
                self.commands.push_back(Command::DeleteOrphan {
                    runner: orphan.runner,
                    app_id: app_id.clone(),
                    name: orphan.name.clone(),
                    created_ms: orphan.created_ms,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_old_applications_are_orphans() {
        let min = Duration::from_secs(600);
        let old = Some(Duration::from_secs(601));
        let young = Some(Duration::from_secs(5));
        assert_eq!(
            OrphanVerdict::of(&AppOwner::Ours, old, min),
            OrphanVerdict::Orphan
        );
        assert_eq!(
            OrphanVerdict::of(&AppOwner::Ours, young, min),
            OrphanVerdict::Young
        );
        assert_eq!(
            OrphanVerdict::of(&AppOwner::Ours, None, min),
            OrphanVerdict::Young
        );
        let other = AppOwner::Foreign("r_x".into());
        assert_eq!(OrphanVerdict::of(&other, old, min), OrphanVerdict::Foreign);
        assert_eq!(
            OrphanVerdict::of(&AppOwner::Unmarked, old, min),
            OrphanVerdict::Foreign
        );
    }

    #[test]
    fn reconciliation_deletes_exactly_when_reap_would() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let min = Duration::from_secs(600);
        for age in [0, 1, 599, 600, 601, 10_000] {
            let age = Some(Duration::from_secs(age));
            let due = deletable_at(age, min, now).is_some_and(|at| at <= now);
            assert_eq!(due, old_enough(age, min), "{age:?}");
        }
        assert_eq!(deletable_at(None, min, now), None);
        assert!(!old_enough(None, min));
    }
}
