//! The life of a job: the outcome of each step, and the per-job step
//! function ([`Dispatcher::step`]) that issues its next command.

use super::*;

impl Dispatcher {
    pub fn handle_created(&mut self, key: JobKey, outcome: StepOutcome<App>, now: Instant) {
        let job = outcome_job!(self, key);
        match outcome {
            StepOutcome::Done(app) => {
                job.resource = Resource::Exists(app);
                job.attempts = 0;
                job.stage = Stage::Deploying;
                self.exists_since.insert(key, self.list_generation);
                self.save(key);
            }
            StepOutcome::Failed {
                transient,
                user_message,
            } => {
                // The creation may have taken effect although it failed.
                job.resource = Resource::Maybe;
                self.retry_or_fail(
                    key,
                    "create application",
                    STEP_ATTEMPTS,
                    transient,
                    user_message,
                    now,
                );
            }
        }
        self.ready.insert(key);
        self.drive(now);
    }

    pub fn handle_deployed(&mut self, key: JobKey, outcome: StepOutcome<()>, now: Instant) {
        // A retry waits for the machine again, as the first attempt did.
        self.deployments.remove(&key);
        let job = outcome_job!(self, key);
        match outcome {
            StepOutcome::Done(()) => {
                job.attempts = 0;
                // The payload only builds the context just pushed; the
                // store keeps it. Thousands of running jobs need not hold
                // theirs in memory.
                job.payload = String::new();
                if self.runners[key.runner].spec.launch_watch.is_some() {
                    job.stage = Stage::Launching { since: now };
                } else {
                    // Without a way to watch the log, assume the launch
                    // worked, like heptapod-paas-runner does.
                    job.stage = Stage::Running;
                    self.launched_total += 1;
                    self.commands
                        .push_back(Command::Notice(Notice::Launched { job: key }));
                }
                self.save(key);
            }
            StepOutcome::Failed {
                transient,
                user_message,
            } => {
                self.retry_or_fail(key, "deploy", STEP_ATTEMPTS, transient, user_message, now);
            }
        }
        self.ready.insert(key);
        self.drive(now);
    }

    pub fn handle_launch_check(&mut self, key: JobKey, check: LaunchCheck, now: Instant) {
        let job = outcome_job!(self, key);
        let Stage::Launching { since } = job.stage else {
            self.ready.insert(key);
            self.drive(now);
            return;
        };
        let watch = self.runners[key.runner].spec.launch_watch;
        let job_flavor = job.flavor.clone();
        match check {
            LaunchCheck::Started => {
                job.stage = Stage::Running;
                self.launched_total += 1;
                self.commands
                    .push_back(Command::Notice(Notice::Launched { job: key }));
                self.save(key);
                self.ready.insert(key);
            }
            LaunchCheck::JobOver => {
                job.stage = Stage::Decommissioning;
                self.save(key);
                self.ready.insert(key);
            }
            LaunchCheck::NotYet => {
                let watch = watch.unwrap_or(LaunchWatch {
                    timeout: Duration::ZERO,
                    poll_step: Duration::ZERO,
                });
                if now.saturating_duration_since(since) >= watch.timeout {
                    let failure = Failure {
                        kind: FailureKind::System,
                        message: messages::launch_timeout(
                            watch.timeout,
                            self.runners[key.runner].spec.flavors.get(&job_flavor),
                            &self.runners[key.runner].spec.zone,
                        ),
                    };
                    self.fail(key, failure);
                    self.ready.insert(key);
                } else {
                    let next = (now + watch.poll_step).min(since + watch.timeout);
                    self.wake_at(key, next);
                }
            }
        }
        self.drive(now);
    }

    pub fn handle_status(&mut self, key: JobKey, check: StatusCheck, now: Instant) {
        let job = outcome_job!(self, key);
        match check {
            StatusCheck::Finished => {
                self.commands
                    .push_back(Command::Notice(Notice::Finished { job: key }));
                job.stage = Stage::Decommissioning;
                self.save(key);
                self.ready.insert(key);
            }
            StatusCheck::Running | StatusCheck::Error if self.watch.is_paced() => {
                self.after_running_check(key, check, now);
            }
            StatusCheck::Running | StatusCheck::Error => {
                let next = now + self.config.status_interval;
                self.wake_at(key, next);
            }
        }
        self.drive(now);
    }

    pub fn handle_log_appended(&mut self, key: JobKey, outcome: StepOutcome<()>, now: Instant) {
        outcome_job!(self, key);
        let written = match outcome {
            StepOutcome::Done(()) => true,
            StepOutcome::Failed { transient, .. } => {
                if self.retry_later(key, "write job log", STEP_ATTEMPTS, transient, now) {
                    self.drive(now);
                    return;
                }
                self.commands.push_back(Command::Notice(Notice::GaveUp {
                    job: key,
                    step: "write job log",
                }));
                // Give up on the log; the failure report still goes out.
                true
            }
        };
        if let Some(job) = self.jobs.get_mut(&key) {
            if let Stage::Failing {
                message_written, ..
            } = &mut job.stage
            {
                *message_written = written;
            }
            job.attempts = 0;
        }
        self.save(key);
        self.ready.insert(key);
        self.drive(now);
    }

    pub fn handle_failure_reported(&mut self, key: JobKey, outcome: StepOutcome<()>, now: Instant) {
        outcome_job!(self, key);
        if let StepOutcome::Failed { transient, .. } = outcome {
            if self.retry_later(key, "report failure", REPORT_ATTEMPTS, transient, now) {
                self.drive(now);
                return;
            }
            self.commands.push_back(Command::Notice(Notice::GaveUp {
                job: key,
                step: "report failure",
            }));
        }
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.attempts = 0;
        let keep = matches!(job.resource, Resource::Exists(_))
            && !self.config.decommission_launch_failures;
        if matches!(job.resource, Resource::None) || keep {
            self.finish(key);
        } else {
            job.stage = Stage::Decommissioning;
            self.save(key);
            self.ready.insert(key);
        }
        self.drive(now);
    }

    pub fn handle_deleted(&mut self, key: JobKey, outcome: StepOutcome<()>, now: Instant) {
        let job = outcome_job!(self, key);
        match outcome {
            StepOutcome::Done(()) => {
                job.resource = Resource::None;
                self.commands
                    .push_back(Command::Notice(Notice::Decommissioned { job: key }));
                self.finish(key);
            }
            StepOutcome::Failed { .. } => {
                // Never give up on a deletion: a leaked application costs money.
                job.attempts = job.attempts.saturating_add(1);
                let delay = backoff(job.attempts);
                let attempt = job.attempts;
                self.wake_at(key, now + delay);
                self.commands.push_back(Command::Notice(Notice::Retrying {
                    job: key,
                    step: "delete application",
                    attempt,
                    max_attempts: 0,
                    delay,
                }));
            }
        }
        self.drive(now);
    }

    pub fn handle_confirmed(&mut self, key: JobKey, check: ConfirmCheck, now: Instant) {
        outcome_job!(self, key);
        match check {
            ConfirmCheck::Confirmed => self.confirm(key),
            ConfirmCheck::Gone => {
                // Nothing was created before the confirmation.
                self.commands
                    .push_back(Command::Notice(Notice::Withdrawn { job: key }));
                self.finish(key);
            }
            ConfirmCheck::Error => {
                if !self.retry_later(key, "confirm job", REPORT_ATTEMPTS, true, now) {
                    // Without two-phase commit the job already runs on the
                    // coordinator: going on is the only way not to strand it.
                    // With it, the coordinator drops the job and the inner
                    // runner is refused; the status checks then clean up.
                    self.commands.push_back(Command::Notice(Notice::GaveUp {
                        job: key,
                        step: "confirm job",
                    }));
                    self.confirm(key);
                }
            }
        }
        self.drive(now);
    }

    pub(super) fn confirm(&mut self, key: JobKey) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.confirmed = true;
        job.attempts = 0;
        if job.stage == Stage::Queued {
            self.launch_queue.push_back(key);
        }
        self.save(key);
        self.ready.insert(key);
    }

    /// The coordinator says the job is over (cancelled, failed, timed out)
    /// while a step was under way for it: the step's outcome will not come;
    /// whatever was created is deleted.
    pub fn handle_job_over(&mut self, key: JobKey, now: Instant) {
        outcome_job!(self, key);
        self.deployments.remove(&key);
        self.end_job_over(key);
        self.drive(now);
    }

    /// The job is over on the coordinator: whatever was created is deleted.
    pub(super) fn end_job_over(&mut self, key: JobKey) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.attempts = 0;
        self.launch_queue.retain(|queued| *queued != key);
        self.commands
            .push_back(Command::Notice(Notice::Finished { job: key }));
        if matches!(job.resource, Resource::None) {
            self.finish(key);
        } else {
            job.stage = Stage::Decommissioning;
            self.save(key);
            self.ready.insert(key);
        }
    }

    pub(super) fn start_launches(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        while let Some(&key) = self.launch_queue.front() {
            if self.next_launch_at.is_some_and(|at| at > now) {
                break;
            }
            self.launch_queue.pop_front();
            let Some(job) = self.jobs.get_mut(&key) else {
                continue;
            };
            if job.stage != Stage::Queued {
                continue;
            }
            job.stage = Stage::Provisioning;
            if !self.config.min_between_launches.is_zero() {
                self.next_launch_at = Some(now + self.config.min_between_launches);
            }
            self.save(key);
            self.ready.insert(key);
        }
    }

    /// Issues the next command of one job, if any.
    pub(super) fn step(&mut self, key: JobKey, now: Instant) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        if job.busy {
            return;
        }
        // A machine found gone ends the job at once, whatever it waits for
        // (but not while the service stops: the next process sees it too).
        if !(self.shutting_down && job.confirmed) {
            if let Some(app_id) = self.vanished.remove(&key) {
                if self.end_vanished(key, app_id) {
                    return;
                }
            }
        }
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        if job.next_step_at.is_some_and(|at| at > now) {
            return;
        }
        // A job that arrived as the service stops is still confirmed: the
        // coordinator would otherwise drop it if the restart takes longer
        // than its two-phase commit window.
        if self.shutting_down && job.confirmed {
            return;
        }
        if !job.confirmed {
            job.busy = true;
            let command = Command::ConfirmJob {
                job: key,
                token: job.token.clone(),
            };
            self.commands.push_back(command);
            return;
        }
        if job.stage == Stage::Running && self.watch.is_paced() {
            self.step_running(key, now);
            return;
        }
        if let Stage::Launching { since } = job.stage {
            if self.watch.is_paced() && self.defer_first_launch_check(key, since, now) {
                return;
            }
        }
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        let spec = &self.runners[key.runner].spec;
        let command = match &job.stage {
            Stage::Queued => None,
            Stage::Provisioning if matches!(job.resource, Resource::Exists(_)) => {
                // Adopted by a reconciliation: nothing to create.
                job.stage = Stage::Deploying;
                self.save(key);
                self.ready.insert(key);
                return;
            }
            Stage::Provisioning => {
                let flavor = spec.flavors.get(&job.flavor).cloned();
                match flavor {
                    Some(flavor) => {
                        // An earlier attempt (or process) may have created it.
                        let may_exist = matches!(job.resource, Resource::Maybe);
                        job.resource = Resource::Maybe;
                        Some(Command::CreateApp {
                            job: key,
                            name: spec.app_name(key.job_id),
                            flavor,
                            may_exist,
                        })
                    }
                    None => {
                        // The catalogue changed since acquisition.
                        let message = messages::unknown_flavor(
                            &job.flavor,
                            &spec.flavors,
                            spec.max_job_weight(),
                        );
                        self.fail(
                            key,
                            Failure {
                                kind: FailureKind::User,
                                message,
                            },
                        );
                        self.ready.insert(key);
                        return;
                    }
                }
            }
            Stage::Deploying => match job.app_id().map(str::to_owned) {
                Some(app_id) => {
                    let command = self.deploy_command(key, app_id, now);
                    if let Some(job) = self.jobs.get_mut(&key) {
                        job.busy = true;
                    }
                    self.commands.push_back(command);
                    return;
                }
                None => None,
            },
            Stage::Launching { .. } => Some(Command::CheckLaunch {
                job: key,
                project_id: job.project_id,
                own_log_bytes: job.log_bytes,
            }),
            Stage::Running => Some(Command::CheckStatus {
                job: key,
                token: job.token.clone(),
            }),
            Stage::Failing {
                failure,
                message_written,
            } => {
                if *message_written {
                    Some(Command::ReportFailure {
                        job: key,
                        token: job.token.clone(),
                        kind: failure.kind,
                        failure_reasons: job.failure_reasons.clone(),
                    })
                } else {
                    Some(Command::AppendLog {
                        job: key,
                        token: job.token.clone(),
                        text: messages::red_lines(&failure.message),
                    })
                }
            }
            Stage::Decommissioning => {
                if self.config.keep_resources && !job.failed {
                    self.finish(key);
                    return;
                }
                match &job.resource {
                    Resource::None => {
                        self.finish(key);
                        return;
                    }
                    Resource::Maybe | Resource::Exists(_) => Some(Command::DeleteApp {
                        job: key,
                        app_id: job.app_id().map(str::to_owned),
                        name: spec.app_name(key.job_id),
                    }),
                }
            }
        };
        if let Some(command) = command {
            job.busy = true;
            if matches!(command, Command::CreateApp { .. }) {
                // Durable before effective: the record says a creation may be
                // under way before the caller starts it.
                self.save(key);
            }
            self.commands.push_back(command);
        }
    }

    pub(super) fn fail(&mut self, key: JobKey, failure: Failure) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        if !job.failed {
            job.failed = true;
            self.failed_total += 1;
        }
        self.commands.push_back(Command::Notice(Notice::Failed {
            job: key,
            message: failure.message.clone(),
        }));
        job.stage = Stage::Failing {
            failure,
            message_written: false,
        };
        job.attempts = 0;
        self.launch_queue.retain(|queued| *queued != key);
        self.save(key);
    }

    pub(super) fn finish(&mut self, key: JobKey) {
        self.deployments.remove(&key);
        self.exists_since.remove(&key);
        self.vanished.remove(&key);
        self.watch.forget(key);
        if let Some(job) = self.jobs.remove(&key) {
            if let Some(at) = job.next_step_at {
                self.wakeups.remove(&(at, key));
            }
            self.ready.remove(&key);
            self.done_total += 1;
            self.commands.push_back(Command::Forget(key));
        }
    }
}
