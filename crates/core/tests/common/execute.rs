//! The harness as the driver: each command executed against the models,
//! its answer delivered when due.

use super::*;

impl Harness {
    pub(crate) fn execute(&mut self, command: Command) {
        let command = match self.replicas.is_some() {
            true => match self.replica_gate(command) {
                Some(command) => command,
                None => return,
            },
            false => command,
        };
        let description = self.describe(&command);
        let job = command_job(&command);
        // Confirming a job that arrived as the service stops is allowed: it
        // keeps the coordinator from dropping it during a slow restart.
        let confirm = matches!(command, Command::ConfirmJob { .. });
        if self.shutting_down && has_effect(&command) && !confirm && !self.releasing_held {
            self.violation(format!("command after shutdown(): {description}"));
        }
        if let (Some(key), Some(kind)) = (job, command_kind(&command)) {
            // Nothing is created, written or reported for a job before the
            // coordinator confirmed it is ours (or confirming was given up).
            if kind != Kind::Confirm && kind != Kind::DeleteOrphan && !self.cleared.contains(&key) {
                self.violation(format!("before the job was confirmed: {description}"));
            }
        }
        if let Some(kind) = command_kind(&command) {
            if kind != Kind::Poll {
                let job_id = job.map_or(0, |key| key.job_id);
                *self.executed.entry((kind, job_id)).or_default() += 1;
            }
        }
        self.note(job, description);
        let now = self.now;
        match command {
            Command::Save(record) => self.apply_save(record),
            Command::Forget(key) => {
                self.store.remove(&(runner_key(key.runner), key.job_id));
            }
            Command::Notice(notice) => {
                if let Notice::GaveUp {
                    job,
                    step: "confirm job",
                } = notice
                {
                    self.cleared.insert(job);
                }
                if let Notice::MachineVanished { job, app_id } = &notice {
                    // Only a machine really gone may end its job.
                    if self.cloud.apps.contains_key(app_id) {
                        self.violation(format!(
                            "j{} failed as vanished although {app_id} exists",
                            job.job_id
                        ));
                    }
                }
                let at = self.elapsed();
                self.notices.push((at, notice));
            }
            Command::ConfirmJob { job, .. } => {
                let check = match self.fault(Kind::Confirm, job) {
                    Some(fault) => {
                        if fault.effect() {
                            self.coordinator.confirm(job, now);
                        }
                        ConfirmCheck::Error
                    }
                    None => self.coordinator.confirm(job, now),
                };
                self.schedule(Kind::Confirm, Outcome::Confirmed(job, check));
            }
            Command::ListApps { runner } => {
                let list_key = JobKey {
                    runner,
                    job_id: u64::MAX,
                };
                let apps = match self.fault(Kind::List, list_key) {
                    Some(_) => None,
                    None => {
                        let prefix = format!("hpd-job-{}-", self.runners[runner].key);
                        Some(self.cloud.list(&prefix, self.start, now))
                    }
                };
                self.schedule(Kind::List, Outcome::AppList(runner, apps));
            }
            Command::ListMachines { runner } => {
                let list_key = JobKey {
                    runner,
                    job_id: u64::MAX - 1,
                };
                let listing = if !self.machine_listing {
                    MachineListing::Unsupported
                } else if self.fault(Kind::List, list_key).is_some() {
                    MachineListing::Failed
                } else {
                    // A machine's task ends with its job (the inner runner
                    // exits after its final update; a cancel stops it).
                    let ended = self
                        .cloud
                        .apps
                        .values()
                        .filter(|app| app.job.runner == runner && app.pushed)
                        .filter(|app| {
                            self.machine_listing_lies
                                || self
                                    .coordinator
                                    .jobs
                                    .get(&app.job)
                                    .is_some_and(|job| job.state.is_over())
                        })
                        .map(|app| app.id.clone())
                        .collect();
                    MachineListing::Listed { ended }
                };
                self.schedule(Kind::List, Outcome::Machines(runner, listing));
            }
            Command::DeleteOrphan {
                runner,
                app_id,
                name,
                ..
            } => {
                let owner = self
                    .dispatcher
                    .jobs()
                    .find(|job| job.app_id() == Some(app_id.as_str()))
                    .map(|job| job.key.job_id);
                if let Some(job_id) = owner {
                    self.violation(format!(
                        "orphan deletion of {app_id}, the application of tracked j{job_id}"
                    ));
                }
                if !name.starts_with(&format!("hpd-job-{}-", self.runners[runner].key)) {
                    self.violation(format!("orphan {name} deleted for runner {runner}"));
                }
                let listed_app = self.cloud.apps.get(&app_id).map(|app| {
                    (
                        app.owner.clone(),
                        now.saturating_duration_since(app.created_at),
                    )
                });
                if let Some((owner, age)) = listed_app {
                    if owner != AppOwner::Ours {
                        self.violation(format!(
                            "orphan deletion of {app_id}, an application of {owner:?}"
                        ));
                    }
                    if age < self.config.orphan_min_age {
                        self.violation(format!(
                            "orphan deletion of {app_id} aged {age:?}, under the minimum age"
                        ));
                    }
                }
                let orphan_key = JobKey {
                    runner,
                    job_id: name
                        .rsplit('-')
                        .next()
                        .and_then(|id| id.parse().ok())
                        .unwrap_or(u64::MAX),
                };
                if self.orphan_failed_at.get(&app_id) == Some(&now) {
                    // A failed deletion waits for the next reconciliation.
                    self.violation(format!(
                        "orphan deletion of {app_id} retried at once after a failure"
                    ));
                }
                let fault = self.fault(Kind::DeleteOrphan, orphan_key);
                if fault.is_none_or(Fault::effect) {
                    // Deleting what is gone already succeeds (404).
                    if let Some(app) = self.cloud.apps.remove(&app_id) {
                        self.cloud.deletions += 1;
                        self.cloud.orphan_deletions += 1;
                        self.coordinator.kill(app.job, &app.id);
                    }
                }
                self.schedule(
                    Kind::DeleteOrphan,
                    Outcome::OrphanDeleted(app_id, fault.is_none()),
                );
            }
            Command::RefreshFlavors { runner } => {
                let table = self.dispatcher.runner(runner).flavors.clone();
                self.schedule(Kind::List, Outcome::Flavors(runner, table));
            }
            Command::RequestJob { runner } => {
                self.check_poll_room();
                let poll_key = JobKey {
                    runner,
                    job_id: u64::MAX,
                };
                let outcome = match self.fault(Kind::Poll, poll_key) {
                    Some(fault) => PollOutcome::Error {
                        transient: fault.transient(),
                    },
                    None => match self.coordinator.take(runner, now) {
                        Some(job) if self.coordinator.job(job.job_id).spec.too_large => {
                            PollOutcome::JobTooLarge {
                                job_id: job.job_id,
                                token: job.token,
                                limit_bytes: 16 << 20,
                            }
                        }
                        Some(job) => PollOutcome::Job(job),
                        None => PollOutcome::NoJob,
                    },
                };
                self.schedule(Kind::Poll, Outcome::Poll(runner, outcome));
            }
            Command::CreateApp {
                job,
                name,
                flavor,
                may_exist,
            } => {
                let fault = self.fault(Kind::Create, job);
                let app = (fault.is_none_or(Fault::effect))
                    .then(|| self.cloud.create(&name, job, &flavor, may_exist, now));
                let late = app.is_none().then(|| LateCreate {
                    job,
                    name: name.clone(),
                    flavor: flavor.clone(),
                });
                let outcome = match (fault, app) {
                    (None, Some(app)) => StepOutcome::Done(app),
                    (Some(fault), _) if fault.transient() => StepOutcome::Failed {
                        transient: true,
                        user_message: "Clever Cloud API unavailable (503) while creating the application".to_owned(),
                    },
                    _ => StepOutcome::Failed {
                        transient: false,
                        user_message: "Clever Cloud refused to create the application: organisation quota reached"
                            .to_owned(),
                    },
                };
                self.schedule_with(Kind::Create, Outcome::Created(job, outcome), late);
            }
            Command::CheckReady { job, app_id, .. } => {
                let check = match (
                    self.fault(Kind::Ready, job),
                    self.cloud.is_ready(&app_id, now),
                ) {
                    (_, None) => {
                        if !self.vanished_apps.contains(&app_id) {
                            self.violation(format!(
                                "readiness check of j{} on missing application {app_id}",
                                job.job_id
                            ));
                        }
                        ReadyCheck::Failed {
                            user_message: "application not found".to_owned(),
                        }
                    }
                    (Some(fault), _) if fault.transient() => ReadyCheck::NotYet,
                    (Some(_), _) => ReadyCheck::Failed {
                        user_message: "cannot read the application".to_owned(),
                    },
                    (None, Some(true)) => ReadyCheck::Ready {
                        target: format!("git+{app_id}"),
                    },
                    (None, Some(false)) => ReadyCheck::NotYet,
                };
                self.schedule(Kind::Ready, Outcome::Ready(job, check));
            }
            Command::WatchJob { job, .. } => {
                let over = match self.fault(Kind::Watch, job) {
                    Some(_) => false,
                    None => self.coordinator.jobs[&job].state.is_over(),
                };
                self.schedule(Kind::Watch, Outcome::Watched(job, over));
            }
            Command::Deploy { job, app_id, .. } => {
                let fault = self.fault(Kind::Deploy, job);
                let mut outcome = step_outcome(fault, "git push to the application failed");
                if fault.is_none_or(Fault::effect) {
                    match self.cloud.push(&app_id) {
                        None => {
                            self.cloud.deploys_to_missing_app += 1;
                            if !self.vanished_apps.contains(&app_id) {
                                self.violation(format!(
                                    "deploy of j{} to missing application {app_id}",
                                    job.job_id
                                ));
                            }
                            outcome = StepOutcome::Failed {
                                transient: false,
                                user_message: "application not found".to_owned(),
                            };
                        }
                        Some(true) => self.coordinator.push(job, &app_id, now),
                        Some(false) => {}
                    }
                }
                self.schedule(Kind::Deploy, Outcome::Deployed(job, outcome));
            }
            Command::CheckLaunch { job, .. } => {
                let check = match self.fault(Kind::CheckLaunch, job) {
                    Some(_) => LaunchCheck::NotYet,
                    None => self.coordinator.launch_check(job),
                };
                self.schedule(Kind::CheckLaunch, Outcome::Launch(job, check));
            }
            Command::CheckStatus { job, .. } => {
                let check = match self.fault(Kind::CheckStatus, job) {
                    Some(_) => StatusCheck::Error,
                    None => self.coordinator.status(job),
                };
                self.schedule(Kind::CheckStatus, Outcome::Status(job, check));
            }
            Command::AppendNotice { job, text, .. } => {
                // Notices are informative: the model log does not keep them.
                let fault = self.fault(Kind::AppendLog, job);
                let length = fault.is_none().then_some(text.len() as u64);
                self.schedule(Kind::AppendLog, Outcome::Noticed(job, length));
            }
            Command::AppendLog { job, text, .. } => {
                let fault = self.fault(Kind::AppendLog, job);
                let outcome = write_outcome(fault, || self.coordinator.append(job, &text));
                self.schedule(Kind::AppendLog, Outcome::Appended(job, outcome));
            }
            Command::ReportFailure { job, kind, .. } => {
                let fault = self.fault(Kind::ReportFailure, job);
                let outcome = write_outcome(fault, || self.coordinator.report_failure(job, kind));
                self.schedule(Kind::ReportFailure, Outcome::Reported(job, outcome));
            }
            Command::DeleteApp { job, app_id, name } => {
                let fault = self.fault(Kind::Delete, job);
                if fault.is_none_or(Fault::effect) {
                    for app in self.cloud.delete(app_id.as_deref(), &name) {
                        self.coordinator.kill(app.job, &app.id);
                    }
                }
                let outcome = step_outcome(fault, "Clever Cloud API unavailable (503)");
                self.schedule(Kind::Delete, Outcome::Deleted(job, outcome));
            }
        }
    }

    /// A record reaches the store.
    pub(crate) fn apply_save(&mut self, record: JobRecord) {
        if let Some(runner) = self.runner_of_key(&record.runner_key) {
            self.saved.insert(JobKey {
                runner,
                job_id: record.job_id,
            });
        }
        self.store
            .insert((record.runner_key.clone(), record.job_id), record);
    }

    /// Whether this command fails, and how.
    pub(crate) fn fault(&mut self, kind: Kind, key: JobKey) -> Option<Fault> {
        let fault = self.pick_fault(kind, key);
        self.faults_injected += u64::from(fault.is_some());
        fault
    }

    pub(crate) fn pick_fault(&mut self, kind: Kind, key: JobKey) -> Option<Fault> {
        if let Some(script) = self.faults.script.get_mut(&kind) {
            if let Some(scripted) = script.pop_front() {
                return scripted;
            }
        }
        let transient_rate = self
            .faults
            .transient_rate
            .get(&kind)
            .copied()
            .unwrap_or(0.0);
        let permanent_rate = self
            .faults
            .permanent_rate
            .get(&kind)
            .copied()
            .unwrap_or(0.0);
        if transient_rate == 0.0 && permanent_rate == 0.0 {
            return None;
        }
        let consecutive = self.consecutive_faults.entry((kind, key)).or_default();
        let cap = self
            .faults
            .max_consecutive
            .get(&kind)
            .copied()
            .unwrap_or(u32::MAX);
        let roll: f64 = self.rng.gen();
        let fault = if *consecutive >= cap {
            None
        } else if roll < permanent_rate {
            Some(Fault::Permanent {
                effect: self.rng.gen_bool(0.5),
            })
        } else if roll < permanent_rate + transient_rate {
            Some(Fault::Transient {
                effect: self.rng.gen_bool(0.5),
            })
        } else {
            None
        };
        let consecutive = self.consecutive_faults.entry((kind, key)).or_default();
        *consecutive = if fault.is_some() { *consecutive + 1 } else { 0 };
        fault
    }

    pub(crate) fn schedule(&mut self, kind: Kind, outcome: Outcome) {
        self.schedule_with(kind, outcome, None);
    }

    pub(crate) fn schedule_with(&mut self, kind: Kind, outcome: Outcome, late: Option<LateCreate>) {
        let mut delay = self.delays.fixed.get(&kind).copied().unwrap_or_default();
        if let Some(max) = self.delays.random_max {
            let max_ms = max.as_millis() as u64;
            delay += Duration::from_millis(self.rng.gen_range(0..=max_ms));
        }
        self.seq += 1;
        self.in_flight.push(InFlight {
            at: self.now + delay,
            seq: self.seq,
            outcome,
            late,
        });
    }

    pub(crate) fn deliver(&mut self, outcome: Outcome) {
        let now = self.now;
        let (job, text) = describe_outcome(&outcome);
        self.note(job, format!("  <- {text}"));
        match outcome {
            Outcome::Poll(runner, outcome) => {
                let delivered_id = match &outcome {
                    PollOutcome::Job(job) => Some(job.job_id),
                    PollOutcome::JobTooLarge { job_id, .. } => Some(*job_id),
                    _ => None,
                };
                if let Some(job_id) = delivered_id {
                    let key = JobKey { runner, job_id };
                    self.delivered.insert(key);
                    self.delivered_at.entry(key).or_insert(now);
                }
                // A coordinator that answers at once, as Rails does without
                // Workhorse long polling.
                let answer = PollAnswer {
                    from_rails: true,
                    held: Duration::ZERO,
                };
                self.dispatcher
                    .handle_poll_answer(runner, outcome, answer, now);
            }
            Outcome::Flavors(runner, table) => self.dispatcher.handle_flavors(runner, table, now),
            Outcome::Confirmed(key, check) => {
                match check {
                    ConfirmCheck::Confirmed => {
                        self.cleared.insert(key);
                    }
                    ConfirmCheck::Error => *self.confirm_errors.entry(key).or_default() += 1,
                    ConfirmCheck::Gone => {}
                }
                self.dispatcher.handle_confirmed(key, check, now);
            }
            Outcome::JobOver(key) => {
                self.job_overs += 1;
                self.dispatcher.handle_job_over(key, now);
            }
            Outcome::Machines(runner, listing) => {
                self.machine_listings += 1;
                self.dispatcher.handle_machines(runner, listing, now);
            }
            Outcome::AppList(runner, apps) => {
                match &apps {
                    Some(apps) => self.listed.extend(apps.iter().map(|app| app.id.clone())),
                    None => {
                        self.failed_listings.insert(runner);
                    }
                }
                self.dispatcher.handle_app_list(runner, apps, now);
            }
            Outcome::OrphanDeleted(app_id, deleted) => {
                if !deleted {
                    self.orphan_failed_at.insert(app_id.clone(), now);
                }
                self.dispatcher.handle_orphan_deleted(&app_id, deleted, now);
            }
            Outcome::LateCreate(create) => {
                self.late_creations += 1;
                // Created without looking for the name: the request was
                // sent before the job's other steps.
                self.cloud
                    .insert_stray(&create.name, create.job, &create.flavor, now, true);
            }
            Outcome::Created(key, outcome) => self.dispatcher.handle_created(key, outcome, now),
            Outcome::Deployed(key, outcome) => self.dispatcher.handle_deployed(key, outcome, now),
            Outcome::Ready(key, check) => self.dispatcher.handle_ready(key, check, now),
            Outcome::Watched(key, over) => {
                if over {
                    self.job_overs += 1;
                }
                self.dispatcher.handle_job_watch(key, over, now)
            }
            Outcome::Launch(key, check) => self.dispatcher.handle_launch_check(key, check, now),
            Outcome::Status(key, check) => self.dispatcher.handle_status(key, check, now),
            Outcome::Appended(key, outcome) => {
                self.dispatcher.handle_log_appended(key, outcome, now)
            }
            Outcome::Reported(key, outcome) => {
                self.dispatcher.handle_failure_reported(key, outcome, now)
            }
            Outcome::Deleted(key, outcome) => self.dispatcher.handle_deleted(key, outcome, now),
            Outcome::Noticed(key, length) => {
                self.dispatcher.handle_notice_written(key, length, now)
            }
        }
    }

    pub(crate) fn runner_of_key(&self, key: &str) -> Option<RunnerIdx> {
        self.runners.iter().position(|runner| runner.key == key)
    }

    // ----- invariants -----
}
