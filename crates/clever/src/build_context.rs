//! The files pushed to a job's application: a Dockerfile, the inner runner config and the job payload.
//!
//! The application's VM builds the Dockerfile, whose image is Heptapod Runner
//! with two files baked in: `runner.toml`, a runner config with a single
//! `[[runners]]` entry (the inner runner, which holds no cloud credentials),
//! and `job.json`, the job payload as the coordinator gave it. Its entrypoint
//! runs that one job with `gitlab-runner exec-fetched-job`, and the inner
//! runner reports the log and the result to the coordinator itself.
//!
//! The payload is changed in one way only, as the reference runner documents
//! ("Image management and Dependency Proxy"): every VM starts with an empty
//! image cache, so images and services from Docker Hub are pulled through the
//! group's Dependency Proxy when the job has the variable
//! `CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX`. Every other byte of the payload
//! is kept as received.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt;

/// Directory of the image where the inner runner finds its config and job.
pub const CONF_DIR: &str = "/etc/heptapod-runner";

/// Job variable giving the Dependency Proxy prefix of the job's top-level group.
pub const DEPENDENCY_PROXY_PREFIX_VARIABLE: &str = "CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX";

/// Why a build context could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BuildContextError {
    /// The job payload is not a JSON object.
    #[error("job payload is not a JSON object: {0}")]
    InvalidPayload(String),
    /// The inner runner config cannot be written as TOML.
    #[error("inner runner config cannot be written as TOML: {0}")]
    InvalidRunnerConfig(String),
    /// The base image name would not make a valid one-line `FROM` instruction.
    #[error("base image name {0:?} is not a valid image reference")]
    InvalidBaseImage(String),
    /// A file of the build context holds a credential of this service (the
    /// runner token, the cloud token): it is not pushed.
    #[error("{0} would carry a credential of the runner to the job's machine; not pushed")]
    CredentialInContext(String),
}

/// Refuses a build context in which one of `credentials` appears: the
/// machine runs the job's code, and anything on it is readable by a job
/// that reaches its Docker daemon. The inner runner's `runner.toml` holds a
/// placeholder instead of the runner token (`paas_config::placeholder_token`),
/// so this only fires if a configuration forwarded a credential by another
/// key; the job's own token in `job.json` is expected and not checked.
pub fn check_no_credentials(
    files: &[(String, Vec<u8>)],
    credentials: &[&paas_core::Secret],
) -> Result<(), BuildContextError> {
    for (name, content) in files {
        for credential in credentials {
            let needle = credential.expose().as_bytes();
            if !needle.is_empty() && content.windows(needle.len()).any(|window| window == needle) {
                return Err(BuildContextError::CredentialInContext(name.clone()));
            }
        }
    }
    Ok(())
}

/// The Dockerfile of the build context, based on `base_image` (Heptapod Runner).
///
/// Unlike the reference runner, it does not set `ENV DEBUG="true"`: that
/// variable makes the inner runner print its debug logs, and those would end
/// up in the users' job logs.
pub fn dockerfile(base_image: &str) -> String {
    format!(
        "FROM {base_image}\n\
         COPY runner.toml {CONF_DIR}/runner.toml\n\
         COPY job.json {CONF_DIR}/job.json\n\
         ENTRYPOINT [\"/usr/bin/gitlab-runner\", \"exec-fetched-job\", \
         \"--config\", \"{CONF_DIR}/runner.toml\", \"{CONF_DIR}/job.json\"]\n"
    )
}

/// A runner config document whose single `[[runners]]` entry is `inner_runner`.
pub fn runner_toml(inner_runner: &toml::Table) -> Result<String, BuildContextError> {
    let mut document = toml::Table::new();
    document.insert(
        "runners".to_owned(),
        toml::Value::Array(vec![toml::Value::Table(inner_runner.clone())]),
    );
    toml::to_string(&document)
        .map_err(|err| BuildContextError::InvalidRunnerConfig(err.to_string()))
}

/// The job payload to bake into the image, with the Dependency Proxy rewrite applied.
///
/// Without a non-empty `CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX` variable the
/// payload is returned byte for byte. Otherwise the `name` of the job's
/// `image` and of each of its `services` that come from Docker Hub becomes
/// `<prefix>/<repository path>[:tag]`, and such services without an alias
/// get the alias `<image name without tag, "/" replaced by "-">`, so that
/// they stay reachable under the host name job authors expect. Object keys
/// keep their order and every other value keeps its exact text.
pub fn job_json(payload: &str) -> Result<Vec<u8>, BuildContextError> {
    let mut job: OrderedObject = serde_json::from_str(payload)
        .map_err(|err| BuildContextError::InvalidPayload(err.to_string()))?;
    let variables = JobVariables::from_payload(&job).expanded();
    let prefix = variables
        .get(DEPENDENCY_PROXY_PREFIX_VARIABLE)
        .trim_end_matches('/');
    if prefix.is_empty() {
        return Ok(payload.as_bytes().to_vec());
    }
    let proxy = DependencyProxy {
        prefix,
        variables: &variables,
    };

    if let Some(image) = job.get("image") {
        if let Some(rewritten) = proxy.rewrite_image(image)? {
            job.set("image", rewritten);
        }
    }
    if let Some(services) = job.get("services") {
        if let Some(rewritten) = proxy.rewrite_services(services)? {
            job.set("services", rewritten);
        }
    }
    serde_json::to_vec(&job).map_err(|err| BuildContextError::InvalidPayload(err.to_string()))
}

/// All files of the build context, sorted by name: `Dockerfile`, `job.json`, `runner.toml`.
pub fn files(
    base_image: &str,
    inner_runner: &toml::Table,
    payload: &str,
) -> Result<Vec<(String, Vec<u8>)>, BuildContextError> {
    // The name is operator configuration, but a line break or a space would
    // let it add instructions to the Dockerfile or break the FROM line.
    if base_image.is_empty()
        || base_image
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(BuildContextError::InvalidBaseImage(base_image.to_owned()));
    }
    Ok(vec![
        ("Dockerfile".to_owned(), dockerfile(base_image).into_bytes()),
        ("job.json".to_owned(), job_json(payload)?),
        (
            "runner.toml".to_owned(),
            runner_toml(inner_runner)?.into_bytes(),
        ),
    ])
}

const DOCKER_HUB_DOMAIN: &str = "docker.io";
const LEGACY_DOCKER_HUB_DOMAIN: &str = "index.docker.io";
const OFFICIAL_IMAGES_NAMESPACE: &str = "library";

/// Splits an image reference into registry domain and repository path (tag
/// included), normalising Docker Hub the way docker's reference library does
/// (`splitDockerDomain` in distribution's `normalize.go`).
fn split_docker_domain(name: &str) -> (&str, String) {
    let (domain, remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB_DOMAIN, name),
    };
    let domain = if domain == LEGACY_DOCKER_HUB_DOMAIN {
        DOCKER_HUB_DOMAIN
    } else {
        domain
    };
    if domain == DOCKER_HUB_DOMAIN && !remainder.contains('/') {
        (domain, format!("{OFFICIAL_IMAGES_NAMESPACE}/{remainder}"))
    } else {
        (domain, remainder.to_owned())
    }
}

/// The service alias GitLab documents as the DNS-compatible one: the image
/// name as written (after variable expansion), without digest or tag, with
/// `/` replaced by `-` (`tutum/wordpress:latest` gives `tutum-wordpress`).
fn service_alias(expanded_name: &str) -> String {
    let without_digest = expanded_name.split('@').next().unwrap_or(expanded_name);
    let last_slash = without_digest.rfind('/');
    let without_tag = match without_digest.rfind(':') {
        // A colon before the last slash would be a registry port; Docker Hub
        // names have none, but stay correct anyway.
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => &without_digest[..colon],
        _ => without_digest,
    };
    without_tag.replace('/', "-")
}

struct DependencyProxy<'a> {
    prefix: &'a str,
    variables: &'a JobVariables,
}

impl DependencyProxy<'_> {
    /// The Docker Hub image `name` rewritten to go through the proxy, with
    /// the name as written after expansion; `None` for other registries.
    fn proxied(&self, name: &str) -> Option<(String, String)> {
        let expanded = self.variables.expand(name);
        let (domain, remainder) = split_docker_domain(&expanded);
        if domain != DOCKER_HUB_DOMAIN {
            return None;
        }
        Some((format!("{}/{remainder}", self.prefix), expanded))
    }

    /// The image object with its name rewritten; `None` to keep it as is.
    fn rewrite_image(&self, image: &RawValue) -> Result<Option<Box<RawValue>>, BuildContextError> {
        let Some(mut image) = parse_object(image, "image") else {
            return Ok(None);
        };
        let Some(name) = image.get_str("name") else {
            return Ok(None);
        };
        let Some((proxied, _)) = self.proxied(&name) else {
            return Ok(None);
        };
        image.set("name", to_raw(&proxied)?);
        Ok(Some(to_raw(&image)?))
    }

    /// The services array with names and aliases rewritten; `None` to keep
    /// it as is.
    fn rewrite_services(
        &self,
        services: &RawValue,
    ) -> Result<Option<Box<RawValue>>, BuildContextError> {
        let Ok(mut services) = serde_json::from_str::<Vec<Box<RawValue>>>(services.get()) else {
            if services.get() != "null" {
                tracing::warn!("job services are not an array, left as they are");
            }
            return Ok(None);
        };
        let mut changed = false;
        for service in &mut services {
            let Some(mut object) = parse_object(service, "service") else {
                continue;
            };
            let Some(name) = object.get_str("name") else {
                continue;
            };
            let Some((proxied, expanded)) = self.proxied(&name) else {
                continue;
            };
            object.set("name", to_raw(&proxied)?);
            // A user-defined alias is presumably in use by the job; only
            // supply the one that the rewrite would otherwise take away.
            if object.get_str("alias").is_none_or(|alias| alias.is_empty()) {
                object.set("alias", to_raw(&service_alias(&expanded))?);
            }
            *service = to_raw(&object)?;
            changed = true;
        }
        if changed {
            Ok(Some(to_raw(&services)?))
        } else {
            Ok(None)
        }
    }
}

/// `value` as an object; `None` (with a warning unless null) otherwise.
///
/// The coordinator sends `image` and each service as objects; anything else
/// is left for the inner runner to judge, as are all other fields.
fn parse_object(value: &RawValue, what: &str) -> Option<OrderedObject> {
    let parsed = serde_json::from_str(value.get()).ok();
    if parsed.is_none() && value.get() != "null" {
        tracing::warn!(what, "job {what} is not an object, left as it is");
    }
    parsed
}

fn to_raw<T: Serialize + ?Sized>(value: &T) -> Result<Box<RawValue>, BuildContextError> {
    // Serialising strings and raw values cannot fail; still no panic.
    serde_json::value::to_raw_value(value)
        .map_err(|err| BuildContextError::InvalidPayload(err.to_string()))
}

/// A JSON object whose members keep their order and their exact text.
///
/// `serde_json::Value` would sort the keys (its `preserve_order` feature would
/// change map order for every crate of the workspace) and re-format numbers.
struct OrderedObject(Vec<(String, Box<RawValue>)>);

impl OrderedObject {
    fn get(&self, key: &str) -> Option<&RawValue> {
        // JSON objects may repeat a key; like serde_json, the last one wins.
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| &**v)
    }

    /// The string member `key`; `None` when absent, null or not a string.
    fn get_str(&self, key: &str) -> Option<String> {
        serde_json::from_str(self.get(key)?.get()).ok()
    }

    fn set(&mut self, key: &str, value: Box<RawValue>) {
        match self.0.iter_mut().rev().find(|(k, _)| k == key) {
            Some((_, slot)) => *slot = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }
}

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = OrderedObject;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedObject, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(member);
                }
                Ok(OrderedObject(members))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

impl Serialize for OrderedObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// The job's variables, in payload order, as GitLab Runner sees them.
struct JobVariables(Vec<JobVariable>);

struct JobVariable {
    key: String,
    value: String,
    raw: bool,
}

impl JobVariables {
    /// Reads `variables: [{key, value, raw, …}]`, skipping malformed entries:
    /// the inner runner judges the payload, this only looks for image names.
    fn from_payload(job: &OrderedObject) -> JobVariables {
        let entries: Vec<serde_json::Value> = job
            .get("variables")
            .and_then(|raw| serde_json::from_str::<Option<Vec<serde_json::Value>>>(raw.get()).ok())
            .flatten()
            .unwrap_or_default();
        let variables = entries
            .iter()
            .filter_map(|entry| {
                Some(JobVariable {
                    key: entry.get("key")?.as_str()?.to_owned(),
                    value: entry
                        .get("value")
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_owned(),
                    raw: entry.get("raw").and_then(|v| v.as_bool()).unwrap_or(false),
                })
            })
            .collect();
        JobVariables(variables)
    }

    /// Each non-raw variable expanded once with the others, as GitLab Runner
    /// does before it expands image names (`JobVariables.Expand`). The
    /// reference runner instead expands recursively, without a bound.
    fn expanded(&self) -> JobVariables {
        JobVariables(
            self.0
                .iter()
                .map(|variable| JobVariable {
                    key: variable.key.clone(),
                    value: if variable.raw {
                        variable.value.clone()
                    } else {
                        self.expand(&variable.value)
                    },
                    raw: variable.raw,
                })
                .collect(),
        )
    }

    /// Value of `key` as GitLab Runner's `JobVariables.Get` gives it: the last
    /// definition wins, `$` stands for itself (so `$$` is a literal dollar)
    /// and positional or special shell parameters are empty.
    fn get(&self, key: &str) -> &str {
        match key {
            "$" => "$",
            "*" | "#" | "@" | "!" | "?" | "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8"
            | "9" => "",
            _ => self
                .0
                .iter()
                .rev()
                .find(|v| v.key == key)
                .map_or("", |v| v.value.as_str()),
        }
    }

    fn expand(&self, text: &str) -> String {
        go_expand(text, |name| self.get(name))
    }
}

/// Go's `os.Expand`: replaces `$name` and `${name}` by `mapping(name)`.
///
/// Same edge cases as Go's: a `$` not followed by a name stays, bad syntax
/// (`${`, `${}`) is dropped, and `${…}` takes everything up to the first `}`.
fn go_expand<'m>(text: &str, mapping: impl Fn(&str) -> &'m str) -> String {
    let bytes = text.as_bytes();
    let mut expanded = String::with_capacity(text.len());
    let mut copied_up_to = 0;
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'$' && index + 1 < bytes.len() {
            expanded.push_str(&text[copied_up_to..index]);
            let (name, width) = shell_name(&text[index + 1..]);
            if name.is_empty() && width > 0 {
                // Invalid syntax: the characters are eaten.
            } else if name.is_empty() {
                expanded.push('$');
            } else {
                expanded.push_str(mapping(name));
            }
            index += width;
            copied_up_to = index + 1;
        }
        index += 1;
    }
    expanded.push_str(&text[copied_up_to..]);
    expanded
}

/// Go's `getShellName`: the variable name at the start of `text` (which
/// follows a `$` and is not empty) and how many bytes its syntax takes.
fn shell_name(text: &str) -> (&str, usize) {
    let bytes = text.as_bytes();
    if bytes[0] == b'{' {
        if bytes.len() > 2 && is_shell_special(bytes[1]) && bytes[2] == b'}' {
            return (&text[1..2], 3);
        }
        return match bytes.iter().skip(1).position(|&b| b == b'}') {
            Some(0) => ("", 2),
            Some(offset) => (&text[1..offset + 1], offset + 2),
            None => ("", 1),
        };
    }
    if is_shell_special(bytes[0]) {
        return (&text[..1], 1);
    }
    let length = bytes
        .iter()
        .take_while(|&&b| b == b'_' || b.is_ascii_alphanumeric())
        .count();
    (&text[..length], length)
}

fn is_shell_special(byte: u8) -> bool {
    matches!(
        byte,
        b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PREFIX: &str = "gitlab.example:443/group/dependency_proxy/containers";

    fn payload(image: &str, services: serde_json::Value, variables: &[(&str, &str)]) -> String {
        let mut variables: Vec<serde_json::Value> = variables
            .iter()
            .map(|(key, value)| json!({"key": key, "value": value, "public": true}))
            .collect();
        variables.push(
            json!({"key": DEPENDENCY_PROXY_PREFIX_VARIABLE, "value": PREFIX, "public": true}),
        );
        json!({"id": 17, "image": {"name": image, "entrypoint": ["sh"]}, "services": services, "variables": variables})
            .to_string()
    }

    /// Rewrites `image` as job image and as alias-less service, and checks the
    /// new name (`None`: unchanged) and the alias given to the service.
    fn check(
        image: &str,
        variables: &[(&str, &str)],
        expect_name: Option<&str>,
        expect_alias: Option<&str>,
    ) {
        let services = json!([{"name": image, "entrypoint": null}]);
        let out = job_json(&payload(image, services, variables)).unwrap();
        let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let expect_name = expect_name.map(|n| n.replace("<P>", PREFIX));
        let expect_name = expect_name.as_deref().unwrap_or(image);
        assert_eq!(out["image"]["name"], expect_name, "image {image:?}");
        assert_eq!(out["services"][0]["name"], expect_name, "service {image:?}");
        assert_eq!(
            out["services"][0]["alias"].as_str(),
            expect_alias,
            "alias of {image:?}"
        );
    }

    /// Image name, job variables, expected new name (`None`: unchanged;
    /// `<P>` stands for the proxy prefix), expected alias of the service.
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        Option<&'static str>,
        Option<&'static str>,
    );

    #[test]
    #[rustfmt::skip]
    fn dependency_proxy_rewrite_table() {
        let cases: &[Case] = &[
            ("postgres:13", &[], Some("<P>/library/postgres:13"), Some("postgres")),
            ("postgres", &[], Some("<P>/library/postgres"), Some("postgres")),
            ("tutum/wordpress", &[], Some("<P>/tutum/wordpress"), Some("tutum-wordpress")),
            ("tutum/wordpress:latest", &[], Some("<P>/tutum/wordpress:latest"), Some("tutum-wordpress")),
            ("docker.io/library/alpine:3", &[], Some("<P>/library/alpine:3"), Some("docker.io-library-alpine")),
            ("docker.io/alpine", &[], Some("<P>/library/alpine"), Some("docker.io-alpine")),
            ("index.docker.io/foo/bar:1", &[], Some("<P>/foo/bar:1"), Some("index.docker.io-foo-bar")),
            ("postgres@sha256:0123abcd", &[], Some("<P>/library/postgres@sha256:0123abcd"), Some("postgres")),
            ("a/b/c:2", &[], Some("<P>/a/b/c:2"), Some("a-b-c")),
            ("registry.example.com/foo:1", &[], None, None),
            ("registry.example.com:5000/foo/bar", &[], None, None),
            ("localhost/foo", &[], None, None),
            ("localhost:5000/foo", &[], None, None),
            ("Foo/bar", &[], None, None),
            ("index.docker.io:443/foo", &[], None, None),
            ("$IMG:13", &[("IMG", "postgres")], Some("<P>/library/postgres:13"), Some("postgres")),
            ("${NS}/app:${TAG}", &[("NS", "acme"), ("TAG", "v1")], Some("<P>/acme/app:v1"), Some("acme-app")),
            // Variables are expanded once with each other, as GitLab Runner does.
            ("$IMG", &[("IMG", "$BASE:1"), ("BASE", "redis")], Some("<P>/library/redis:1"), Some("redis")),
            ("${REGISTRY}/foo", &[("REGISTRY", "registry.example.com")], None, None),
        ];
        for (image, variables, expect_name, expect_alias) in cases {
            check(image, variables, *expect_name, *expect_alias);
        }
    }

    #[test]
    fn go_expand_edge_cases() {
        let variables = JobVariables(
            [
                ("FOO_BAR", "foo"),
                ("FOO-BAR", "dash"),
                ("FOO-${BAR", "odd"),
                ("A", "a"),
            ]
            .into_iter()
            .map(|(key, value)| JobVariable {
                key: key.into(),
                value: value.into(),
                raw: false,
            })
            .collect(),
        );
        let cases = [
            ("plain", "plain"),
            ("$FOO_BAR-hop", "foo-hop"),
            ("x-$FOO-BAR-hop", "x--BAR-hop"),
            ("x-${FOO-BAR}-hop", "x-dash-hop"),
            ("x-${FOO-${BAR}}-hop", "x-odd}-hop"),
            ("$$A", "$A"),
            ("$", "$"),
            ("a$", "a$"),
            ("$-x", "x"),
            ("$1x", "x"),
            ("${}x", "x"),
            ("${A", "A"),
            ("${*}x", "x"),
            ("é$A€", "éa€"),
            ("$é", "$é"),
            ("${UNSET}", ""),
        ];
        for (input, expect) in cases {
            assert_eq!(variables.expand(input), expect, "input {input:?}");
        }
    }

    #[test]
    fn raw_variables_are_not_expanded() {
        let payload = json!({
            "image": {"name": "$IMG"},
            "variables": [
                {"key": "IMG", "value": "$X", "raw": true},
                {"key": "X", "value": "alpine"},
                {"key": DEPENDENCY_PROXY_PREFIX_VARIABLE, "value": PREFIX},
            ],
        });
        let out: serde_json::Value =
            serde_json::from_slice(&job_json(&payload.to_string()).unwrap()).unwrap();
        // "$IMG" gives the raw "$X", which is not expanded a second time;
        // "$X" is a Docker Hub name as far as the domain split goes.
        assert_eq!(out["image"]["name"], format!("{PREFIX}/library/$X"));
    }

    #[test]
    fn payload_without_proxy_is_returned_byte_for_byte() {
        for payload in [
            r#"{"id": 1, "image": {"name": "postgres"}, "variables": []}"#,
            r#"{"id":1,"variables":[{"key":"CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX","value":""}]}"#,
            r#"{"id": 1.50, "z": 1, "a": 2}"#,
        ] {
            assert_eq!(job_json(payload).unwrap(), payload.as_bytes());
        }
    }

    #[test]
    fn rewrite_keeps_everything_else_untouched() {
        let payload = format!(
            r#"{{"z":1.50,"image":{{"name":"postgres:13","entrypoint":["a"],"ports":[]}},"a":{{"y":1,"b":2}},"services":[{{"name":"redis","alias":"","command":["x"]}},{{"name":"mysql","alias":"db"}},{{"name":"quay.io/x/y"}}],"variables":[{{"key":"{DEPENDENCY_PROXY_PREFIX_VARIABLE}","value":"{PREFIX}/"}}],"big":12345678901234567890}}"#
        );
        let out = String::from_utf8(job_json(&payload).unwrap()).unwrap();
        let expect = format!(
            r#"{{"z":1.50,"image":{{"name":"{PREFIX}/library/postgres:13","entrypoint":["a"],"ports":[]}},"a":{{"y":1,"b":2}},"services":[{{"name":"{PREFIX}/library/redis","alias":"redis","command":["x"]}},{{"name":"{PREFIX}/library/mysql","alias":"db"}},{{"name":"quay.io/x/y"}}],"variables":[{{"key":"{DEPENDENCY_PROXY_PREFIX_VARIABLE}","value":"{PREFIX}/"}}],"big":12345678901234567890}}"#
        );
        assert_eq!(out, expect);
    }

    #[test]
    fn null_or_missing_image_and_services_are_fine() {
        let variables =
            format!(r#""variables":[{{"key":"{DEPENDENCY_PROXY_PREFIX_VARIABLE}","value":"p"}}]"#);
        for body in [
            format!(r#"{{"image":null,"services":null,{variables}}}"#),
            format!(r#"{{{variables}}}"#),
            format!(r#"{{"image":{{}},"services":[null,{{}}],{variables}}}"#),
        ] {
            let out: serde_json::Value = serde_json::from_slice(&job_json(&body).unwrap()).unwrap();
            let input: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(out, input);
        }
    }

    #[test]
    fn only_a_payload_that_is_not_an_object_is_an_error() {
        for body in ["not json", "[1]", "\"x\""] {
            assert!(
                matches!(job_json(body), Err(BuildContextError::InvalidPayload(_))),
                "{body}"
            );
        }
        // Odd shapes of image and services are left for the inner runner.
        let variables =
            format!(r#""variables":[{{"key":"{DEPENDENCY_PROXY_PREFIX_VARIABLE}","value":"p"}}]"#);
        for body in [
            format!(r#"{{"image":"postgres",{variables}}}"#),
            format!(r#"{{"image":{{"name":3}},{variables}}}"#),
            format!(r#"{{"services":{{}},{variables}}}"#),
            format!(r#"{{"services":["redis",{{"name":["x"]}}],{variables}}}"#),
        ] {
            let out: serde_json::Value = serde_json::from_slice(&job_json(&body).unwrap()).unwrap();
            assert_eq!(
                out,
                serde_json::from_str::<serde_json::Value>(&body).unwrap()
            );
        }
    }

    #[test]
    fn dockerfile_snapshot() {
        assert_eq!(
            dockerfile("registry.heptapod.net:443/heptapod/heptapod-runner/runner:0.7.0"),
            "FROM registry.heptapod.net:443/heptapod/heptapod-runner/runner:0.7.0\n\
             COPY runner.toml /etc/heptapod-runner/runner.toml\n\
             COPY job.json /etc/heptapod-runner/job.json\n\
             ENTRYPOINT [\"/usr/bin/gitlab-runner\", \"exec-fetched-job\", \"--config\", \
             \"/etc/heptapod-runner/runner.toml\", \"/etc/heptapod-runner/job.json\"]\n"
        );
    }

    #[test]
    fn runner_toml_snapshot() {
        // Keys in sorted order, so that the snapshot holds whether or not
        // toml's `preserve_order` feature is on in the workspace.
        let inner: toml::Table = toml::from_str(
            r#"
executor = "docker"
name = "shared"
token = "glrt-inner"
url = "https://foss.heptapod.net"
[cache]
Shared = true
Type = "s3"
[cache.s3]
BucketName = "ci-cache"
ServerAddress = "cellar-c2.services.clever-cloud.com"
[docker]
image = "alpine"
volumes = ["/cache"]
"#,
        )
        .unwrap();
        assert_eq!(
            runner_toml(&inner).unwrap(),
            r#"[[runners]]
executor = "docker"
name = "shared"
token = "glrt-inner"
url = "https://foss.heptapod.net"

[runners.cache]
Shared = true
Type = "s3"

[runners.cache.s3]
BucketName = "ci-cache"
ServerAddress = "cellar-c2.services.clever-cloud.com"

[runners.docker]
image = "alpine"
volumes = ["/cache"]
"#
        );
        // And it reads back as the same runner.
        let back: toml::Table = toml::from_str(&runner_toml(&inner).unwrap()).unwrap();
        assert_eq!(back["runners"][0], toml::Value::Table(inner));
    }

    #[test]
    fn credentials_in_the_context_are_refused() {
        let runner_token = paas_core::Secret::new("glrt-real-runner-token");
        let cloud_token = paas_core::Secret::new("cc-token-value");
        let empty = paas_core::Secret::new("");
        let clean = vec![(
            "runner.toml".to_owned(),
            b"token = \"glrt-real-run.placeholder.not.a.token\"".to_vec(),
        )];
        assert!(check_no_credentials(&clean, &[&runner_token, &cloud_token, &empty]).is_ok());
        let leaking = vec![
            ("Dockerfile".to_owned(), b"FROM x".to_vec()),
            (
                "runner.toml".to_owned(),
                b"[x]\ny = \"cc-token-value\"".to_vec(),
            ),
        ];
        let error =
            check_no_credentials(&leaking, &[&runner_token, &cloud_token]).expect_err("refused");
        assert_eq!(
            error.to_string(),
            "runner.toml would carry a credential of the runner to the job's machine; not pushed"
        );
    }

    #[test]
    fn files_are_sorted_and_base_image_checked() {
        let inner = toml::Table::new();
        let files = files("runner:1", &inner, r#"{"id":1}"#).unwrap();
        let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["Dockerfile", "job.json", "runner.toml"]);
        assert_eq!(files[1].1, br#"{"id":1}"#);
        for bad in ["", "runner:1\nRUN evil", "a b"] {
            assert!(matches!(
                super::files(bad, &inner, "{}"),
                Err(BuildContextError::InvalidBaseImage(_))
            ));
        }
    }
}
