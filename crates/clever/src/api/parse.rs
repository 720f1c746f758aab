//! Reading the application objects of API answers, leniently: unknown
//! fields ignored, numbers taken in any of the shapes seen.

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};

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

/// An application object of a listing, reduced while it is read to the
/// fields [`parse_app`] uses. The listing covers the whole organisation,
/// and each object carries the whole flavor catalogue: read as JSON trees,
/// ten thousand of them took hundreds of megabytes at once.
#[derive(Debug, Deserialize)]
pub(super) struct ListedFields {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    description: Option<Value>,
    #[serde(default, rename = "creationDate")]
    creation_date: Option<Value>,
    #[serde(default)]
    deployment: Option<Lenient<DeploymentFields>>,
    #[serde(default)]
    instance: Option<Lenient<InstanceFields>>,
}

#[derive(Debug, Deserialize)]
struct DeploymentFields {
    #[serde(default, rename = "repoState")]
    repo_state: Option<Value>,
    #[serde(default, rename = "httpUrl")]
    http_url: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct InstanceFields {
    #[serde(default, rename = "maxFlavor")]
    max_flavor: Option<Value>,
}

/// An entry of the listing: an application object, or anything else
/// (skipped, as an object without a plain id is).
pub(super) type ListedEntry = Lenient<ListedFields>;

impl ListedEntry {
    pub(super) fn into_app(self) -> Option<App> {
        match self {
            Lenient::Shaped(fields) => fields.into_app(),
            Lenient::Other(_) => None,
        }
    }
}

/// An object of the expected shape, or anything else (ignored, as
/// [`parse_app`] ignores a field of another shape).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Lenient<T> {
    Shaped(T),
    Other(IgnoredAny),
}

impl ListedFields {
    /// The application, as [`parse_app`] reads the same object whole.
    fn into_app(self) -> Option<App> {
        let mut object = Map::new();
        let put = |map: &mut Map<String, Value>, key: &str, value: Option<Value>| {
            if let Some(value) = value {
                map.insert(key.to_owned(), value);
            }
        };
        put(&mut object, "id", self.id);
        put(&mut object, "name", self.name);
        put(&mut object, "description", self.description);
        put(&mut object, "creationDate", self.creation_date);
        if let Some(Lenient::Shaped(deployment)) = self.deployment {
            let mut fields = Map::new();
            put(&mut fields, "repoState", deployment.repo_state);
            put(&mut fields, "httpUrl", deployment.http_url);
            object.insert("deployment".to_owned(), Value::Object(fields));
        }
        if let Some(Lenient::Shaped(instance)) = self.instance {
            let mut fields = Map::new();
            put(&mut fields, "maxFlavor", instance.max_flavor);
            object.insert("instance".to_owned(), Value::Object(fields));
        }
        parse_app(&Value::Object(object))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A listing read into its used fields gives the applications that
    /// reading each object whole gives.
    #[test]
    fn a_listing_read_field_by_field_reads_as_whole_objects_do() {
        let flavor = json!({"name": "M", "mem": 4096, "cpus": 4, "price": 0.3});
        let listing = json!([
            {
                "id": "app_1", "name": "hpd-job-abcdefgh-1", "description": "paas-runner job 1 owner=x",
                "creationDate": 1_700_000_000_000_i64,
                "instance": {"type": "docker", "maxFlavor": flavor, "flavors": [flavor, flavor]},
                "deployment": {"repoState": "CREATED", "httpUrl": "https://git/app_1.git", "type": "GIT"},
                "vhosts": [{"fqdn": "x"}], "env": [{"name": "A", "value": "b"}]
            },
            {"id": "app_2", "name": 7, "creationDate": "1700000000000", "deployment": "odd", "instance": null},
            {"id": "../etc", "name": "forged"},
            {"name": "no id"},
            42,
            "text"
        ]);
        let whole: Vec<App> = listing
            .as_array()
            .expect("array")
            .iter()
            .filter_map(parse_app)
            .collect();
        let entries: Vec<ListedEntry> =
            serde_json::from_value(listing.clone()).expect("any listing reads");
        let by_fields: Vec<App> = entries
            .into_iter()
            .filter_map(ListedEntry::into_app)
            .collect();
        assert_eq!(by_fields, whole);
        assert_eq!(
            by_fields
                .iter()
                .map(|app| app.id.as_str())
                .collect::<Vec<_>>(),
            ["app_1", "app_2"]
        );
        assert_eq!(by_fields[0].repo_state.as_deref(), Some("CREATED"));
        assert_eq!(
            by_fields[0].max_flavor.as_ref().map(|f| f.ram_mib),
            Some(4096)
        );
        assert_eq!(by_fields[1].creation_date_ms, Some(1_700_000_000_000));
    }
}
