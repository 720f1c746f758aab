//! Several replicas of the service sharing one database, as with the
//! PostgreSQL store: the lease row (holder, epoch, expiry on the database's
//! clock), store writes that take a network round trip and are fenced with
//! the writer's epoch, a driver that holds a job's commands until its write
//! is durable, the core's [`LeaseGuard`] deciding renewals and when to stop,
//! standbys trying for the lease, and partitions between a replica and the
//! database (messages held until the partition heals).
//!
//! At most one replica runs the harness's dispatcher: the active one. The
//! others are standbys (or down, restarting after a kill). What must hold:
//! no replica starts a side effect unless the database's lease row says it
//! holds the lease under its epoch and has not expired; a standby is never
//! granted the lease while another replica still acts; writes of a deposed
//! epoch are refused; and the usual invariants (every job exactly once,
//! nothing leaked, quota kept).

use paas_core::{GuardAction, LeaseGuard, LeaseLost, LeaseTiming, Renewal};

use super::*;

/// How long the driver waits for a write before it stops (the PostgreSQL
/// store's request timeout).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A job's write, as the database receives it.
#[derive(Debug, Clone)]
pub enum Write {
    Save(Box<JobRecord>),
    Forget(JobKey),
}

/// A message between a replica and the database.
#[derive(Debug, Clone)]
pub enum DbMessage {
    Write {
        replica: usize,
        incarnation: u64,
        epoch: i64,
        job: JobKey,
        write: Write,
    },
    WriteDone {
        replica: usize,
        incarnation: u64,
        job: JobKey,
        accepted: bool,
    },
    Acquire {
        replica: usize,
        incarnation: u64,
        sent_at: Instant,
    },
    Acquired {
        replica: usize,
        incarnation: u64,
        sent_at: Instant,
        epoch: Option<i64>,
    },
    Renew {
        replica: usize,
        incarnation: u64,
        epoch: i64,
    },
    Renewed {
        replica: usize,
        incarnation: u64,
        extended: bool,
    },
    Release {
        replica: usize,
        epoch: i64,
    },
}

impl DbMessage {
    /// The replica at the other end.
    fn replica(&self) -> usize {
        match self {
            DbMessage::Write { replica, .. }
            | DbMessage::WriteDone { replica, .. }
            | DbMessage::Acquire { replica, .. }
            | DbMessage::Acquired { replica, .. }
            | DbMessage::Renew { replica, .. }
            | DbMessage::Renewed { replica, .. }
            | DbMessage::Release { replica, .. } => *replica,
        }
    }
}

/// The lease row, as the database holds it.
#[derive(Debug, Clone, Default)]
pub struct LeaseRow {
    pub holder: Option<usize>,
    pub epoch: i64,
    pub expires_at: Option<Instant>,
}

/// What a replica's process is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// Not running; started again (as a standby) at `until`.
    Down { until: Instant },
    /// Waiting for the lease: next attempt at `next_try`, or one under way.
    Standby { next_try: Instant, trying: bool },
    /// Running the dispatcher.
    Active,
}

/// The active replica's process.
#[derive(Debug, Clone)]
pub struct ActiveProcess {
    pub replica: usize,
    pub incarnation: u64,
    pub guard: LeaseGuard,
    /// A graceful stop was asked: it releases the lease once quiescent.
    pub stopping: bool,
}

/// How a replica's process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Killed,
    Lost(LeaseLost),
    /// A write failed (refused by fencing, or timed out).
    StoreFailed,
    Graceful,
}

/// A replica took over from the active one.
#[derive(Debug, Clone)]
pub struct Takeover {
    /// How the previous active process ended (`start`: none before).
    pub cause: &'static str,
    /// From that end to the new active replica restoring the jobs.
    pub took: Duration,
    /// Whether a partition was under way meanwhile.
    pub partitioned: bool,
}

/// The replicas and their database.
#[derive(Debug, Clone)]
pub struct Replicas {
    pub timing: LeaseTiming,
    pub row: LeaseRow,
    pub roles: Vec<Role>,
    /// Per replica, bumped at each start of its process.
    pub incarnations: Vec<u64>,
    pub active: Option<ActiveProcess>,
    /// Until when each replica is cut from the database.
    pub partitioned_until: Vec<Option<Instant>>,
    /// Messages under way: when they arrive, a sequence number, the message.
    pub messages: Vec<(Instant, u64, DbMessage)>,
    pub latency_max: Duration,
    /// The active process's jobs with a write under way (sent when).
    pub writes: BTreeMap<JobKey, Instant>,
    /// Its commands held behind those writes, and whether the dispatcher
    /// issued them before `shutdown()` (the driver runs those after it).
    pub held: BTreeMap<JobKey, VecDeque<(Command, bool)>>,
    /// How long a killed or stopped replica stays down.
    pub restart_delay: Duration,
    /// When and how the last active process ended (for takeover times).
    pub ended: Option<(Instant, &'static str)>,
    /// When the latest partition began.
    pub partitioned_at: Option<Instant>,
    // Figures.
    pub takeovers: Vec<Takeover>,
    pub fenced_writes: u64,
    pub exits: BTreeMap<&'static str, u64>,
    pub partitions: u64,
    pub writes_sent: u64,
}

impl Replicas {
    pub fn new(count: usize, timing: LeaseTiming, latency_max: Duration, now: Instant) -> Self {
        Replicas {
            timing,
            row: LeaseRow::default(),
            roles: vec![
                Role::Standby {
                    next_try: now,
                    trying: false
                };
                count
            ],
            incarnations: vec![1; count],
            active: None,
            partitioned_until: vec![None; count],
            messages: Vec::new(),
            latency_max,
            writes: BTreeMap::new(),
            held: BTreeMap::new(),
            restart_delay: Duration::from_secs(1),
            ended: Some((now, "start")),
            partitioned_at: None,
            takeovers: Vec::new(),
            fenced_writes: 0,
            exits: BTreeMap::new(),
            partitions: 0,
            writes_sent: 0,
        }
    }

    /// Whether the lease row lets `replica` act under `epoch` at `now`.
    pub fn row_allows(&self, replica: usize, epoch: i64, now: Instant) -> bool {
        self.row.holder == Some(replica)
            && self.row.epoch == epoch
            && self.row.expires_at.is_some_and(|expiry| now < expiry)
    }
}

impl Harness {
    /// From now on the service runs as `count` replicas sharing a database
    /// with a lease of `timing`; none is active until one takes the lease.
    pub fn replicate(&mut self, count: usize, timing: LeaseTiming, latency_max: Duration) {
        self.replicas = Some(Replicas::new(count, timing, latency_max, self.now));
        self.down = true;
        self.dispatcher = self.fresh_dispatcher();
    }

    fn replicas(&mut self) -> &mut Replicas {
        self.replicas.as_mut().expect("replica mode")
    }

    /// Sends `message` between its replica and the database: it arrives
    /// after a random latency, or after the partition heals.
    fn send(&mut self, message: DbMessage) {
        let now = self.now;
        let latency_ms = self.replicas().latency_max.as_millis() as u64;
        let latency = Duration::from_millis(self.rng.gen_range(1..=latency_ms.max(1)));
        self.seq += 1;
        let seq = self.seq;
        let replicas = self.replicas();
        let from = replicas.partitioned_until[message.replica()]
            .filter(|until| *until > now)
            .unwrap_or(now);
        replicas.messages.push((from + latency, seq, message));
    }

    // ----- the driver's side -----

    /// The driver's gate before a command of the active process: `None`
    /// when the command is held behind its job's write, sent to the
    /// database (a write), or dropped because the process stops.
    pub(crate) fn replica_gate(&mut self, command: Command) -> Option<Command> {
        let now = self.now;
        let job = command_job(&command);
        let Some(active) = self.replicas().active.clone() else {
            self.violation(format!(
                "command with no active replica: {}",
                self.describe(&command)
            ));
            return None;
        };
        if let Some(key) = job {
            if self.replicas().writes.contains_key(&key) {
                let before_shutdown = !self.shutting_down || self.releasing_held;
                self.replicas()
                    .held
                    .entry(key)
                    .or_default()
                    .push_back((command, before_shutdown));
                return None;
            }
        }
        // The driver asks before every command (`ha::check_may_act`).
        if !active.guard.may_act(now) {
            self.end_active(Exit::Lost(LeaseLost::NotRenewed));
            return None;
        }
        let write = match &command {
            Command::Save(record) => Some(Write::Save(Box::new(record.clone()))),
            Command::Forget(key) => Some(Write::Forget(*key)),
            _ => None,
        };
        if let (Some(write), Some(key)) = (write, job) {
            let description = self.describe(&command);
            self.note(
                job,
                format!("{description} (sent, epoch {})", active.guard.epoch()),
            );
            let replicas = self.replicas();
            replicas.writes.insert(key, now);
            replicas.writes_sent += 1;
            self.send(DbMessage::Write {
                replica: active.replica,
                incarnation: active.incarnation,
                epoch: active.guard.epoch(),
                job: key,
                write,
            });
            return None;
        }
        if has_effect(&command) {
            let replicas = self.replicas.as_ref().expect("replica mode");
            if !replicas.row_allows(active.replica, active.guard.epoch(), now) {
                let row = replicas.row.clone();
                let description = self.describe(&command);
                self.violation(format!(
                    "replica {} (epoch {}) acts while the lease row is {row:?} at {:?}: {description}",
                    active.replica,
                    active.guard.epoch(),
                    now - self.start
                ));
            }
        }
        Some(command)
    }

    /// A write reached the database (applied if its epoch is current).
    fn apply_write(&mut self, write: Write) {
        match write {
            Write::Save(record) => self.apply_save(*record),
            Write::Forget(key) => {
                self.store.remove(&(runner_key(key.runner), key.job_id));
            }
        }
    }

    // ----- events -----

    /// The next instant a replica event is due.
    pub(crate) fn replica_next_event(&self) -> Option<Instant> {
        let replicas = self.replicas.as_ref()?;
        let mut next: Vec<Instant> = replicas.messages.iter().map(|(at, _, _)| *at).collect();
        if let Some(active) = &replicas.active {
            next.extend(replicas.writes.values().map(|sent| *sent + WRITE_TIMEOUT));
            match active.guard.clone().poll(self.now) {
                GuardAction::Wait(at) => next.push(at),
                GuardAction::Renew | GuardAction::Lost(_) => next.push(self.now),
            }
            if active.stopping && self.stopped_quietly() {
                next.push(self.now);
            }
        }
        for role in &replicas.roles {
            match role {
                Role::Down { until } => next.push(*until),
                Role::Standby {
                    next_try,
                    trying: false,
                } => next.push(*next_try),
                _ => {}
            }
        }
        next.into_iter().min()
    }

    /// Whether the stopping active process has nothing left to do.
    fn stopped_quietly(&self) -> bool {
        let replicas = self.replicas.as_ref().expect("replica mode");
        self.dispatcher.is_quiescent()
            && replicas.writes.is_empty()
            && replicas.held.is_empty()
            && self
                .in_flight
                .iter()
                .all(|in_flight| matches!(in_flight.outcome, Outcome::LateCreate(_)))
    }

    /// Handles one replica event due now, if any.
    pub(crate) fn step_replicas(&mut self) -> Option<Step> {
        let now = self.now;
        let replicas = self.replicas.as_mut()?;
        if let Some(index) = replicas
            .messages
            .iter()
            .enumerate()
            .filter(|(_, (at, _, _))| *at <= now)
            .min_by_key(|(_, (at, seq, _))| (*at, *seq))
            .map(|(index, _)| index)
        {
            let (_, _, message) = replicas.messages.remove(index);
            self.handle_db_message(message);
            return Some(Step::Outcome);
        }
        if let Some(active) = replicas.active.clone() {
            if replicas
                .writes
                .values()
                .any(|sent| *sent + WRITE_TIMEOUT <= now)
            {
                self.end_active(Exit::StoreFailed);
                return Some(Step::Timeout);
            }
            let mut guard = active.guard.clone();
            match guard.poll(now) {
                GuardAction::Lost(why) => {
                    self.end_active(Exit::Lost(why));
                    return Some(Step::Timeout);
                }
                GuardAction::Renew => {
                    if let Some(active) = &mut self.replicas().active {
                        active.guard = guard;
                    }
                    self.send(DbMessage::Renew {
                        replica: active.replica,
                        incarnation: active.incarnation,
                        epoch: active.guard.epoch(),
                    });
                    return Some(Step::Timeout);
                }
                GuardAction::Wait(_) => {}
            }
            if active.stopping && self.stopped_quietly() {
                self.end_active(Exit::Graceful);
                return Some(Step::Timeout);
            }
        }
        let replicas = self.replicas();
        for replica in 0..replicas.roles.len() {
            match replicas.roles[replica] {
                Role::Down { until } if until <= now => {
                    replicas.incarnations[replica] += 1;
                    replicas.roles[replica] = Role::Standby {
                        next_try: now,
                        trying: false,
                    };
                    self.note(None, format!("REPLICA {replica} starts as a standby"));
                    return Some(Step::Timeout);
                }
                Role::Standby {
                    next_try,
                    trying: false,
                } if next_try <= now => {
                    replicas.roles[replica] = Role::Standby {
                        next_try,
                        trying: true,
                    };
                    let incarnation = replicas.incarnations[replica];
                    self.send(DbMessage::Acquire {
                        replica,
                        incarnation,
                        sent_at: now,
                    });
                    return Some(Step::Timeout);
                }
                _ => {}
            }
        }
        None
    }

    fn handle_db_message(&mut self, message: DbMessage) {
        let now = self.now;
        let duration = self.replicas().timing.duration;
        match message {
            DbMessage::Write {
                replica,
                incarnation,
                epoch,
                job,
                write,
            } => {
                // The store checks the epoch in the write's transaction.
                let accepted = self.replicas().row.epoch == epoch;
                if accepted {
                    self.apply_write(write);
                } else {
                    self.replicas().fenced_writes += 1;
                    self.note(
                        Some(job),
                        format!("FENCED write of replica {replica} (epoch {epoch})"),
                    );
                }
                self.send(DbMessage::WriteDone {
                    replica,
                    incarnation,
                    job,
                    accepted,
                });
            }
            DbMessage::WriteDone {
                replica,
                incarnation,
                job,
                accepted,
            } => {
                if !self.is_active_process(replica, incarnation) {
                    return;
                }
                if !accepted {
                    self.end_active(Exit::StoreFailed);
                    return;
                }
                let replicas = self.replicas();
                replicas.writes.remove(&job);
                let released = replicas.held.remove(&job).unwrap_or_default();
                for (command, before_shutdown) in released {
                    if !self.is_active_process(replica, incarnation) {
                        return;
                    }
                    self.releasing_held = before_shutdown;
                    self.execute(command);
                    self.releasing_held = false;
                }
            }
            DbMessage::Acquire {
                replica,
                incarnation,
                sent_at,
            } => {
                let row = &self.replicas().row;
                let free = row.holder.is_none() || row.expires_at.is_none_or(|at| at <= now);
                let epoch = if free {
                    if let Some(active) = self.replicas().active.clone() {
                        self.violation(format!(
                            "replica {replica} granted the lease while replica {} (epoch {}) still acts",
                            active.replica,
                            active.guard.epoch()
                        ));
                    }
                    let row = &mut self.replicas().row;
                    row.holder = Some(replica);
                    row.epoch += 1;
                    row.expires_at = Some(now + duration);
                    Some(row.epoch)
                } else {
                    None
                };
                self.send(DbMessage::Acquired {
                    replica,
                    incarnation,
                    sent_at,
                    epoch,
                });
            }
            DbMessage::Acquired {
                replica,
                incarnation,
                sent_at,
                epoch,
            } => {
                let replicas = self.replicas();
                if replicas.incarnations[replica] != incarnation
                    || !matches!(replicas.roles[replica], Role::Standby { trying: true, .. })
                {
                    return;
                }
                match epoch {
                    None => {
                        replicas.roles[replica] = Role::Standby {
                            next_try: now + paas_core::lease::STANDBY_POLL,
                            trying: false,
                        };
                    }
                    Some(epoch) => self.take_over(replica, incarnation, epoch, sent_at),
                }
            }
            DbMessage::Renew {
                replica,
                incarnation,
                epoch,
            } => {
                let row = &mut self.replicas().row;
                let extended = row.holder == Some(replica) && row.epoch == epoch;
                if extended {
                    row.expires_at = Some(now + duration);
                }
                self.send(DbMessage::Renewed {
                    replica,
                    incarnation,
                    extended,
                });
            }
            DbMessage::Renewed {
                replica,
                incarnation,
                extended,
            } => {
                if !self.is_active_process(replica, incarnation) {
                    return;
                }
                let renewal = if extended {
                    Renewal::Extended
                } else {
                    Renewal::Refused
                };
                let lost = self
                    .replicas()
                    .active
                    .as_mut()
                    .and_then(|active| active.guard.renewed(now, renewal));
                if let Some(why) = lost {
                    self.end_active(Exit::Lost(why));
                }
            }
            DbMessage::Release { replica, epoch } => {
                let row = &mut self.replicas().row;
                if row.holder == Some(replica) && row.epoch == epoch {
                    row.holder = None;
                    row.expires_at = None;
                }
            }
        }
    }

    fn is_active_process(&self, replica: usize, incarnation: u64) -> bool {
        self.replicas
            .as_ref()
            .and_then(|replicas| replicas.active.as_ref())
            .is_some_and(|active| active.replica == replica && active.incarnation == incarnation)
    }

    /// `replica` holds the lease under `epoch`: it restores the stored jobs
    /// and runs the dispatcher.
    fn take_over(&mut self, replica: usize, incarnation: u64, epoch: i64, sent_at: Instant) {
        let now = self.now;
        let replicas = self.replicas();
        let timing = replicas.timing;
        replicas.roles[replica] = Role::Active;
        replicas.active = Some(ActiveProcess {
            replica,
            incarnation,
            guard: LeaseGuard::new(timing, epoch, sent_at),
            stopping: false,
        });
        if let Some((ended, cause)) = replicas.ended.take() {
            let partitioned = replicas
                .partitioned_until
                .iter()
                .flatten()
                .any(|until| *until > ended)
                || replicas.partitioned_at.is_some_and(|at| at >= ended);
            replicas.takeovers.push(Takeover {
                cause,
                took: now - ended,
                partitioned,
            });
        }
        self.note(
            None,
            format!("REPLICA {replica} ACTIVE under epoch {epoch}"),
        );
        self.down = false;
        self.restart();
    }

    /// The active replica's process ends.
    pub fn end_active(&mut self, exit: Exit) {
        let now = self.now;
        let Some(active) = self.replicas().active.take() else {
            return;
        };
        let name = match exit {
            Exit::Killed => "killed",
            Exit::Lost(LeaseLost::NotRenewed) => "lease not renewed",
            Exit::Lost(LeaseLost::Deposed) => "deposed",
            Exit::StoreFailed => "store failed",
            Exit::Graceful => "graceful",
        };
        self.note(None, format!("REPLICA {} ENDS ({name})", active.replica));
        let replicas = self.replicas();
        *replicas.exits.entry(name).or_default() += 1;
        replicas.writes.clear();
        replicas.held.clear();
        replicas.ended = Some((now, name));
        let restart_delay = replicas.restart_delay;
        replicas.roles[active.replica] = Role::Down {
            until: now + restart_delay,
        };
        if exit == Exit::Graceful {
            self.send(DbMessage::Release {
                replica: active.replica,
                epoch: active.guard.epoch(),
            });
            self.dispatcher = self.fresh_dispatcher();
            self.shutting_down = false;
        } else {
            self.crash();
        }
        self.down = true;
    }

    // ----- chaos -----

    /// SIGKILL of the active replica (if any).
    pub fn kill_active(&mut self) {
        if self.replicas().active.is_some() {
            self.end_active(Exit::Killed);
        }
    }

    /// SIGTERM of the active replica: it drains, then releases the lease.
    pub fn stop_active(&mut self) {
        let Some(active) = self.replicas().active.as_ref() else {
            return;
        };
        if active.stopping {
            return;
        }
        self.shutdown();
        if let Some(active) = &mut self.replicas().active {
            active.stopping = true;
        }
    }

    /// Cuts `replica` from the database for `duration`.
    pub fn partition(&mut self, replica: usize, duration: Duration) {
        let now = self.now;
        let replicas = self.replicas();
        replicas.partitioned_until[replica] = Some(now + duration);
        replicas.partitions += 1;
        replicas.partitioned_at = Some(now);
        self.note(
            None,
            format!("PARTITION of replica {replica} for {duration:?}"),
        );
    }

    /// The active replica, if any.
    pub fn active_replica(&self) -> Option<usize> {
        self.replicas
            .as_ref()
            .and_then(|replicas| replicas.active.as_ref())
            .map(|active| active.replica)
    }
}
