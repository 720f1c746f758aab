//! Retry budgets and backoff of failed steps.

use super::*;

/// Attempts for a step whose failures are transient (cloud 5xx, timeouts).
pub const STEP_ATTEMPTS: u32 = 5;
/// Attempts to report a failure to the coordinator.
pub const REPORT_ATTEMPTS: u32 = 5;
/// Cap of the backoff between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
impl Dispatcher {
    /// Counts a failed attempt of `step`. A transient failure within
    /// `max_attempts` is retried after a backoff (and said so); returns
    /// whether it is.
    pub(super) fn retry_later(
        &mut self,
        key: JobKey,
        step: &'static str,
        max_attempts: u32,
        transient: bool,
        now: Instant,
    ) -> bool {
        let Some(job) = self.jobs.get_mut(&key) else {
            return false;
        };
        job.attempts += 1;
        if !transient || job.attempts >= max_attempts {
            return false;
        }
        let attempt = job.attempts;
        let delay = backoff(attempt);
        self.wake_at(key, now + delay);
        self.commands.push_back(Command::Notice(Notice::Retrying {
            job: key,
            step,
            attempt,
            max_attempts,
            delay,
        }));
        true
    }

    pub(super) fn retry_or_fail(
        &mut self,
        key: JobKey,
        step: &'static str,
        max_attempts: u32,
        transient: bool,
        user_message: String,
        now: Instant,
    ) {
        if transient && self.shutting_down {
            // Leave the step to the next process rather than failing the job.
            self.save(key);
            return;
        }
        if self.retry_later(key, step, max_attempts, transient, now) {
            self.save(key);
            return;
        }
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.attempts = 0;
        self.fail(
            key,
            Failure {
                kind: FailureKind::System,
                message: messages::infrastructure_failure(&user_message),
            },
        );
    }
}

/// Exponential backoff: 1 s, 2 s, 4 s, ... capped at [`MAX_BACKOFF`].
pub fn backoff(attempt: u32) -> Duration {
    let secs = 1u64 << attempt.saturating_sub(1).min(6);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}
