//! Which commands fail, and how long they take to answer.

use super::*;

/// Kinds of commands with an outcome, for fault and delay settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Poll,
    Confirm,
    Create,
    Deploy,
    CheckLaunch,
    CheckStatus,
    AppendLog,
    ReportFailure,
    Delete,
    List,
    DeleteOrphan,
    /// Readiness checks of a job's machine.
    Ready,
    /// Checks that a job being deployed is not over.
    Watch,
}

pub const ALL_KINDS: [Kind; 13] = [
    Kind::Poll,
    Kind::Confirm,
    Kind::Create,
    Kind::Deploy,
    Kind::CheckLaunch,
    Kind::CheckStatus,
    Kind::AppendLog,
    Kind::ReportFailure,
    Kind::Delete,
    Kind::List,
    Kind::DeleteOrphan,
    Kind::Ready,
    Kind::Watch,
];

/// A failed command. `effect`: the command took effect all the same (a
/// creation whose answer was lost, a deletion that timed out late).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Transient { effect: bool },
    Permanent { effect: bool },
}

impl Fault {
    pub const TRANSIENT: Fault = Fault::Transient { effect: false };
    pub const PERMANENT: Fault = Fault::Permanent { effect: false };

    pub(crate) fn effect(self) -> bool {
        match self {
            Fault::Transient { effect } | Fault::Permanent { effect } => effect,
        }
    }

    pub(crate) fn transient(self) -> bool {
        matches!(self, Fault::Transient { .. })
    }
}

/// Which commands fail: a script per kind, consumed in order (`None` lets
/// one succeed), then seeded random faults.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub script: BTreeMap<Kind, VecDeque<Option<Fault>>>,
    pub transient_rate: BTreeMap<Kind, f64>,
    pub permanent_rate: BTreeMap<Kind, f64>,
    /// At most this many random faults in a row per job and kind (short
    /// outages rather than a dead service).
    pub max_consecutive: BTreeMap<Kind, u32>,
}

impl Faults {
    /// The next commands of `kind` meet these outcomes, in order.
    pub fn script(&mut self, kind: Kind, outcomes: impl IntoIterator<Item = Option<Fault>>) {
        self.script.entry(kind).or_default().extend(outcomes);
    }
}

/// How long commands take to answer.
#[derive(Debug, Clone, Default)]
pub struct Delays {
    /// Fixed delay per kind (zero by default: answered at once).
    pub fixed: BTreeMap<Kind, Duration>,
    /// When set, every answer takes a random delay up to this.
    pub random_max: Option<Duration>,
}
