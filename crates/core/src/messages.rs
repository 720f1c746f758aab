//! Texts written into job logs for CI users: short, specific, actionable.
//!
//! Every message is one or more complete lines, coloured like gitlab-runner's
//! own error lines so that they stand out in the GitLab job log.

use std::time::Duration;

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
    let shown = quoted(requested);
    let mut text = format!(
        "ERROR: the flavor {shown} requested by the {FLAVOR_VARIABLE} job variable does not exist.\n\
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
    let shown = quoted(requested);
    format!(
        "ERROR: the flavor {shown} requested by the {FLAVOR_VARIABLE} job variable is larger than \
         the maximum flavor {max_flavor:?} of this runner.\n\
         Allowed flavors on this runner: {}.\n\
         Change the value of {FLAVOR_VARIABLE} in your job definition, or run this job on another runner.",
        allowed.join(", ")
    )
}

/// A value from the job, in double quotes, sanitised (it is the user's
/// text: no line break or terminal code may reach the log as such).
fn quoted(value: &str) -> String {
    format!(
        "\"{}\"",
        crate::sanitize::sanitize(value, crate::sanitize::MAX_VALUE_CHARS, &[])
    )
}

/// The job's payload (its definition as the coordinator sends it: script,
/// variables, ...) is larger than the runner accepts.
pub fn payload_too_large(limit_bytes: u64) -> String {
    format!(
        "ERROR: the definition of this job sent by GitLab is larger than the {} this runner accepts.\n\
         Its variables (project, group and pipeline variables, files) or its script are probably very large: \
         make them smaller, or run this job on another runner.",
        size_text(limit_bytes)
    )
}

fn size_text(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// The inner runner never wrote to the job log within `timeout` of the
/// deployment. The first line is the one heptapod-paas-runner writes; the
/// second says what it means.
pub fn launch_timeout(timeout: Duration, flavor: Option<&Flavor>, zone: &str) -> String {
    format!(
        "Job not active (no log) after {}\n\
         The Clever Cloud machine prepared for this job ({}) did not start it. \
         This is an infrastructure problem, not a problem of your job: retry it, \
         and tell the administrators of this runner if it happens again.",
        seconds_text(timeout),
        machine(flavor, zone)
    )
}

/// The deployment repository of the job's machine was still not ready when
/// the runner's wait for it (`cc_deployment_repo_timeout`, `timeout`) ended.
/// The wait lasts that long and no longer, and is not repeated.
pub fn deployment_repo_not_ready(app_id: &str, timeout: Duration) -> String {
    format!(
        "The deployment repository of the Clever Cloud application {app_id} was not ready after {}, \
         the longest this runner waits for it.",
        seconds_text(timeout)
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
            " The job will be failed with an explanation if the machine has not started it {} after receiving it.",
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
    if ram_mib.is_multiple_of(1024) {
        format!("{} GiB", ram_mib / 1024)
    } else {
        format!("{ram_mib} MiB")
    }
}

/// "10 seconds", "0.5 seconds": a configured duration as written in
/// heptapod-paas-runner's messages (always "seconds"), never rounded to a
/// different value.
pub fn seconds_text(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if duration.subsec_nanos() == 0 {
        format!("{} seconds", duration.as_secs())
    } else {
        // At most millisecond precision, without trailing zeros.
        let text = format!("{secs:.3}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        format!("{text} seconds")
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
    fn durations_are_stated_as_configured() {
        for (duration, text) in [
            (Duration::from_secs(10), "10 seconds"),
            (Duration::from_secs(1), "1 seconds"),
            (Duration::from_millis(500), "0.5 seconds"),
            (Duration::from_millis(2250), "2.25 seconds"),
            (Duration::from_secs(300), "300 seconds"),
        ] {
            assert_eq!(seconds_text(duration), text);
        }
        let text = deployment_repo_not_ready("app_1", Duration::from_millis(1500));
        assert!(
            text.contains("app_1 was not ready after 1.5 seconds"),
            "{text}"
        );
        let text = launch_timeout(Duration::from_millis(500), None, "par");
        assert!(
            text.starts_with("Job not active (no log) after 0.5 seconds\n"),
            "{text}"
        );
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
