//! The seam between paas-runner and a cloud that runs one machine per job.
//!
//! A [`Provider`] is what the driver, `setup` and `reap` know of a cloud:
//! its flavor catalogue, creating (or adopting, by name) the machine of a
//! job, checking that it is ready and deploying it, deleting it by id or by name, and
//! listing what this installation owns. Every call is one IO step with its
//! own timeouts and size limits; every decision (retries, pacing, when to
//! adopt or delete) stays in `paas-core`. Clever Cloud is the first
//! implementation (`paas_clever::provider::CleverProvider`); a new cloud is
//! one crate implementing this trait plus one variant of
//! `paas_config::Executor`.
//!
//! Outcomes are `paas-core` types ([`StepOutcome`], [`App`], [`ListedApp`],
//! [`MachineListing`]): a `user_message` of a failure is what the CI user
//! reads in the job log, so each provider words its own messages.

use std::future::Future;
use std::pin::Pin;

use paas_core::{App, Flavor, FlavorTable, ListedApp, MachineListing, ReadyCheck, StepOutcome};

/// A boxed future: provider calls are made through `dyn Provider`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A failed provider call that is not a job step (catalogue, listing).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    /// The error, for the operator's log.
    pub message: String,
    /// The same call may succeed later.
    pub transient: bool,
}

impl ProviderError {
    pub fn is_transient(&self) -> bool {
        self.transient
    }
}

/// The machine of one job, to create or adopt.
#[derive(Debug, Clone, Copy)]
pub struct CreateRequest<'a> {
    pub job_id: u64,
    /// The deterministic name (`paas_core::naming::app_name`).
    pub name: &'a str,
    pub flavor: &'a Flavor,
    /// A creation may have happened before (`paas_core::Resource::Maybe`):
    /// look for a machine of that name owned by `system_id` first.
    pub may_exist: bool,
    /// This installation's id, written as the machine's owner marker.
    pub system_id: &'a str,
}

/// The provider's credentials work (checked at start).
#[derive(Debug, Clone)]
pub struct Access {
    /// The account they were checked on (for Clever Cloud: the organisation).
    pub account: String,
    /// How many machines the account holds.
    pub machines: usize,
}

/// The provider's credentials did not pass the check at start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AccessError {
    /// They can never work: the operator's message, naming the keys to fix.
    #[error("{0}")]
    Refused(String),
    /// The provider could not say (transient or not).
    #[error(transparent)]
    Failed(ProviderError),
}

/// One cloud, as seen by one `[[runners]]` entry.
pub trait Provider: Send + Sync {
    /// The cloud's name in operators' messages (`Clever Cloud`).
    fn name(&self) -> &'static str;

    /// The flavor catalogue offered to this runner.
    fn flavors(&self) -> BoxFuture<'_, Result<FlavorTable, ProviderError>>;

    /// The operator's message when the catalogue holds no flavor at all.
    fn empty_catalogue_message(&self) -> String;

    /// Creates (or adopts, with `may_exist`) the job's machine, marked as
    /// owned by the installation, with its environment set.
    fn create_or_adopt<'a>(&'a self, request: CreateRequest<'a>)
        -> BoxFuture<'a, StepOutcome<App>>;

    /// Whether the machine can take its job yet: one check (the core
    /// paces the checks and decides when the wait is over). Transient
    /// errors answer [`ReadyCheck::NotYet`].
    fn check_ready<'a>(&'a self, app_id: &'a str) -> BoxFuture<'a, ReadyCheck>;

    /// Hands the job (its payload) to the ready machine at `target` (from
    /// [`ReadyCheck::Ready`]); idempotent.
    fn deploy<'a>(
        &'a self,
        app_id: &'a str,
        target: &'a str,
        payload: &'a str,
    ) -> BoxFuture<'a, StepOutcome<()>>;

    /// Deletes the machine `app_id`, or without it every machine named
    /// `name` that the installation `system_id` owns.
    fn delete<'a>(
        &'a self,
        app_id: Option<&'a str>,
        name: &'a str,
        system_id: &'a str,
    ) -> BoxFuture<'a, StepOutcome<()>>;

    /// The machines named for runner `runner_key` (whoever owns them), each
    /// with its owner as seen by `system_id` and its age; `default_weight`
    /// stands for a machine whose flavor is unknown.
    fn list_owned<'a>(
        &'a self,
        runner_key: &'a str,
        default_weight: f64,
        system_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ListedApp>, ProviderError>>;

    /// The batch signal: which machines' tasks ended
    /// ([`MachineListing::Unsupported`] where the cloud has no listing).
    fn list_machines(&self) -> BoxFuture<'_, MachineListing>;

    /// Checks the credentials at start (`index`: the runner's position in
    /// the file, for the keys a refusal names).
    fn check_access(&self, index: usize) -> BoxFuture<'_, Result<Access, AccessError>>;
}
