//! What the coordinator's answers mean for the next request: Workhorse
//! long polling ([`LongPolling`], fed by [`Dispatcher::handle_poll_answer`])
//! and which answers to a job confirmation withdraw the job
//! ([`ConfirmCheck::of_refusal`]).

use std::time::{Duration, Instant};

use super::{ConfirmCheck, Dispatcher, PollOutcome};
use crate::job::RunnerIdx;

/// A request held this long shows the coordinator does long polling.
pub const LONG_POLL_EVIDENCE: Duration = Duration::from_millis(900);

/// How a job request was answered, besides its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PollAnswer {
    /// A "no job" answer carried `X-GitLab-Last-Update` (Rails answered,
    /// not Workhorse).
    pub from_rails: bool,
    /// How long the request took (a coordinator that long-polls holds it).
    pub held: Duration,
}

/// What has been seen of a coordinator's long polling.
#[derive(Debug, Clone, Copy, Default)]
pub struct LongPolling {
    /// A request was held: the coordinator does long polling.
    holds_seen: bool,
    /// The last answer was a Workhorse 204 that came at once.
    quick_workhorse_204: bool,
    /// The last request was sent at once after a Rails 204.
    after_rails: bool,
}

impl LongPolling {
    /// Whether the request after this answer goes out at once. `no_job`:
    /// a 204; `from_rails`: it carried `X-GitLab-Last-Update`; `held`: how
    /// long the request took.
    ///
    /// Workhorse answers a held request with its own 204 (no
    /// `X-GitLab-Last-Update`) when the runner's queue changes or the hold
    /// ends; Rails answers with a fresh queue version, and the next request
    /// carrying it is held until a job may be there. So the request after
    /// either is sent at once, with two guards against a coordinator that
    /// answers at once instead of holding (Workhorse's 50 ns default, or no
    /// Workhorse handler): a second quick Workhorse 204 in a row, or a Rails
    /// 204 right after one we repolled for, falls back to `check_interval`.
    pub fn poll_again(&mut self, no_job: bool, from_rails: bool, held: Duration) -> bool {
        let again_after_rails = std::mem::take(&mut self.after_rails);
        if !no_job {
            self.quick_workhorse_204 = false;
            return false;
        }
        if from_rails {
            self.quick_workhorse_204 = false;
            if again_after_rails {
                // The request carrying the fresh version was not held.
                self.holds_seen = false;
                return false;
            }
            self.after_rails = self.holds_seen;
            return self.holds_seen;
        }
        // Workhorse answers by itself only where it long-polls.
        self.holds_seen = true;
        if held >= LONG_POLL_EVIDENCE {
            self.quick_workhorse_204 = false;
            return true;
        }
        !std::mem::replace(&mut self.quick_workhorse_204, true)
    }
}

impl ConfirmCheck {
    /// What a confirmation refused with HTTP `status` (and the job's
    /// `Job-Status` header, if any) means. Only clear signs that the job is
    /// not ours (403 "not running", 409, a final `Job-Status`) withdraw it:
    /// a job dropped by mistake would stay stuck on the coordinator, while
    /// one run by mistake is refused by the coordinator and cleaned up.
    pub fn of_refusal(status: u16, job_status: Option<&str>) -> ConfirmCheck {
        let final_status = matches!(job_status, Some("canceled" | "failed" | "success"));
        if status == 403 || status == 409 || final_status {
            ConfirmCheck::Gone
        } else {
            ConfirmCheck::Confirmed
        }
    }
}

impl Dispatcher {
    /// The answer to a [`super::Command::RequestJob`], with how it came
    /// ([`PollAnswer`]): a "no job" from a coordinator that holds requests
    /// is followed by the next request at once ([`LongPolling`]).
    pub fn handle_poll_answer(
        &mut self,
        runner: RunnerIdx,
        outcome: PollOutcome,
        answer: PollAnswer,
        now: Instant,
    ) {
        let no_job = matches!(outcome, PollOutcome::NoJob);
        let again =
            self.runners[runner]
                .long_polling
                .poll_again(no_job, answer.from_rails, answer.held);
        let outcome = if again {
            PollOutcome::NoJobPollAgain
        } else {
            outcome
        };
        self.handle_poll(runner, outcome, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: Duration = Duration::from_millis(5);
    const HELD: Duration = Duration::from_secs(20);

    /// Runs answers `(no_job, from_rails, held)` and returns the decisions.
    fn decisions(answers: &[(bool, bool, Duration)]) -> Vec<bool> {
        let mut state = LongPolling::default();
        answers
            .iter()
            .map(|(no_job, from_rails, held)| state.poll_again(*no_job, *from_rails, *held))
            .collect()
    }

    #[test]
    fn long_polling_coordinator_is_repolled_at_once() {
        // Rails 204 (no hold seen yet), held Workhorse 204, Rails 204 with a
        // fresh version, held again, released by a job, the job.
        let answers = [
            (true, true, QUICK),
            (true, false, HELD),
            (true, true, QUICK),
            (true, false, HELD),
            (true, false, QUICK),
            (false, false, QUICK),
        ];
        assert_eq!(decisions(&answers), [false, true, true, true, true, false]);
    }

    #[test]
    fn a_coordinator_that_never_holds_is_paced() {
        // No Workhorse handler: Rails answers every request at once.
        assert_eq!(decisions(&[(true, true, QUICK); 4]), [false; 4]);
        // Workhorse holding for ~0 s: at most one extra request.
        assert_eq!(
            decisions(&[(true, false, QUICK); 4]),
            [true, false, false, false]
        );
    }

    #[test]
    fn a_hold_released_early_also_shows_long_polling() {
        // Jobs arriving often release holds quickly: the request after the
        // fresh version still goes at once.
        let answers = [
            (true, false, QUICK),
            (false, true, QUICK),
            (true, true, QUICK),
            (true, false, QUICK),
        ];
        assert_eq!(decisions(&answers), [true, false, true, true]);
    }

    #[test]
    fn long_polling_switched_off_falls_back_after_one_request() {
        let answers = [
            (true, false, HELD),
            (true, true, QUICK),
            (true, true, QUICK),
            (true, true, QUICK),
        ];
        assert_eq!(decisions(&answers), [true, true, false, false]);
    }

    #[test]
    fn only_clear_refusals_withdraw_a_job() {
        assert_eq!(ConfirmCheck::of_refusal(403, None), ConfirmCheck::Gone);
        assert_eq!(ConfirmCheck::of_refusal(409, None), ConfirmCheck::Gone);
        for status in ["canceled", "failed", "success"] {
            assert_eq!(
                ConfirmCheck::of_refusal(404, Some(status)),
                ConfirmCheck::Gone
            );
        }
        assert_eq!(
            ConfirmCheck::of_refusal(404, Some("running")),
            ConfirmCheck::Confirmed
        );
        assert_eq!(ConfirmCheck::of_refusal(400, None), ConfirmCheck::Confirmed);
    }
}
