//! Simulators of a GitLab coordinator and of Clever Cloud, speaking real HTTP
//! on loopback, for the demo, the tests, the benchmarks and capacity planning.

pub mod clever;
pub mod cluster;
pub mod coordinator;
/// The deployment repositories (now under [`clever`]; kept at this path).
pub use clever::git_http;
/// The simulated machines (now [`clever::machines`]; kept at this path).
pub use clever::machines as vm;
pub mod workload;

/// Job variables understood by the simulated VM (the simulated inner runner)
/// and by the simulators. A workload sets them on jobs; the VM reads them
/// from the `job.json` pushed by the dispatcher, as a real inner runner would
/// read the job definition.
pub mod vars {
    /// How long the job's script runs once the VM has booted, in milliseconds.
    pub const JOB_DURATION_MS: &str = "SIM_JOB_DURATION_MS";
    /// `success` (default) or `failed`: the result the inner runner reports.
    pub const JOB_RESULT: &str = "SIM_JOB_RESULT";
    /// Number of log lines the job script prints over its duration.
    pub const JOB_LOG_LINES: &str = "SIM_JOB_LOG_LINES";
    /// `true`: the VM boots but the inner runner never starts the job.
    pub const VM_NEVER_STARTS: &str = "SIM_VM_NEVER_STARTS";
    /// The flavor variable real users set (not a simulator knob).
    pub const FLAVOR: &str = "CI_CLEVER_CLOUD_FLAVOR";
}
