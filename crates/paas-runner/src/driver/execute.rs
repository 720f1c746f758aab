//! Command execution: store writes inline, each call as a task of one IO
//! step that reports an [`Event`]. Which call to make, when, and what its
//! outcome means are the core's; the steps themselves are in
//! [`super::coordinator`] (the GitLab side) and [`super::cloud`] (the
//! provider side).

use paas_core::{Command, JobKey, RunnerIdx, Secret};
use paas_store::StoreWrite;

use super::{cloud, coordinator, now, Driver, Event};
use crate::metrics::Step;
use crate::runners::Runners;

impl Driver {
    pub(super) fn execute_commands(&mut self) {
        while let Some(command) = self.core.poll_command() {
            self.execute_in_order(command);
            if self.store_error.is_some() {
                // Nothing after a failed write may happen.
                return;
            }
        }
    }

    pub(super) fn execute(&mut self, command: Command) {
        crate::ha::check_may_act();
        match command {
            Command::Save(record) => self.write(None, StoreWrite::Save(record)),
            Command::Forget(job) => {
                crate::metrics::recorder().job_forgotten((job.runner, job.job_id), now());
                let runner_key = self.runners[job.runner].key.clone();
                let forget = StoreWrite::Forget {
                    runner_key,
                    job_id: job.job_id,
                };
                self.write(Some(job), forget);
            }
            Command::Notice(notice) => self.log_notice(notice),
            Command::RequestJob { runner } => self.spawn_poll(runner),
            Command::RefreshFlavors { runner } => {
                self.spawn(move |runners| cloud::refresh_flavors(runners, runner))
            }
            Command::CreateApp {
                job,
                name,
                flavor,
                may_exist,
            } => {
                self.step_started(job, Step::Create);
                let system_id = self.system_id.clone();
                self.spawn(move |runners| {
                    cloud::create(runners, job, name, flavor, may_exist, system_id)
                });
            }
            Command::CheckReady {
                job,
                app_id,
                timeout,
                first,
            } => {
                if first {
                    self.step_started(job, Step::Deploy);
                }
                self.spawn(move |runners| cloud::check_ready(runners, job, app_id, timeout));
            }
            Command::WatchJob { job, token } => {
                self.spawn(move |runners| coordinator::watch(runners, job, token));
            }
            Command::Deploy {
                job,
                app_id,
                payload,
                target,
            } => {
                self.spawn(move |runners| cloud::deploy(runners, job, app_id, payload, target));
            }
            Command::CheckLaunch {
                job,
                project_id,
                own_log_bytes,
            } => {
                let token = self.job_token(job);
                self.spawn(move |runners| {
                    coordinator::launch(runners, job, project_id, own_log_bytes, token)
                });
            }
            Command::AppendNotice { job, token, text } => {
                self.spawn(move |runners| coordinator::append_notice(runners, job, token, text));
            }
            Command::ConfirmJob { job, token } => {
                self.spawn(move |runners| coordinator::confirm(runners, job, token));
            }
            Command::ListApps { runner } => {
                let default_weight = self.core.runner(runner).max_job_weight();
                let system_id = self.system_id.clone();
                self.spawn(move |runners| {
                    cloud::list_apps(runners, runner, default_weight, system_id)
                });
            }
            Command::ListMachines { runner } => {
                self.spawn(move |runners| cloud::list_machines(runners, runner));
            }
            Command::DeleteOrphan {
                runner,
                app_id,
                name,
                created_ms,
            } => {
                let system_id = self.system_id.clone();
                self.spawn(move |runners| {
                    cloud::delete_orphan(runners, runner, app_id, name, created_ms, system_id)
                });
            }
            Command::CheckStatus { job, token } => {
                self.spawn(move |runners| coordinator::status(runners, job, token));
            }
            Command::AppendLog { job, token, text } => {
                self.spawn(move |runners| coordinator::append_log(runners, job, token, text));
            }
            Command::ReportFailure {
                job,
                token,
                kind,
                failure_reasons,
            } => {
                self.spawn(move |runners| {
                    coordinator::report_failure(runners, job, token, kind, failure_reasons)
                });
            }
            Command::DeleteApp { job, app_id, name } => {
                let system_id = self.system_id.clone();
                self.spawn(move |runners| cloud::delete(runners, job, app_id, name, system_id));
            }
        }
    }

    fn step_started(&self, job: JobKey, step: Step) {
        crate::metrics::recorder().step_started((job.runner, job.job_id), step, now());
    }

    /// The job token of a tracked job (empty if unknown: its checks then
    /// fail harmlessly).
    fn job_token(&self, job: JobKey) -> Secret {
        self.core
            .job(job)
            .map(|job| job.token.clone())
            .unwrap_or_default()
    }

    fn spawn<F, Fut>(&self, task: F)
    where
        F: FnOnce(Runners) -> Fut,
        Fut: std::future::Future<Output = Event> + Send + 'static,
    {
        let future = task(self.runners.clone());
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            let event = future.await;
            let _ = tx.send(event).await;
        });
    }

    fn spawn_poll(&mut self, runner: RunnerIdx) {
        let runners = self.runners.clone();
        let tx = self.events_tx.clone();
        let system_id = self.system_id.clone();
        let last_update = self.last_update[runner].clone();
        let handle = tokio::spawn(async move {
            let event = coordinator::request_job(runners, runner, system_id, last_update).await;
            let _ = tx.send(event).await;
        });
        self.poll_tasks.insert(runner, handle.abort_handle());
    }
}
