//! What the coordinator's answers mean for the next request: Workhorse
//! long polling ([`LongPolling`], fed by [`Dispatcher::handle_poll_answer`])
//! and which answers to a job confirmation withdraw the job
//! ([`ConfirmCheck::of_refusal`]).

use super::*;

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

impl Dispatcher {
    pub fn handle_poll(&mut self, runner: RunnerIdx, outcome: PollOutcome, now: Instant) {
        let state = &mut self.runners[runner];
        debug_assert!(state.poll_in_flight, "poll result without a poll");
        state.poll_in_flight = false;
        state.reserved = 0.0;
        let check_interval = self.config.check_interval;
        match outcome {
            PollOutcome::Job(new_job) => {
                state.consecutive_errors = 0;
                state.next_poll_at = Some(if self.config.repoll_immediately {
                    now
                } else {
                    now + check_interval
                });
                self.accept_job(runner, new_job, None, now);
            }
            PollOutcome::JobTooLarge {
                job_id,
                token,
                limit_bytes,
            } => {
                state.consecutive_errors = 0;
                state.next_poll_at = Some(if self.config.repoll_immediately {
                    now
                } else {
                    now + check_interval
                });
                let new_job = NewJob {
                    job_id,
                    token,
                    project_id: None,
                    requested_flavor: None,
                    failure_reasons: None,
                    payload: String::new(),
                };
                let failure = Failure {
                    kind: FailureKind::User,
                    message: messages::payload_too_large(limit_bytes),
                };
                self.accept_job(runner, new_job, Some(failure), now);
            }
            PollOutcome::NoJob => {
                state.consecutive_errors = 0;
                // One poll per check_interval, counted from when it was sent:
                // a request the coordinator held (long polling) already
                // waited, and is followed by the next one at once.
                let due = state.poll_sent_at.map_or(now, |sent| sent + check_interval);
                state.next_poll_at = Some(due.max(now));
            }
            PollOutcome::NoJobPollAgain => {
                // The coordinator holds requests (long polling): the next
                // one waits there for a job rather than here.
                state.consecutive_errors = 0;
                state.next_poll_at = Some(now);
            }
            PollOutcome::Error { transient } => {
                state.consecutive_errors = state.consecutive_errors.saturating_add(1);
                let factor = if transient {
                    1
                } else {
                    1u32 << state.consecutive_errors.min(5)
                };
                state.next_poll_at =
                    Some(now + (check_interval * factor).min(MAX_BACKOFF.max(check_interval)));
            }
            PollOutcome::Cancelled => {
                state.next_poll_at = Some(now);
            }
        }
        self.drive(now);
    }

    /// Takes a job handed over by a coordinator; `preset_failure` fails it
    /// at once (nothing is provisioned), whatever its flavor.
    pub(super) fn accept_job(
        &mut self,
        runner: RunnerIdx,
        new_job: NewJob,
        preset_failure: Option<Failure>,
        now: Instant,
    ) {
        let key = JobKey {
            runner,
            job_id: new_job.job_id,
        };
        if self.jobs.contains_key(&key) {
            // The coordinator handed the same job twice: keep the one we have.
            return;
        }
        let spec = &self.runners[runner].spec;
        let flavor_name = new_job
            .requested_flavor
            .clone()
            .unwrap_or_else(|| spec.default_flavor.clone());
        let max_weight = spec.max_job_weight();
        let flavor = spec.flavors.get(&flavor_name).cloned();
        let failure = match &flavor {
            _ if preset_failure.is_some() => preset_failure,
            None => Some(Failure {
                kind: FailureKind::User,
                message: messages::unknown_flavor(&flavor_name, &spec.flavors, max_weight),
            }),
            Some(flavor) if flavor.weight() > max_weight + EPSILON => Some(Failure {
                kind: FailureKind::User,
                message: messages::flavor_above_max(
                    &flavor_name,
                    spec.max_flavor.as_deref().unwrap_or_default(),
                    &spec.flavors,
                ),
            }),
            Some(_) => None,
        };
        let expected_weight = match (&failure, &flavor) {
            (None, Some(flavor)) => flavor.weight(),
            _ => 0.0,
        };
        let job = Job {
            key,
            token: new_job.token,
            project_id: new_job.project_id,
            payload: new_job.payload,
            failure_reasons: new_job.failure_reasons,
            flavor: flavor_name.clone(),
            expected_weight,
            stage: Stage::Queued,
            resource: Resource::None,
            busy: false,
            next_step_at: None,
            attempts: 0,
            failed: false,
            confirmed: false,
            acquired_at: now,
            log_bytes: 0,
            slow_notice_sent: false,
            notice_busy: false,
        };
        self.jobs.insert(key, job);
        self.acquired_total += 1;
        self.commands.push_back(Command::Notice(Notice::Acquired {
            job: key,
            flavor: flavor_name,
            weight: expected_weight,
        }));
        // Nothing happens for the job before the coordinator has been told
        // we run it (see `step`); a confirmed job then joins the launch queue.
        if let Some(failure) = failure {
            self.fail(key, failure);
        } else {
            self.schedule_notice(key, now);
        }
        self.save(key);
        self.ready.insert(key);
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
