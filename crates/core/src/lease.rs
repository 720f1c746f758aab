//! The active replica's lease, as decisions: when to renew it, until when
//! this replica may act, when it has lost it.
//!
//! The database keeps the lease (holder, epoch, expiry on its own clock)
//! and sets the expiry to *its* time of the request plus the lease's
//! duration; a replica cannot read that clock. So the [`LeaseGuard`] counts
//! the lease from the moment the replica *sent* its last successful request
//! (acquisition or renewal), on its own monotonic clock: the database's
//! expiry is later than that, whatever the network's delays. The replica
//! stops every side effect a margin before the lease can expire
//! ([`LeaseTiming::act_until`]), so that no standby can take over while it
//! still acts. Sans-IO: the driver sends the requests and feeds back their
//! answers; its times are given, never read.

use std::time::{Duration, Instant};

/// How often a standby tries to take the lease (and so, about, how long
/// pickup pauses after a graceful stop of the active replica).
pub const STANDBY_POLL: Duration = Duration::from_millis(250);

/// How soon a renewal that failed (the database did not answer, or
/// answered an error) is tried again.
pub const RENEW_RETRY: Duration = Duration::from_millis(500);

/// The lease's duration and what follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub duration: Duration,
}

impl LeaseTiming {
    pub fn new(duration: Duration) -> LeaseTiming {
        LeaseTiming { duration }
    }

    /// How long before the lease can expire the active replica stops
    /// starting side effects: a fifth of the lease, at least one second
    /// (a request sent just before must still reach its destination).
    pub fn margin(&self) -> Duration {
        (self.duration / 5).max(Duration::from_secs(1))
    }

    /// How often the active replica renews: three chances per lease.
    pub fn renew_period(&self) -> Duration {
        self.duration / 3
    }

    /// Until when a replica whose last successful lease request was sent at
    /// `sent_at` may act.
    pub fn act_until(&self, sent_at: Instant) -> Instant {
        sent_at + self.duration.saturating_sub(self.margin())
    }
}

/// Why a replica stops acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseLost {
    /// No renewal succeeded in time: the lease may expire soon.
    NotRenewed,
    /// The database refused the renewal: another replica took the lease.
    Deposed,
}

impl LeaseLost {
    pub fn reason(self) -> &'static str {
        match self {
            LeaseLost::NotRenewed => "the lease could not be renewed in time",
            LeaseLost::Deposed => "another replica holds the lease",
        }
    }
}

/// What the active replica's driver does next about its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardAction {
    /// Send a renewal now; give it up at [`LeaseGuard::act_until`].
    Renew,
    /// Nothing before this instant (then poll again).
    Wait(Instant),
    /// Stop every side effect at once.
    Lost(LeaseLost),
}

/// The answer to a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The database extended the lease.
    Extended,
    /// The database refused: the lease is not ours (any more).
    Refused,
    /// No answer, or an error: it may or may not have been extended.
    Failed,
}

/// The lease of the active replica, held under one epoch.
#[derive(Debug, Clone)]
pub struct LeaseGuard {
    timing: LeaseTiming,
    epoch: i64,
    /// When the last successful lease request was sent.
    valid_from: Instant,
    /// When the next renewal is due.
    next_renewal: Instant,
    /// The renewal under way: when it was sent.
    renewal_sent: Option<Instant>,
}

impl LeaseGuard {
    /// The lease was acquired under `epoch` by a request sent at `sent_at`.
    pub fn new(timing: LeaseTiming, epoch: i64, sent_at: Instant) -> LeaseGuard {
        LeaseGuard {
            timing,
            epoch,
            valid_from: sent_at,
            next_renewal: sent_at + timing.renew_period(),
            renewal_sent: None,
        }
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    pub fn timing(&self) -> LeaseTiming {
        self.timing
    }

    /// Until when this replica may start a side effect.
    pub fn act_until(&self) -> Instant {
        self.timing.act_until(self.valid_from)
    }

    /// Whether this replica may start a side effect at `now`: the driver
    /// asks before every command (a process frozen past its lease stops
    /// before acting, whatever its timers).
    pub fn may_act(&self, now: Instant) -> bool {
        now < self.act_until()
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Instant) -> GuardAction {
        let act_until = self.act_until();
        if now >= act_until {
            return GuardAction::Lost(LeaseLost::NotRenewed);
        }
        match self.renewal_sent {
            Some(_) => GuardAction::Wait(act_until),
            None if now >= self.next_renewal => {
                self.renewal_sent = Some(now);
                GuardAction::Renew
            }
            None => GuardAction::Wait(self.next_renewal.min(act_until)),
        }
    }

    /// The renewal under way was answered at `now`: `Some` when this
    /// replica must stop.
    pub fn renewed(&mut self, now: Instant, renewal: Renewal) -> Option<LeaseLost> {
        let sent_at = self.renewal_sent.take()?;
        match renewal {
            Renewal::Extended => {
                self.valid_from = self.valid_from.max(sent_at);
                self.next_renewal = sent_at + self.timing.renew_period();
                None
            }
            Renewal::Refused => Some(LeaseLost::Deposed),
            Renewal::Failed => {
                self.next_renewal = now + RENEW_RETRY;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    #[test]
    fn the_margin_is_a_fifth_of_the_lease_and_at_least_a_second() {
        assert_eq!(LeaseTiming::new(secs(15)).margin(), secs(3));
        assert_eq!(LeaseTiming::new(secs(3)).margin(), secs(1));
        assert_eq!(LeaseTiming::new(secs(15)).renew_period(), secs(5));
    }

    #[test]
    fn a_lease_renewed_in_time_is_counted_from_the_renewal_sent() {
        // The only reading of the clock: a base for the test's times.
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        let mut guard = LeaseGuard::new(LeaseTiming::new(secs(15)), 4, start);
        assert_eq!(guard.act_until(), start + secs(12));
        assert_eq!(guard.poll(start), GuardAction::Wait(start + secs(5)));
        assert_eq!(guard.poll(start + secs(5)), GuardAction::Renew);
        // Under way: nothing else until the answer, or the end.
        assert_eq!(
            guard.poll(start + secs(6)),
            GuardAction::Wait(start + secs(12))
        );
        // Answered late: the lease counts from the sending.
        assert_eq!(guard.renewed(start + secs(9), Renewal::Extended), None);
        assert_eq!(guard.act_until(), start + secs(17));
        assert_eq!(
            guard.poll(start + secs(9)),
            GuardAction::Wait(start + secs(10))
        );
        assert!(guard.may_act(start + secs(16)));
        assert!(!guard.may_act(start + secs(17)));
    }

    #[test]
    fn failed_renewals_are_retried_until_the_margin_then_the_replica_stops() {
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        let mut guard = LeaseGuard::new(LeaseTiming::new(secs(3)), 1, start);
        assert_eq!(guard.poll(start + secs(1)), GuardAction::Renew);
        assert_eq!(guard.renewed(start + secs(1), Renewal::Failed), None);
        let retry = start + secs(1) + RENEW_RETRY;
        assert_eq!(guard.poll(start + secs(1)), GuardAction::Wait(retry));
        assert_eq!(guard.poll(retry), GuardAction::Renew);
        // The renewal hangs past the point where the lease may expire.
        assert_eq!(
            guard.poll(start + secs(2)),
            GuardAction::Lost(LeaseLost::NotRenewed)
        );
        assert!(!guard.may_act(start + secs(2)));
    }

    #[test]
    fn a_refused_renewal_deposes_the_replica() {
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        let mut guard = LeaseGuard::new(LeaseTiming::new(secs(15)), 2, start);
        assert_eq!(guard.poll(start + secs(5)), GuardAction::Renew);
        assert_eq!(
            guard.renewed(start + secs(5), Renewal::Refused),
            Some(LeaseLost::Deposed)
        );
        // An answer nobody waits for changes nothing.
        assert_eq!(guard.renewed(start + secs(6), Renewal::Extended), None);
        assert_eq!(guard.act_until(), start + secs(12));
    }
}
