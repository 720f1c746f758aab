//! Texts written into job logs for CI users: short, specific, actionable.
//!
//! Every message is one or more complete lines, coloured like gitlab-runner's
//! own error lines so that they stand out in the GitLab job log.

use crate::flavor::{Flavor, FlavorTable};

const RED: &str = "\x1b[31;1m";
const YELLOW: &str = "\x1b[0;33m";
const RESET: &str = "\x1b[0;m";

/// The job variable users set to choose their machine size.
pub const FLAVOR_VARIABLE: &str = "CI_CLEVER_CLOUD_FLAVOR";

/// Wraps each line of `text` in red and ends it with a newline.
pub fn red_lines(text: &str) -> String {
    colour_lines(RED, text)
}

/// Wraps each line of `text` in yellow and ends it with a newline.
pub fn yellow_lines(text: &str) -> String {
    colour_lines(YELLOW, text)
}

fn colour_lines(colour: &str, text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.lines() {
        out.push_str(colour);
        out.push_str(line);
        out.push_str(RESET);
        out.push('\n');
    }
    out
}

/// The job asked for a flavor the cloud does not offer.
pub fn unknown_flavor(requested: &str, table: &FlavorTable, max_weight: f64) -> String {
    let allowed = table.names_up_to(max_weight);
    let mut text = format!(
        "ERROR: the flavor {requested:?} requested by the {FLAVOR_VARIABLE} job variable does not exist.\n\
         Allowed flavors on this runner: {}.",
        allowed.join(", ")
    );
    if let Some(close) = allowed
        .iter()
        .find(|name| name.eq_ignore_ascii_case(requested))
    {
        text.push_str(&format!(
            "\nFlavor names are case-sensitive: did you mean {close:?}?"
        ));
    }
    text.push_str(&format!(
        "\nSet {FLAVOR_VARIABLE} to one of them (or remove it to get the default) and retry the job."
    ));
    text
}

/// The job asked for a flavor larger than the runner allows.
pub fn flavor_above_max(requested: &str, max_flavor: &str, table: &FlavorTable) -> String {
    let allowed = table
        .get(max_flavor)
        .map(|max| table.names_up_to(max.weight()))
        .unwrap_or_default();
    format!(
        "ERROR: the flavor {requested:?} requested by the {FLAVOR_VARIABLE} job variable is larger than \
         the maximum flavor {max_flavor:?} of this runner.\n\
         Allowed flavors on this runner: {}.\n\
         Change the value of {FLAVOR_VARIABLE} in your job definition, or run this job on another runner.",
        allowed.join(", ")
    )
}

/// The inner runner never wrote to the job log. The first line is the one
/// heptapod-paas-runner writes; the second says what it means.
pub fn launch_timeout(timeout_secs: u64, flavor: Option<&Flavor>, zone: &str) -> String {
    format!(
        "Job not active (no log) after {timeout_secs} seconds\n\
         The Clever Cloud machine prepared for this job ({}) did not start it. \
         This is an infrastructure problem, not a problem of your job: retry it, \
         and tell the administrators of this runner if it happens again.",
        machine(flavor, zone)
    )
}

/// A step against the cloud failed for good: what happened, then what the
/// user can do about it.
pub fn infrastructure_failure(what_happened: &str) -> String {
    format!(
        "{what_happened}\n\
         This is a problem of the runner's infrastructure, not of your job: retry it, \
         and tell the administrators of this runner if it happens again."
    )
}

/// The job's machine disappeared while the job was under way: deleted
/// outside paas-runner (by hand, by another tool or installation, or by
/// Clever Cloud). `app_id` comes from the API: only its plain characters
/// are shown.
pub fn machine_vanished(app_id: &str) -> String {
    let app_id: String = app_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        .take(64)
        .collect();
    format!(
        "ERROR: the Clever Cloud machine running this job (application {app_id}) was deleted \
         outside paas-runner, so the job cannot go on.\n\
         Your job is not at fault: retry it. If this happens again, tell the administrators of \
         this runner: something else deletes its machines (another installation or a cleanup \
         script sharing its Clever Cloud organisation)."
    )
}

/// A job is slow to start: what is being prepared, and what will happen.
pub fn slow_launch(
    flavor: Option<&Flavor>,
    zone: &str,
    waited_secs: u64,
    timeout_secs: Option<u64>,
) -> String {
    let mut text = format!(
        "Preparing a Clever Cloud machine for this job ({}): this is taking longer than usual ({}).",
        machine(flavor, zone),
        duration_text(waited_secs)
    );
    if let Some(timeout) = timeout_secs {
        text.push_str(&format!(
            " The job will be failed with an explanation if the machine has not started it after {}.",
            duration_text(timeout)
        ));
    }
    text
}

/// "flavor S: 2 vCPUs, 4 GiB of RAM, zone par".
fn machine(flavor: Option<&Flavor>, zone: &str) -> String {
    match flavor {
        Some(flavor) => format!(
            "flavor {}: {} vCPU{}, {} of RAM, zone {zone}",
            flavor.name,
            flavor.cpus,
            if flavor.cpus == 1 { "" } else { "s" },
            ram_text(flavor.ram_mib)
        ),
        None => format!("zone {zone}"),
    }
}

fn ram_text(ram_mib: u64) -> String {
    if ram_mib % 1024 == 0 {
        format!("{} GiB", ram_mib / 1024)
    } else {
        format!("{ram_mib} MiB")
    }
}

fn duration_text(secs: u64) -> String {
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s} s"),
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flavor::Flavor;

    fn table() -> FlavorTable {
        FlavorTable::new([("XS", 1024), ("S", 4096), ("M", 8192), ("XL", 32768)].map(
            |(name, ram_mib)| Flavor {
                name: name.into(),
                api_name: format!("heptapod-runner-{name}"),
                ram_mib,
                cpus: 1,
            },
        ))
    }

    #[test]
    fn red_lines_colours_every_line() {
        assert_eq!(
            red_lines("a\nb"),
            "\x1b[31;1ma\x1b[0;m\n\x1b[31;1mb\x1b[0;m\n"
        );
    }

    #[test]
    fn unknown_flavor_lists_allowed_and_hints_case() {
        let text = unknown_flavor(
            "xs",
            &table(),
            table().get("M").map(Flavor::weight).unwrap_or(0.0),
        );
        assert!(
            text.contains("Allowed flavors on this runner: XS, S, M."),
            "{text}"
        );
        assert!(text.contains("did you mean \"XS\"?"), "{text}");
        assert!(text.contains("CI_CLEVER_CLOUD_FLAVOR"), "{text}");
    }

    #[test]
    fn machine_vanished_says_what_to_do_and_shows_no_control_character() {
        let text = machine_vanished("app_1\n\x1b[31mforged");
        assert!(text.contains("application app_131mforged"), "{text}");
        assert!(text.contains("deleted outside paas-runner"), "{text}");
        assert!(text.contains("retry it"), "{text}");
        assert!(!text.contains('\x1b'), "{text}");
    }

    #[test]
    fn above_max_names_the_maximum() {
        let text = flavor_above_max("XL", "M", &table());
        assert!(text.contains("maximum flavor \"M\""), "{text}");
        assert!(text.contains("XS, S, M."), "{text}");
    }
}
