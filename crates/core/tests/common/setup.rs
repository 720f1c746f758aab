//! What a [`Harness`] is built from.

use super::*;

/// An application left in the cloud before the run (by an earlier process
/// whose records are lost): runner, job id, flavor.
#[derive(Debug, Clone)]
pub struct Leftover {
    pub runner: RunnerIdx,
    pub job_id: u64,
    pub flavor: String,
}

/// Everything needed to build a [`Harness`].
#[derive(Debug, Clone)]
pub struct Setup {
    pub config: DispatcherConfig,
    pub runners: Vec<RunnerSpec>,
    pub jobs: Vec<JobSpec>,
    pub faults: Faults,
    pub delays: Delays,
    pub seed: u64,
    pub label: String,
    /// The model coordinator's two-phase commit window.
    pub confirm_window: Duration,
    /// Tell the dispatcher when a job is over while its creation is under
    /// way (`handle_job_over`): the step's answer is then never delivered.
    pub job_over_watch: bool,
    /// How long a new application takes to be ready for its job.
    pub ready_after: Duration,
    /// Chance that a creation dropped that way, which had not taken effect
    /// yet, lands later all the same (when its answer was due).
    pub late_create_rate: f64,
    pub leftovers: Vec<Leftover>,
    /// Watch launched jobs under this policy (`Dispatcher::set_watch`).
    pub watch: Option<WatchConfig>,
    /// The model cloud answers machine listings (else: unsupported).
    pub machine_listing: bool,
    /// Its listings say every deployed machine ended (a cloud whose states
    /// do not mean what the dispatcher assumes).
    pub machine_listing_lies: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup::new()
    }
}

impl Setup {
    /// One runner, the default settings, no job.
    pub fn new() -> Setup {
        Setup {
            config: config(),
            runners: vec![runner_spec(0)],
            jobs: Vec::new(),
            faults: Faults::default(),
            delays: Delays::default(),
            seed: 0,
            label: "scenario".to_owned(),
            confirm_window: CONFIRM_WINDOW,
            job_over_watch: false,
            ready_after: Duration::ZERO,
            late_create_rate: 0.0,
            leftovers: Vec::new(),
            watch: None,
            machine_listing: true,
            machine_listing_lies: false,
        }
    }

    /// Reconciliation every [`RECONCILE_INTERVAL`].
    pub fn reconciling(mut self) -> Setup {
        self.config.reconcile_interval = RECONCILE_INTERVAL;
        self
    }

    pub fn leftover(mut self, runner: RunnerIdx, job_id: u64, flavor: &str) -> Setup {
        self.leftovers.push(Leftover {
            runner,
            job_id,
            flavor: flavor.to_owned(),
        });
        self
    }

    pub fn job(mut self, spec: JobSpec) -> Setup {
        self.jobs.push(spec);
        self
    }

    pub fn jobs(mut self, count: usize, spec: JobSpec) -> Setup {
        self.jobs.extend(std::iter::repeat_n(spec, count));
        self
    }

    /// Commands of `kind` take `delay` to answer.
    pub fn delay(mut self, kind: Kind, delay: Duration) -> Setup {
        self.delays.fixed.insert(kind, delay);
        self
    }

    /// See [`Faults::script`].
    pub fn script(
        mut self,
        kind: Kind,
        outcomes: impl IntoIterator<Item = Option<Fault>>,
    ) -> Setup {
        self.faults.script(kind, outcomes);
        self
    }

    pub fn build(self) -> Harness {
        Harness::new(self)
    }

    /// Builds the harness and drives it until settled
    /// ([`Harness::drive`]), then asserts the final invariants.
    pub fn run(self) -> Harness {
        let mut harness = self.build();
        harness.drive();
        harness.assert_final();
        harness
    }
}
