//! The model cloud: applications by id, with the weight they cost.

use super::*;

/// An application of the model cloud.
#[derive(Debug, Clone)]
pub struct ModelApp {
    pub id: String,
    pub name: String,
    pub job: JobKey,
    pub flavor: String,
    pub weight: f64,
    pub pushed: bool,
    pub created_at: Instant,
    /// Created behind the dispatcher's back (a leftover no record accounts
    /// for, a creation that landed after its job was forgotten).
    pub stray: bool,
    /// A stray the dispatcher could not count when it took a job (it had
    /// not listed it yet): the quota check of the cloud leaves it out.
    pub excused: bool,
    /// Whose it is (its description's marker); the harness's dispatcher is
    /// the installation whose applications are `Ours`.
    pub owner: AppOwner,
}

/// An in-memory cloud: applications by id (names are looked up by scan),
/// with the weight they cost.
#[derive(Debug, Default)]
pub struct ModelCloud {
    pub apps: BTreeMap<String, ModelApp>,
    pub(crate) next_id: u64,
    pub creations: u64,
    pub adoptions: u64,
    pub deletions: u64,
    /// Applications created per job.
    pub created_for: BTreeMap<JobKey, u32>,
    /// Build contexts pushed per job (the inner runner starts on each).
    pub pushes: BTreeMap<JobKey, u32>,
    pub deploys_to_missing_app: u64,
    pub max_live_weight: f64,
    /// Strays that appeared (leftovers, late creations).
    pub strays: u64,
    /// Applications deleted by `DeleteOrphan`.
    pub orphan_deletions: u64,
    /// How long a new application takes to be ready for its job.
    pub ready_after: Duration,
}

impl ModelCloud {
    pub fn live_weight(&self) -> f64 {
        self.apps.values().map(|app| app.weight).sum()
    }

    /// Weight of the strays the dispatcher could not have counted.
    pub fn excused_weight(&self) -> f64 {
        self.apps
            .values()
            .filter(|app| app.excused)
            .map(|app| app.weight)
            .sum()
    }

    pub fn names(&self) -> Vec<&str> {
        self.apps.values().map(|app| app.name.as_str()).collect()
    }

    /// An application created behind the dispatcher's back.
    pub fn insert_stray(
        &mut self,
        name: &str,
        job: JobKey,
        flavor: &Flavor,
        now: Instant,
        excused: bool,
    ) -> String {
        self.strays += 1;
        self.add(name, job, flavor, now, true, excused)
    }

    /// Adds an application under a new id, which it returns.
    pub(crate) fn add(
        &mut self,
        name: &str,
        job: JobKey,
        flavor: &Flavor,
        now: Instant,
        stray: bool,
        excused: bool,
    ) -> String {
        self.next_id += 1;
        let id = format!("app-{}", self.next_id);
        self.apps.insert(
            id.clone(),
            ModelApp {
                id: id.clone(),
                name: name.to_owned(),
                job,
                flavor: flavor.name.clone(),
                weight: flavor.weight(),
                pushed: false,
                created_at: now,
                stray,
                excused,
                owner: AppOwner::Ours,
            },
        );
        self.max_live_weight = self.max_live_weight.max(self.live_weight());
        id
    }

    /// The applications whose name starts with `prefix`, as the API lists
    /// them (creation time in ms from `start`).
    pub(crate) fn list(&self, prefix: &str, start: Instant, now: Instant) -> Vec<ListedApp> {
        self.apps
            .values()
            .filter(|app| app.name.starts_with(prefix))
            .map(|app| ListedApp {
                id: app.id.clone(),
                name: app.name.clone(),
                weight: app.weight,
                created_ms: Some((app.created_at - start).as_millis() as i64),
                owner: app.owner.clone(),
                age: Some(now.saturating_duration_since(app.created_at)),
            })
            .collect()
    }

    /// The application of that name this installation owns (the runner
    /// adopts and deletes by name only what carries its marker).
    pub fn by_name(&self, name: &str) -> Option<&ModelApp> {
        self.apps
            .values()
            .find(|app| app.name == name && app.owner == AppOwner::Ours)
    }

    /// An application of another owner (or unmarked) under a runner's name.
    pub fn insert_foreign(
        &mut self,
        name: &str,
        job: JobKey,
        flavor: &Flavor,
        now: Instant,
        owner: AppOwner,
    ) -> String {
        let id = self.add(name, job, flavor, now, true, false);
        if let Some(app) = self.apps.get_mut(&id) {
            app.owner = owner;
        }
        id
    }

    /// Creates the application, or with `may_exist` adopts the one of that
    /// name this installation owns (as `Provider::create_or_adopt`).
    pub(crate) fn create(
        &mut self,
        name: &str,
        job: JobKey,
        flavor: &Flavor,
        may_exist: bool,
        now: Instant,
    ) -> App {
        if let Some(app) = self.by_name(name).filter(|_| may_exist) {
            let adopted = App {
                id: app.id.clone(),
                weight: app.weight,
            };
            self.adoptions += 1;
            return adopted;
        }
        let id = self.add(name, job, flavor, now, false, false);
        self.creations += 1;
        *self.created_for.entry(job).or_default() += 1;
        App {
            id,
            weight: flavor.weight(),
        }
    }

    /// Whether the application is ready for its job (`None`: no such
    /// application).
    pub(crate) fn is_ready(&self, app_id: &str, now: Instant) -> Option<bool> {
        let app = self.apps.get(app_id)?;
        Some(now >= app.created_at + self.ready_after)
    }

    /// Pushes the build context unless the repository has a head already.
    /// `None`: no such application; `Some(true)`: this push started a run.
    pub(crate) fn push(&mut self, app_id: &str) -> Option<bool> {
        let app = self.apps.get_mut(app_id)?;
        if app.pushed {
            return Some(false);
        }
        app.pushed = true;
        *self.pushes.entry(app.job).or_default() += 1;
        Some(true)
    }

    pub(crate) fn delete(&mut self, app_id: Option<&str>, name: &str) -> Vec<ModelApp> {
        let ids: Vec<String> = match app_id {
            Some(id) => self
                .apps
                .get(id)
                .map(|app| app.id.clone())
                .into_iter()
                .collect(),
            None => self
                .apps
                .values()
                .filter(|app| app.name == name && app.owner == AppOwner::Ours)
                .map(|app| app.id.clone())
                .collect(),
        };
        let deleted: Vec<ModelApp> = ids.iter().filter_map(|id| self.apps.remove(id)).collect();
        self.deletions += deleted.len() as u64;
        deleted
    }
}
