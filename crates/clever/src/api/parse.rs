//! Reading the application objects of API answers, leniently: unknown
//! fields ignored, numbers taken in any of the shapes seen.

use serde_json::Value;

use super::transport::check_id;
use super::{App, AppFlavor};

/// Longest application id taken from an answer (real ids are `app_` and a UUID).
const MAX_ID_CHARS: usize = 128;

/// The fields of an application object the runner uses; `None` without a
/// plain id.
pub(super) fn parse_app(app: &Value) -> Option<App> {
    let text = |pointer: &str| {
        app.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    // The id goes into URLs and log fields: only a plain Clever Cloud id is
    // taken. The name is outside text too: control characters escaped and
    // cut, so it can never forge a log line (our own names are plain ASCII).
    let id =
        text("/id").filter(|id| id.len() <= MAX_ID_CHARS && check_id("application", id).is_ok())?;
    Some(App {
        id,
        name: text("/name")
            .map(|name| paas_core::sanitize(&name, paas_core::sanitize::MAX_VALUE_CHARS, &[]))
            .unwrap_or_default(),
        repo_state: text("/deployment/repoState"),
        http_url: text("/deployment/httpUrl"),
        max_flavor: app
            .pointer("/instance/maxFlavor")
            .and_then(parse_app_flavor),
        creation_date_ms: app.get("creationDate").and_then(lenient_i64),
        description: text("/description"),
    })
}

fn parse_app_flavor(flavor: &Value) -> Option<AppFlavor> {
    Some(AppFlavor {
        name: flavor.get("name")?.as_str()?.to_owned(),
        ram_mib: flavor.get("mem").and_then(lenient_u64)?,
        cpus: flavor
            .get("cpus")
            .and_then(lenient_u64)
            .and_then(|c| u32::try_from(c).ok())?,
    })
}

/// A whole number given as JSON integer, integral float or numeric string.
pub(super) fn lenient_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number.as_i64().or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

pub(super) fn lenient_u64(value: &Value) -> Option<u64> {
    lenient_i64(value).and_then(|n| u64::try_from(n).ok())
}
