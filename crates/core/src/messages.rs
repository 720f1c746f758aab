//! Texts written into job logs for CI users: short, specific, actionable.
//!
//! Every message is one or more complete lines, coloured like gitlab-runner's
//! own error lines so that they stand out in the GitLab job log.

use crate::flavor::FlavorTable;

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

/// The inner runner never wrote to the job log.
pub fn launch_timeout(timeout_secs: u64) -> String {
    format!("Job not active (no log) after {timeout_secs} seconds")
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
    fn above_max_names_the_maximum() {
        let text = flavor_above_max("XL", "M", &table());
        assert!(text.contains("maximum flavor \"M\""), "{text}");
        assert!(text.contains("XS, S, M."), "{text}");
    }
}
