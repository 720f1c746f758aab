//! Names and owner markers of the applications created for jobs: the one
//! place that formats and parses them (the dispatcher, the driver's
//! reconciliation and `paas-runner reap` all go through here).
//!
//! - Name: `hpd-job-<runner key>-<job id>`, as heptapod-paas-runner names
//!   them. The runner key (first 8 characters of the runner token) may
//!   itself contain `-` (`glrt-…` tokens), so a name is parsed against a
//!   known key, never split blindly.
//! - Owner marker, in the application's `description`:
//!   `paas-runner job <job id> owner=<system id>`, where the system id is
//!   the installation's (kept in its state store). Two installations sharing
//!   a Clever Cloud organisation and a runner key thus tell their machines
//!   apart; an application without a marker (made by heptapod-paas-runner,
//!   by an older paas-runner, or by hand) is nobody's we know.

/// Prefix of every job application name.
pub const APP_NAME_PREFIX: &str = "hpd-job-";

/// Start of an owner marker.
const MARKER_PREFIX: &str = "paas-runner job ";
/// Between the job id and the owner's system id.
const OWNER_FIELD: &str = " owner=";
/// Longest system id accepted from a marker.
const MAX_OWNER_LEN: usize = 64;

/// Name of the application of job `job_id` of the runner whose key is
/// `runner_key`.
pub fn app_name(runner_key: &str, job_id: u64) -> String {
    format!("{APP_NAME_PREFIX}{runner_key}-{job_id}")
}

/// What every application name of the runner `runner_key` starts with.
pub fn app_name_prefix(runner_key: &str) -> String {
    format!("{APP_NAME_PREFIX}{runner_key}-")
}

/// The job id of an application name of the runner `runner_key`, if the
/// name is one of that runner's.
pub fn job_id_of(name: &str, runner_key: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(APP_NAME_PREFIX)?
        .strip_prefix(runner_key)?
        .strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The owner marker written in the description of the application of job
/// `job_id`, for the installation `system_id`.
pub fn owner_marker(job_id: u64, system_id: &str) -> String {
    format!("{MARKER_PREFIX}{job_id}{OWNER_FIELD}{system_id}")
}

/// The owner's system id in a description, if it carries a well-formed
/// marker. Only letters, digits, `_`, `-` and `.` make an owner, so what
/// is returned is safe to show.
pub fn owner_of(description: &str) -> Option<&str> {
    let rest = description.trim().strip_prefix(MARKER_PREFIX)?;
    let (job_id, owner) = rest.split_once(OWNER_FIELD)?;
    if job_id.is_empty() || !job_id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let well_formed = !owner.is_empty()
        && owner.len() <= MAX_OWNER_LEN
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    well_formed.then_some(owner)
}

/// Whose an application is, from this installation's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppOwner {
    /// Marked with this installation's system id.
    Ours,
    /// Marked with another installation's system id.
    Foreign(String),
    /// No marker (or none that parses): owner unknown.
    Unmarked,
}

impl AppOwner {
    /// Classifies an application by its `description` (`None`: the API gave
    /// none) for the installation `system_id`.
    pub fn classify(description: Option<&str>, system_id: &str) -> AppOwner {
        match description.and_then(owner_of) {
            Some(owner) if owner == system_id => AppOwner::Ours,
            Some(owner) => AppOwner::Foreign(owner.to_owned()),
            None => AppOwner::Unmarked,
        }
    }

    /// For logs and listings: the owner's system id, or `unmarked`.
    pub fn label<'a>(&'a self, system_id: &'a str) -> &'a str {
        match self {
            AppOwner::Ours => system_id,
            AppOwner::Foreign(owner) => owner,
            AppOwner::Unmarked => "unmarked",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_with_dashed_keys() {
        let name = app_name("glrt-abc", 42);
        assert_eq!(name, "hpd-job-glrt-abc-42");
        assert!(name.starts_with(&app_name_prefix("glrt-abc")));
        assert_eq!(job_id_of(&name, "glrt-abc"), Some(42));
        assert_eq!(job_id_of(&name, "glrt"), None);
        assert_eq!(job_id_of("hpd-job-glrt-abc-", "glrt-abc"), None);
        assert_eq!(job_id_of("hpd-job-glrt-abc-+4", "glrt-abc"), None);
        assert_eq!(job_id_of("hpd-job-glrt-abc-4x", "glrt-abc"), None);
        assert_eq!(job_id_of("other-glrt-abc-4", "glrt-abc"), None);
    }

    #[test]
    fn markers_round_trip_and_classify() {
        let marker = owner_marker(7, "r_abc123");
        assert_eq!(marker, "paas-runner job 7 owner=r_abc123");
        assert_eq!(owner_of(&marker), Some("r_abc123"));
        assert_eq!(
            AppOwner::classify(Some(&marker), "r_abc123"),
            AppOwner::Ours
        );
        assert_eq!(
            AppOwner::classify(Some(&marker), "r_other"),
            AppOwner::Foreign("r_abc123".into())
        );
        assert_eq!(AppOwner::classify(None, "r_abc123"), AppOwner::Unmarked);
        // heptapod-paas-runner sends no description; clever-tools the name.
        assert_eq!(
            AppOwner::classify(Some("hpd-job-abc-7"), "r_abc123"),
            AppOwner::Unmarked
        );
    }

    #[test]
    fn malformed_markers_are_unmarked() {
        for description in [
            "paas-runner job 7 owner=",
            "paas-runner job owner=r_x",
            "paas-runner job x7 owner=r_x",
            "paas-runner job 7 owner=r_x\nforged line",
            "paas-runner job 7 owner=r x",
            "paas-runner job 7 owner=\u{1b}[31mr",
        ] {
            assert_eq!(owner_of(description), None, "{description:?}");
        }
        let long = format!("paas-runner job 7 owner={}", "a".repeat(65));
        assert_eq!(owner_of(&long), None);
    }
}
