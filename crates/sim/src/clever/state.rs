//! The simulator's state behind its lock: applications (live and deleted),
//! counters, generators, injected faults, and the rules on them that do not
//! depend on HTTP.

use std::collections::{BTreeSet, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use serde_json::Value;

use super::catalogue::{SimFlavor, DEFAULT_DOCKER_VERSION};
use super::machines::VmHandle;
use super::{AppRecord, CleverStats};

/// Everything the simulator remembers, behind [`CleverSim`]'s one lock.
pub(super) struct SimState {
    pub(super) apps: Vec<AppEntry>,
    pub(super) index: HashMap<String, usize>,
    /// Indices of the live applications in `apps`, in creation order.
    pub(super) live: BTreeSet<usize>,
    pub(super) stats: CleverStats,
    pub(super) fault_rng: SmallRng,
    pub(super) id_rng: SmallRng,
    pub(super) create_errors: Vec<InjectedCreateError>,
    pub(super) never_ready: Vec<String>,
    pub(super) docker_version: String,
    /// `GET …/deployments` answers 404 (an API without the listing).
    pub(super) no_organisation_deployments: bool,
}

/// One application, live or deleted, with what its JSON shows.
pub(super) struct AppEntry {
    pub(super) record: AppRecord,
    pub(super) orga: String,
    pub(super) description: String,
    pub(super) zone: String,
    pub(super) variant_id: String,
    pub(super) min_flavor: SimFlavor,
    pub(super) max_flavor: SimFlavor,
    pub(super) min_instances: u64,
    pub(super) max_instances: u64,
    pub(super) instance_version: String,
    pub(super) creation_epoch_ms: u64,
    pub(super) tags: Vec<Value>,
    pub(super) vm: Option<VmHandle>,
}

pub(super) struct InjectedCreateError {
    pub(super) name_contains: String,
    pub(super) status: u16,
    pub(super) id: i64,
    pub(super) message: String,
    /// `None`: every matching create fails; `Some(n)`: the next `n` do.
    pub(super) remaining: Option<u32>,
}

impl SimState {
    /// The live applications of organisation `orga`, oldest first.
    pub(super) fn live_apps_of<'a>(
        &'a self,
        orga: &'a str,
    ) -> impl Iterator<Item = &'a AppEntry> + 'a {
        self.live
            .iter()
            .map(|&index| &self.apps[index])
            .filter(move |app| app.orga == orga)
    }

    /// An empty state whose generators derive from `seed`.
    pub(super) fn new(seed: u64) -> SimState {
        SimState {
            apps: Vec::new(),
            index: HashMap::new(),
            live: BTreeSet::new(),
            stats: CleverStats::default(),
            fault_rng: SmallRng::seed_from_u64(seed),
            id_rng: SmallRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
            create_errors: Vec::new(),
            never_ready: Vec::new(),
            docker_version: DEFAULT_DOCKER_VERSION.to_owned(),
            no_organisation_deployments: false,
        }
    }
}

pub(super) fn epoch_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// The live application `app_id` of `orga`.
pub(super) fn live_app<'a>(state: &'a SimState, orga: &str, app_id: &str) -> Option<&'a AppEntry> {
    let index = *state.index.get(app_id)?;
    let app = &state.apps[index];
    (app.record.is_live() && app.orga == orga).then_some(app)
}

pub(super) fn live_app_mut<'a>(
    state: &'a mut SimState,
    orga: &str,
    app_id: &str,
) -> Option<&'a mut AppEntry> {
    let index = *state.index.get(app_id)?;
    let app = &mut state.apps[index];
    (app.record.is_live() && app.orga == orga).then_some(app)
}

pub(super) fn new_uuid(rng: &mut SmallRng) -> String {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
/// Live weight is recomputed from the live set rather than updated
/// incrementally, so that float rounding cannot drift over long runs.
pub(super) fn recompute_live_weight(state: &mut SimState) {
    let live: f64 = state
        .live
        .iter()
        .map(|&index| state.apps[index].record.weight)
        .sum();
    state.stats.live_weight = live;
    if live > state.stats.max_live_weight {
        state.stats.max_live_weight = live;
    }
}

pub(super) fn repo_state(record: &AppRecord) -> &'static str {
    if record.deleted_at.is_some() {
        "DELETED"
    } else if record.repo_ready_at.is_some() {
        "CREATED"
    } else {
        "CREATING"
    }
}
