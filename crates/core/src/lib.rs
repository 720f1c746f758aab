//! Sans-IO core of paas-runner: every decision, no IO, no clock, no randomness.
//!
//! The [`Dispatcher`] is fed events (`handle_*`) with the current time and
//! returns [`Command`]s; the binary's driver executes them and feeds back
//! their outcomes. This crate depends on no async runtime, HTTP client,
//! filesystem or clock.

pub mod dispatcher;
pub mod flavor;
pub mod job;
pub mod lease;
pub mod messages;
pub mod naming;
pub mod record;
pub mod sanitize;
pub mod secret;

pub use dispatcher::reload::{ReloadSummary, RunnerChange, RunnerUpdate};
pub use dispatcher::{
    backoff, Command, ConfirmCheck, Dispatcher, DispatcherConfig, LaunchCheck, LaunchWatch,
    ListedApp, LongPolling, MachineListing, Notice, OrphanVerdict, PollAnswer, PollHold,
    PollOutcome, RunnerSpec, Stats, StatusCheck, StepOutcome, TrackedApps, WatchConfig,
    FLAVOR_REFRESH, LAST_CHECK_GRACE, MIN_DEPLOY_WATCH, MIN_READY_STEP,
};
pub use dispatcher::{ReadyCheck, ReadyWait};
pub use flavor::{weight_of_ram_mib, Flavor, FlavorTable};
pub use job::{App, Failure, FailureKind, Job, JobKey, NewJob, Resource, RunnerIdx, Stage};
pub use lease::{GuardAction, LeaseGuard, LeaseLost, LeaseTiming, Renewal};
pub use naming::AppOwner;
pub use record::{JobRecord, StageRecord};
pub use sanitize::{sanitize, sanitize_bytes};
pub use secret::Secret;
