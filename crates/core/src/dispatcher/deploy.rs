//! A job's deployment: waiting for its machine to be ready (one
//! [`Command::CheckReady`] every `step` of the runner's [`ReadyWait`], for
//! `timeout` in all), watching meanwhile whether the job is over on the
//! coordinator ([`Command::WatchJob`], every `step` but at least
//! [`MIN_DEPLOY_WATCH`]), then handing the job over ([`Command::Deploy`]).
//!
//! The wait lasts its configured time and no longer: each check is cut at
//! the deadline (plus [`LAST_CHECK_GRACE`] for the last one), and a machine
//! still not ready then is a final failure, not a transient one, so the
//! wait is not made all over again.

use super::*;

/// What the dispatcher knows of a deployment under way (not persisted: a
/// restarted process waits again, the machine then being ready at once).
#[derive(Debug, Clone)]
pub(super) struct Deployment {
    /// When the wait for the machine started.
    since: Instant,
    /// Where the machine takes its job, once it is ready.
    target: Option<String>,
    /// A [`Command::WatchJob`] is under way.
    watch_busy: bool,
}

impl Dispatcher {
    /// The next command of a job in [`Stage::Deploying`] whose application
    /// `app_id` exists: a readiness check, or the hand-over once ready.
    pub(super) fn deploy_command(&mut self, key: JobKey, app_id: String, now: Instant) -> Command {
        let wait = self.runners[key.runner].spec.ready_wait;
        let first = !self.deployments.contains_key(&key);
        let deployment = self.deployments.entry(key).or_insert(Deployment {
            since: now,
            target: None,
            watch_busy: false,
        });
        if let Some(target) = deployment.target.clone() {
            let payload = self
                .jobs
                .get(&key)
                .map(|job| job.payload.clone())
                .unwrap_or_default();
            return Command::Deploy {
                job: key,
                app_id,
                payload,
                target,
            };
        }
        let deadline = deployment.since + wait.timeout;
        if first {
            self.job_watches.insert((now + wait.watch_every(), key));
        }
        Command::CheckReady {
            job: key,
            app_id,
            timeout: deadline.saturating_duration_since(now) + LAST_CHECK_GRACE,
            first,
        }
    }

    /// The answer to a [`Command::CheckReady`].
    pub fn handle_ready(&mut self, key: JobKey, check: ReadyCheck, now: Instant) {
        let job = outcome_job!(self, key);
        let waiting = job.stage == Stage::Deploying
            && self
                .deployments
                .get(&key)
                .is_some_and(|deployment| deployment.target.is_none());
        if !waiting {
            // The job moved on meanwhile (over on the coordinator).
            self.ready.insert(key);
            self.drive(now);
            return;
        }
        let wait = self.runners[key.runner].spec.ready_wait;
        let app_id = job.app_id().unwrap_or_default().to_owned();
        match check {
            ReadyCheck::Ready { target } => {
                if let Some(deployment) = self.deployments.get_mut(&key) {
                    deployment.target = Some(target);
                }
                self.ready.insert(key);
            }
            ReadyCheck::NotYet => {
                let since = self.deployments.get(&key).map_or(now, |d| d.since);
                let deadline = since + wait.timeout;
                if now >= deadline {
                    // Final: the wait already lasted its whole configured time.
                    self.deployments.remove(&key);
                    self.commands.push_back(Command::Notice(Notice::NotReady {
                        job: key,
                        app_id: app_id.clone(),
                        waited: now.saturating_duration_since(since),
                        timeout: wait.timeout,
                    }));
                    let message = messages::deployment_repo_not_ready(&app_id, wait.timeout);
                    self.retry_or_fail(key, "deploy", STEP_ATTEMPTS, false, message, now);
                    self.ready.insert(key);
                } else {
                    self.wake_at(key, (now + wait.step.max(MIN_READY_STEP)).min(deadline));
                }
            }
            ReadyCheck::Failed { user_message } => {
                self.deployments.remove(&key);
                self.retry_or_fail(key, "deploy", STEP_ATTEMPTS, false, user_message, now);
                self.ready.insert(key);
            }
        }
        self.drive(now);
    }

    /// The answer to a [`Command::WatchJob`]: whether the job is over on
    /// the coordinator while its machine gets ready.
    pub fn handle_job_watch(&mut self, key: JobKey, over: bool, now: Instant) {
        let waiting = self
            .jobs
            .get(&key)
            .is_some_and(|job| job.stage == Stage::Deploying);
        let Some(deployment) = self.deployments.get_mut(&key) else {
            self.drive(now);
            return;
        };
        deployment.watch_busy = false;
        if !waiting || deployment.target.is_some() {
            self.drive(now);
            return;
        }
        if over {
            // A readiness check may be under way: its answer is ignored.
            self.deployments.remove(&key);
            if let Some(job) = self.jobs.get_mut(&key) {
                if let Some(at) = job.next_step_at.take() {
                    self.wakeups.remove(&(at, key));
                }
            }
            self.end_job_over(key);
        } else {
            let every = self.runners[key.runner].spec.ready_wait.watch_every();
            self.job_watches.insert((now + every, key));
        }
        self.drive(now);
    }

    /// Sends the job watches that are due.
    pub(super) fn send_job_watches(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.job_watches.iter().next() {
            if at > now {
                break;
            }
            self.job_watches.remove(&(at, key));
            if self.shutting_down {
                continue;
            }
            let Some(job) = self.jobs.get(&key) else {
                continue;
            };
            let Some(deployment) = self.deployments.get_mut(&key) else {
                continue;
            };
            if job.stage != Stage::Deploying || deployment.target.is_some() || deployment.watch_busy
            {
                continue;
            }
            deployment.watch_busy = true;
            self.commands.push_back(Command::WatchJob {
                job: key,
                token: job.token.clone(),
            });
        }
    }

    /// Whether a job watch is under way.
    pub(super) fn watch_in_flight(&self) -> bool {
        self.deployments
            .values()
            .any(|deployment| deployment.watch_busy)
    }
}
