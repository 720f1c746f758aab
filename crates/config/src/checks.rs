//! Checks of values that would otherwise fail late or dangerously: control characters in tokens and image names, path-like organisation ids, a Clever Cloud environment without the Heptapod Runner switch.
//!
//! Each check names the key and says what to write instead; none quotes a
//! secret.

use std::collections::BTreeMap;

use paas_core::sanitize::{is_unsafe_char, sanitize};
use paas_core::Secret;

use crate::reader::TableReader;
use crate::ConfigError;

/// The `[runners.cc_extra_env]` variable heptapod-paas-runner's README
/// requires, set to `"true"` (its exact purpose on Clever Cloud's side is
/// UNVERIFIED, reference clever-cloud-api.md §9).
pub(crate) const HEPTAPOD_RUNNER_SWITCH: &str = "CC_ENABLE_HEPTAPOD_RUNNER";

/// A token (`token`, `cc_token`, the watch token) must be one line of
/// printable characters: a line break or escape code would be cut by HTTP
/// or forge a header, and usually comes from a copy-paste mistake.
pub(crate) fn check_token(
    table: &TableReader<'_>,
    key: &str,
    what: &str,
    token: &Secret,
) -> Result<(), ConfigError> {
    if let Some(position) = unsafe_char_position(token.expose()) {
        return Err(table.error(
            key,
            format!(
                "the {what} contains a control character (a line break, tab or escape code) \
                 at character {position}; write the token alone on one line, exactly as it \
                 was given, without escapes such as \\n"
            ),
        ));
    }
    Ok(())
}

/// `heptapod_runner_main_image` goes into the `FROM` line of a Dockerfile:
/// a line break there would add instructions of its own.
pub(crate) fn check_image(
    table: &TableReader<'_>,
    key: &str,
    image: &str,
) -> Result<(), ConfigError> {
    let problem = if let Some(position) = unsafe_char_position(image) {
        format!("contains a control character (a line break, tab or escape code) at character {position}")
    } else if image.trim().is_empty() {
        "is empty".to_owned()
    } else if image.contains(char::is_whitespace) {
        "contains a space".to_owned()
    } else {
        return Ok(());
    };
    Err(table.error(
        key,
        format!(
            "the image name {problem}; write one image reference on one line, such as \
             \"registry.heptapod.net/heptapod/heptapod-runner:latest\""
        ),
    ))
}

/// `cc_orga_id` goes into API paths: it must be a Clever Cloud owner id,
/// `orga_…` (an organisation) or `user_…` (a personal account), of letters,
/// digits, `-` and `_` (reference clever-cloud-api.md §1: ids are
/// `orga_<uuid>`, `user_<uuid>`). Anything path-like (`/`, `?`, `#`, `..`,
/// spaces, controls) is refused rather than sent.
pub(crate) fn check_orga_id(
    table: &TableReader<'_>,
    key: &str,
    orga_id: &str,
) -> Result<(), ConfigError> {
    let shown = sanitize(orga_id, 80, &[]);
    let (prefix_ok, rest) = match orga_id
        .strip_prefix("orga_")
        .or_else(|| orga_id.strip_prefix("user_"))
    {
        Some(rest) => (true, rest),
        None => (false, orga_id),
    };
    let chars_ok = !rest.is_empty()
        && rest
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if prefix_ok && chars_ok {
        return Ok(());
    }
    let problem = if !prefix_ok {
        "does not start with `orga_` or `user_`"
    } else if rest.is_empty() {
        "has nothing after its prefix"
    } else {
        "contains characters other than letters, digits, `-` and `_`"
    };
    Err(table.error(
        key,
        format!(
            "\"{shown}\" is not a Clever Cloud organisation id: it {problem}; write the id \
             Clever Cloud shows for the organisation, such as \
             \"orga_07cf2ef0-c9ad-4f04-b492-94c164f95c76\" (or \"user_…\" for a personal account)"
        ),
    ))
}

/// A `[runners.cc_extra_env]` written without `CC_ENABLE_HEPTAPOD_RUNNER =
/// "true"`: the section exists, so the operator meant to configure the job
/// machines' environment, and forgot the one variable
/// heptapod-paas-runner's documentation requires there.
pub(crate) fn check_extra_env(
    table: &TableReader<'_>,
    key: &str,
    extra_env: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let problem = match extra_env.get(HEPTAPOD_RUNNER_SWITCH) {
        Some(value) if value == "true" => return Ok(()),
        Some(_) => format!("sets {HEPTAPOD_RUNNER_SWITCH} to another value than \"true\""),
        None => format!("has no {HEPTAPOD_RUNNER_SWITCH}"),
    };
    Err(table.error(
        key,
        format!(
            "[runners.cc_extra_env] {problem}; add the line \
             {HEPTAPOD_RUNNER_SWITCH} = \"true\" to it (heptapod-paas-runner requires it \
             for the job machines)"
        ),
    ))
}

/// The 1-based position (in characters) of the first character that must
/// not be in a single-line value.
fn unsafe_char_position(text: &str) -> Option<usize> {
    text.chars().position(is_unsafe_char).map(|index| index + 1)
}
