//! The harness's trace: what was executed and answered, as text.

use super::*;

impl Harness {
    pub(crate) fn note(&mut self, job: Option<JobKey>, text: String) {
        if self.tracing {
            let at = self.elapsed();
            self.trace.push(TraceLine { at, job, text });
        }
    }

    /// The trace lines of one job, as `<seconds>s <text>`.
    pub fn trace_of(&self, job_id: u64) -> String {
        render(
            self.trace
                .iter()
                .filter(|line| line.job.is_some_and(|key| key.job_id == job_id)),
        )
    }

    /// The lines whose text starts with one of `prefixes`.
    pub fn trace_matching(&self, prefixes: &[&str]) -> String {
        render(self.trace.iter().filter(|line| {
            prefixes
                .iter()
                .any(|prefix| line.text.trim_start().starts_with(prefix))
        }))
    }

    pub fn trace_tail(&self, count: usize) -> String {
        let skip = self.trace.len().saturating_sub(count);
        render(self.trace.iter().skip(skip))
    }

    /// Times (from the start) at which commands starting with `prefix` ran.
    pub fn times_of(&self, prefix: &str) -> Vec<u64> {
        self.trace
            .iter()
            .filter(|line| line.text.starts_with(prefix))
            .map(|line| line.at.as_secs())
            .collect()
    }

    /// Number of side-effect commands of `kind` executed for job `job_id`.
    pub fn count(&self, kind: Kind, job_id: u64) -> u32 {
        self.executed.get(&(kind, job_id)).copied().unwrap_or(0)
    }

    pub fn total(&self, kind: Kind) -> u32 {
        self.executed
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|(_, count)| count)
            .sum()
    }

    /// One line for a command, as traces show it.
    pub fn describe(&self, command: &Command) -> String {
        match command {
            Command::RequestJob { runner } => format!("RequestJob r{runner}"),
            Command::ConfirmJob { job, .. } => format!("ConfirmJob j{}", job.job_id),
            Command::ListApps { runner } => format!("ListApps r{runner}"),
            Command::ListMachines { runner } => format!("ListMachines r{runner}"),
            Command::RefreshFlavors { runner } => format!("RefreshFlavors r{runner}"),
            Command::DeleteOrphan {
                runner,
                app_id,
                name,
                ..
            } => format!("DeleteOrphan r{runner} {app_id} {name}"),
            Command::Save(record) => format!("Save j{} {}", record.job_id, describe_record(record)),
            Command::Forget(key) => format!("Forget j{}", key.job_id),
            Command::CreateApp {
                job, name, flavor, ..
            } => {
                format!("CreateApp j{} {name} {}", job.job_id, flavor.api_name)
            }
            Command::Deploy { job, app_id, .. } => format!("Deploy j{} {app_id}", job.job_id),
            Command::CheckReady { job, app_id, .. } => {
                format!("CheckReady j{} {app_id}", job.job_id)
            }
            Command::WatchJob { job, .. } => format!("WatchJob j{}", job.job_id),
            Command::CheckLaunch { job, .. } => format!("CheckLaunch j{}", job.job_id),
            Command::CheckStatus { job, .. } => format!("CheckStatus j{}", job.job_id),
            Command::AppendLog { job, text, .. } => format!("AppendLog j{} {text:?}", job.job_id),
            Command::AppendNotice { job, .. } => format!("AppendNotice j{}", job.job_id),
            Command::ReportFailure { job, kind, .. } => {
                format!("ReportFailure j{} {kind:?}", job.job_id)
            }
            Command::DeleteApp { job, app_id, name } => match app_id {
                Some(id) => format!("DeleteApp j{} {id}", job.job_id),
                None => format!("DeleteApp j{} name={name}", job.job_id),
            },
            Command::Notice(notice) => describe_notice(notice),
        }
    }
}
pub(crate) fn render<'a>(lines: impl Iterator<Item = &'a TraceLine>) -> String {
    let mut out = String::new();
    for line in lines {
        let _ = writeln!(out, "{}s {}", line.at.as_secs(), line.text);
    }
    out
}

pub(crate) fn step_outcome(fault: Option<Fault>, message: &str) -> StepOutcome<()> {
    match fault {
        None => StepOutcome::Done(()),
        Some(fault) => StepOutcome::Failed {
            transient: fault.transient(),
            user_message: message.to_owned(),
        },
    }
}

/// The answer to a write to the job on the model coordinator (a log
/// append, a failure report): `write` runs when it takes effect, and a
/// write the coordinator refuses (the job is over) fails for good.
pub(crate) fn write_outcome(fault: Option<Fault>, write: impl FnOnce() -> bool) -> StepOutcome<()> {
    if fault.is_none_or(Fault::effect) && !write() && fault.is_none() {
        return StepOutcome::Failed {
            transient: false,
            user_message: "job is not running (403)".to_owned(),
        };
    }
    step_outcome(fault, "coordinator unavailable")
}

pub(crate) fn describe_record(record: &JobRecord) -> String {
    let mut text = record.stage.as_str().to_owned();
    if record.stage == StageRecord::Failing {
        let kind = record
            .failure_kind
            .map_or("?".to_owned(), |kind| format!("{kind:?}"));
        let written = if record.message_written {
            "written"
        } else {
            "unwritten"
        };
        let _ = write!(text, " {kind} {written}");
    }
    if let Some(id) = &record.app_id {
        let _ = write!(text, " {id}");
    } else if record.app_maybe {
        text.push_str(" maybe");
    }
    if !record.confirmed {
        text.push_str(" unconfirmed");
    }
    text
}

pub(crate) fn describe_notice(notice: &Notice) -> String {
    match notice {
        Notice::Acquired {
            job,
            flavor,
            weight,
        } => {
            format!("Notice acquired j{} {flavor} {weight:.2}", job.job_id)
        }
        Notice::Launched { job } => format!("Notice launched j{}", job.job_id),
        Notice::Finished { job } => format!("Notice finished j{}", job.job_id),
        Notice::Failed { job, .. } => format!("Notice failed j{}", job.job_id),
        Notice::Retrying {
            job,
            step,
            attempt,
            max_attempts,
            delay,
        } => format!(
            "Notice retrying j{} {step} attempt {attempt}/{max_attempts} in {}s",
            job.job_id,
            delay.as_secs()
        ),
        Notice::Decommissioned { job } => format!("Notice decommissioned j{}", job.job_id),
        Notice::GaveUp { job, step } => format!("Notice gave up j{} {step}", job.job_id),
        Notice::Withdrawn { job } => format!("Notice withdrawn j{}", job.job_id),
        Notice::Adopted { job, app_id } => format!("Notice adopted j{} {app_id}", job.job_id),
        Notice::Orphan {
            runner,
            app_id,
            name,
        } => format!("Notice orphan r{runner} {app_id} {name}"),
        Notice::Foreign {
            runner,
            app_id,
            name,
            owner,
            age,
        } => format!(
            "Notice foreign r{runner} {app_id} {name} {owner:?} age={}",
            age.map_or_else(|| "?".to_owned(), |age| format!("{}s", age.as_secs()))
        ),
        Notice::MachineVanished { job, app_id } => {
            format!("Notice vanished j{} {app_id}", job.job_id)
        }
        Notice::NotReady { job, .. } => format!("Notice not ready j{}", job.job_id),
    }
}

pub(crate) fn describe_step<T>(outcome: &StepOutcome<T>, done: &str, failed: &str) -> String {
    match outcome {
        StepOutcome::Done(_) => done.to_owned(),
        StepOutcome::Failed {
            transient: true, ..
        } => format!("{failed} (transient)"),
        StepOutcome::Failed {
            transient: false, ..
        } => format!("{failed} (permanent)"),
    }
}

/// A step's answer for job `key`, as traces show it.
pub(crate) fn describe_job_step<T>(
    key: &JobKey,
    outcome: &StepOutcome<T>,
    done: &str,
    failed: &str,
) -> (Option<JobKey>, String) {
    (
        Some(*key),
        format!("j{} {}", key.job_id, describe_step(outcome, done, failed)),
    )
}

pub(crate) fn describe_outcome(outcome: &Outcome) -> (Option<JobKey>, String) {
    match outcome {
        Outcome::Flavors(runner, table) => (
            None,
            format!("r{runner} flavors: {}", table.names_by_weight().join(" ")),
        ),
        Outcome::Noticed(key, length) => (
            Some(*key),
            format!("j{} notice written: {length:?}", key.job_id),
        ),
        Outcome::Poll(runner, poll) => match poll {
            PollOutcome::Job(job) => (
                Some(JobKey {
                    runner: *runner,
                    job_id: job.job_id,
                }),
                format!("r{runner} job j{}", job.job_id),
            ),
            PollOutcome::NoJob => (None, format!("r{runner} no job")),
            PollOutcome::NoJobPollAgain => (None, format!("r{runner} no job, held next")),
            PollOutcome::Error { transient } => {
                (None, format!("r{runner} error (transient: {transient})"))
            }
            PollOutcome::Cancelled => (None, format!("r{runner} cancelled")),
            PollOutcome::JobTooLarge { job_id, .. } => (
                Some(JobKey {
                    runner: *runner,
                    job_id: *job_id,
                }),
                format!("r{runner} job j{job_id} too large"),
            ),
        },
        Outcome::Confirmed(key, check) => {
            (Some(*key), format!("j{} confirm {check:?}", key.job_id))
        }
        Outcome::JobOver(key) => (Some(*key), format!("j{} job over", key.job_id)),
        Outcome::AppList(runner, apps) => (
            None,
            match apps {
                None => format!("r{runner} listing failed"),
                Some(apps) => {
                    let ids: Vec<&str> = apps.iter().map(|app| app.id.as_str()).collect();
                    format!("r{runner} apps {ids:?}")
                }
            },
        ),
        Outcome::Machines(runner, listing) => (None, format!("r{runner} machines {listing:?}")),
        Outcome::OrphanDeleted(app_id, deleted) => (
            None,
            if *deleted {
                format!("{app_id} deleted")
            } else {
                format!("{app_id} delete failed")
            },
        ),
        Outcome::LateCreate(create) => (
            Some(create.job),
            format!(
                "j{} creation landed late: {}",
                create.job.job_id, create.name
            ),
        ),
        Outcome::Created(key, StepOutcome::Done(app)) => {
            (Some(*key), format!("j{} created {}", key.job_id, app.id))
        }
        Outcome::Created(key, failed) => describe_job_step(key, failed, "", "create failed"),
        Outcome::Deployed(key, outcome) => {
            describe_job_step(key, outcome, "deployed", "deploy failed")
        }
        Outcome::Ready(key, check) => (
            Some(*key),
            match check {
                ReadyCheck::Ready { .. } => format!("j{} ready", key.job_id),
                ReadyCheck::NotYet => format!("j{} not ready", key.job_id),
                ReadyCheck::Failed { .. } => format!("j{} readiness failed", key.job_id),
            },
        ),
        Outcome::Watched(key, over) => (
            Some(*key),
            if *over {
                format!("j{} job over", key.job_id)
            } else {
                format!("j{} job on", key.job_id)
            },
        ),
        Outcome::Launch(key, check) => (Some(*key), format!("j{} launch {check:?}", key.job_id)),
        Outcome::Status(key, check) => (Some(*key), format!("j{} status {check:?}", key.job_id)),
        Outcome::Appended(key, outcome) => {
            describe_job_step(key, outcome, "log appended", "log append failed")
        }
        Outcome::Reported(key, outcome) => {
            describe_job_step(key, outcome, "failure reported", "report failed")
        }
        Outcome::Deleted(key, outcome) => {
            describe_job_step(key, outcome, "deleted", "delete failed")
        }
    }
}

/// The job a command is about.
pub fn command_job(command: &Command) -> Option<JobKey> {
    match command {
        Command::RequestJob { .. }
        | Command::ListApps { .. }
        | Command::ListMachines { .. }
        | Command::RefreshFlavors { .. }
        | Command::DeleteOrphan { .. } => None,
        Command::Save(record) => {
            // Runner keys are `runner-<idx>`.
            let runner = record
                .runner_key
                .strip_prefix("runner-")
                .and_then(|idx| idx.parse().ok())?;
            Some(JobKey {
                runner,
                job_id: record.job_id,
            })
        }
        Command::Forget(key) => Some(*key),
        Command::ConfirmJob { job, .. }
        | Command::CreateApp { job, .. }
        | Command::Deploy { job, .. }
        | Command::CheckReady { job, .. }
        | Command::WatchJob { job, .. }
        | Command::CheckLaunch { job, .. }
        | Command::CheckStatus { job, .. }
        | Command::AppendLog { job, .. }
        | Command::AppendNotice { job, .. }
        | Command::ReportFailure { job, .. }
        | Command::DeleteApp { job, .. } => Some(*job),
        Command::Notice(notice) => Some(match notice {
            Notice::Acquired { job, .. }
            | Notice::Launched { job }
            | Notice::Finished { job }
            | Notice::Failed { job, .. }
            | Notice::Retrying { job, .. }
            | Notice::Decommissioned { job }
            | Notice::GaveUp { job, .. }
            | Notice::Withdrawn { job }
            | Notice::Adopted { job, .. }
            | Notice::MachineVanished { job, .. }
            | Notice::NotReady { job, .. } => *job,
            Notice::Orphan { .. } | Notice::Foreign { .. } => return None,
        }),
    }
}

/// The kind of a command that has an outcome.
pub fn command_kind(command: &Command) -> Option<Kind> {
    Some(match command {
        Command::RequestJob { .. } => Kind::Poll,
        Command::ConfirmJob { .. } => Kind::Confirm,
        Command::ListApps { .. }
        | Command::ListMachines { .. }
        | Command::RefreshFlavors { .. } => Kind::List,
        Command::DeleteOrphan { .. } => Kind::DeleteOrphan,
        Command::CreateApp { .. } => Kind::Create,
        Command::Deploy { .. } => Kind::Deploy,
        Command::CheckReady { .. } => Kind::Ready,
        Command::WatchJob { .. } => Kind::Watch,
        Command::CheckLaunch { .. } => Kind::CheckLaunch,
        Command::CheckStatus { .. } => Kind::CheckStatus,
        Command::AppendLog { .. } | Command::AppendNotice { .. } => Kind::AppendLog,
        Command::ReportFailure { .. } => Kind::ReportFailure,
        Command::DeleteApp { .. } => Kind::Delete,
        Command::Save(_) | Command::Forget(_) | Command::Notice(_) => return None,
    })
}

/// Commands that act on the outside world (not records or notices).
pub fn has_effect(command: &Command) -> bool {
    command_kind(command).is_some()
}
