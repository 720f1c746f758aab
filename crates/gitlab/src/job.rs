//! Job acquisition types: what we ask the coordinator for, and what it hands over.

use std::fmt;

use paas_core::Secret;
use serde_json::Value;

/// Parameters of one `POST /api/v4/jobs/request`.
#[derive(Debug, Clone, Copy)]
pub struct JobRequest<'a> {
    /// Runner authentication token of the `[[runners]]` entry.
    pub token: &'a Secret,
    /// Identifies this runner manager (`s_…`/`r_…`), see reference §2.1.
    pub system_id: &'a str,
    /// The last `X-GitLab-Last-Update` received for this runner, if any.
    pub last_update: Option<&'a str>,
}

/// What a job request gave.
#[derive(Debug)]
pub enum JobRequestOutcome {
    /// 201: the job is ours (and already `running` on the coordinator).
    Job(AcquiredJob),
    /// 204: no job now. `last_update` is the `X-GitLab-Last-Update` header
    /// if present; Workhorse's own 204s (long polling) carry none, and then
    /// the caller must keep its previous value (reference §2.4).
    NoJob { last_update: Option<String> },
    /// 409: the coordinator lost a race or a lock; treat as no job and poll
    /// again soon.
    Conflict,
    /// 201 with a payload larger than `limit_bytes`: only its first
    /// `limit_bytes` were read. `id_and_token` are the job's `id` and
    /// `token` when they could be read from that prefix (GitLab sends them
    /// first), so that the job can be failed with a message; `None` when
    /// not (the coordinator's own timeout then ends the job).
    TooLarge {
        id_and_token: Option<(u64, Secret)>,
        limit_bytes: u64,
    },
}

/// A job handed over by the coordinator.
///
/// `Debug` shows neither the payload, the token nor variable values: the
/// payload holds the job token (also as `CI_JOB_TOKEN`) and masked
/// variables.
pub struct AcquiredJob {
    /// The 201 body exactly as received; it becomes `job.json` on the
    /// machine that runs the job.
    pub payload: String,
    /// `id`.
    pub id: u64,
    /// `token`: the job token, valid while the job runs.
    pub token: Secret,
    /// `job_info.project_id`.
    pub project_id: Option<u64>,
    /// `job_info.name`.
    pub job_name: Option<String>,
    /// `variables`, in payload order (entries without a string `key` are
    /// skipped).
    pub variables: Vec<JobVariable>,
    /// `features.failure_reasons`: the failure reasons this coordinator
    /// accepts, see [`crate::FailureReason::accepted_by`].
    pub failure_reasons: Option<Vec<String>>,
}

/// One entry of the payload's `variables`.
///
/// The value may be sensitive (masked variables, `CI_JOB_TOKEN`), so
/// `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct JobVariable {
    pub key: String,
    pub value: String,
}

/// Why a job payload could not be used.
///
/// The detail names the field at fault and never quotes payload content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job payload: {detail}")]
pub struct PayloadError {
    pub detail: String,
}

impl AcquiredJob {
    /// Reads the fields the dispatcher needs from a job payload, keeping the
    /// payload itself untouched.
    ///
    /// Only `id` and `token` are required: without them nothing can be done
    /// with the job. Everything else is read leniently (reference §2.5: any
    /// array may be `null`, fields come and go between versions, unknown
    /// fields are normal), so that a job the coordinator already marked
    /// running is never lost to a payload detail.
    pub fn from_payload(payload: String) -> Result<AcquiredJob, PayloadError> {
        let document: Value = serde_json::from_str(&payload).map_err(|error| PayloadError {
            // The category and position only: serde_json messages may quote
            // payload content, which holds tokens.
            detail: format!(
                "not json ({:?} error at line {} column {})",
                error.classify(),
                error.line(),
                error.column()
            ),
        })?;
        if !document.is_object() {
            return Err(PayloadError {
                detail: "not a json object".to_owned(),
            });
        }
        let id = document
            .get("id")
            .and_then(lenient_u64)
            .ok_or_else(|| PayloadError {
                detail: "missing or invalid `id`".to_owned(),
            })?;
        let token = match document.get("token").and_then(Value::as_str) {
            Some(token) if !token.is_empty() => Secret::new(token),
            _ => {
                return Err(PayloadError {
                    detail: format!("job {id}: missing or invalid `token`"),
                })
            }
        };
        let job_info = document.get("job_info");
        let project_id = job_info
            .and_then(|info| info.get("project_id"))
            .and_then(lenient_u64);
        let job_name = job_info
            .and_then(|info| info.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let variables = document
            .get("variables")
            .and_then(Value::as_array)
            .map(|entries| entries.iter().filter_map(variable_of).collect())
            .unwrap_or_default();
        let failure_reasons = document
            .get("features")
            .and_then(|features| features.get("failure_reasons"))
            .and_then(Value::as_array)
            .map(|reasons| {
                reasons
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            });
        Ok(AcquiredJob {
            payload,
            id,
            token,
            project_id,
            job_name,
            variables,
            failure_reasons,
        })
    }

    /// The value of variable `key`. When a key appears several times the
    /// last entry wins, as in the reference implementation.
    pub fn variable(&self, key: &str) -> Option<&str> {
        self.variables
            .iter()
            .rev()
            .find(|variable| variable.key == key)
            .map(|variable| variable.value.as_str())
    }
}

impl fmt::Debug for AcquiredJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcquiredJob")
            .field("payload", &format_args!("<{} bytes>", self.payload.len()))
            .field("id", &self.id)
            .field("token", &self.token)
            .field("project_id", &self.project_id)
            .field("job_name", &self.job_name)
            .field("variables", &self.variables)
            .field("failure_reasons", &self.failure_reasons)
            .finish()
    }
}

impl fmt::Debug for JobVariable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobVariable")
            .field("key", &self.key)
            .field("value", &format_args!("[REDACTED]"))
            .finish()
    }
}

/// The `id` and `token` of a job payload of which only `prefix` is known
/// (the payload was cut): read by a tolerant visitor that records the two
/// fields as it meets them among the top-level entries and stops there;
/// whatever follows (including the cut) does not matter. `None` when the
/// prefix ends before both were seen, or they are unusable.
pub fn id_and_token_of_prefix(prefix: &[u8]) -> Option<(u64, Secret)> {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
    use std::cell::RefCell;

    #[derive(Default)]
    struct Found {
        id: Option<u64>,
        token: Option<String>,
    }
    struct Head<'a>(&'a RefCell<Found>);
    impl<'de> Visitor<'de> for Head<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a job payload object")
        }
        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                match key.as_ref() {
                    "id" => self.0.borrow_mut().id = lenient_u64(&map.next_value::<Value>()?),
                    "token" => {
                        self.0.borrow_mut().token = match map.next_value::<Value>()? {
                            Value::String(token) if !token.is_empty() => Some(token),
                            _ => None,
                        }
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                let found = self.0.borrow();
                if found.id.is_some() && found.token.is_some() {
                    break;
                }
            }
            Ok(())
        }
    }
    let found = RefCell::new(Found::default());
    let mut deserializer = serde_json::Deserializer::from_slice(prefix);
    // The result is an error for a cut payload (or when the visitor stops
    // early); what was recorded until then is what counts.
    let _ = (&mut deserializer).deserialize_map(Head(&found));
    let found = found.into_inner();
    Some((found.id?, Secret::new(found.token?)))
}

/// A non-negative integer, also when sent as a string of digits.
fn lenient_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

fn variable_of(entry: &Value) -> Option<JobVariable> {
    let key = entry.get("key")?.as_str()?.to_owned();
    let value = match entry.get("value") {
        Some(Value::String(text)) => text.clone(),
        None | Some(Value::Null) => String::new(),
        // Never seen from Rails, but a number or boolean has an obvious
        // string form; keep the variable rather than drop it.
        Some(other) => other.to_string(),
    };
    Some(JobVariable { key, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_TOKEN: &str = "glcbt-64_payloadsecret";

    fn parse(payload: &str) -> Result<AcquiredJob, PayloadError> {
        AcquiredJob::from_payload(payload.to_owned())
    }

    #[test]
    fn reads_the_fields_of_a_full_payload() {
        let payload = format!(
            r#"{{"id":42,"token":"{SECRET_TOKEN}","allow_git_fetch":true,
            "job_info":{{"id":42,"name":"build","stage":"test","project_id":7,"project_name":"p",
              "project_jobs_running_on_instance_runners_count":"+Inf"}},
            "git_info":{{"repo_url":"https://x","hg_something":{{"new":1}}}},
            "variables":[{{"key":"CI_JOB_TOKEN","value":"{SECRET_TOKEN}","public":false,"masked":true}},
              {{"key":"CI_CLEVER_CLOUD_FLAVOR","value":"M","public":true,"masked":false}},
              {{"key":"CI_CLEVER_CLOUD_FLAVOR","value":"XL","public":true,"masked":false,"raw":true}}],
            "features":{{"trace_sections":true,"failure_reasons":["script_failure","image_pull_failure"]}},
            "image":null,"services":null,"steps":[]}}"#
        );
        let job = parse(&payload).expect("valid payload");
        assert_eq!(job.payload, payload);
        assert_eq!(job.id, 42);
        assert_eq!(job.token.expose(), SECRET_TOKEN);
        assert_eq!(job.project_id, Some(7));
        assert_eq!(job.job_name.as_deref(), Some("build"));
        assert_eq!(job.variables.len(), 3);
        assert_eq!(job.variable("CI_CLEVER_CLOUD_FLAVOR"), Some("XL"));
        assert_eq!(job.variable("NOPE"), None);
        assert_eq!(
            job.failure_reasons,
            Some(vec!["script_failure".into(), "image_pull_failure".into()])
        );
        let debug = format!("{job:?}");
        assert!(!debug.contains(SECRET_TOKEN), "{debug}");
        assert!(debug.contains("CI_CLEVER_CLOUD_FLAVOR"), "{debug}");
    }

    #[test]
    fn tolerates_nulls_and_missing_parts() {
        let job = parse(r#"{"id":1,"token":"t","variables":null,"features":null,"job_info":null}"#)
            .expect("minimal payload");
        assert_eq!(job.project_id, None);
        assert_eq!(job.job_name, None);
        assert!(job.variables.is_empty());
        assert_eq!(job.failure_reasons, None);

        let job = parse(
            r#"{"id":"2","token":"t","job_info":{"project_id":"9"},
               "variables":[null,{"value":"no key"},{"key":"A","value":null},{"key":"B","value":3}],
               "features":{"failure_reasons":null}}"#,
        )
        .expect("odd payload");
        assert_eq!(job.id, 2);
        assert_eq!(job.project_id, Some(9));
        assert_eq!(
            job.variables,
            vec![
                JobVariable {
                    key: "A".into(),
                    value: String::new()
                },
                JobVariable {
                    key: "B".into(),
                    value: "3".into()
                }
            ]
        );
        assert_eq!(job.failure_reasons, None);
    }

    #[test]
    fn id_and_token_are_read_from_a_cut_payload() {
        let payload = format!(
            r#"{{"id":42,"token":"{SECRET_TOKEN}","allow_git_fetch":true,"variables":[{{"key":"A","value":"xxxxxxxx"#
        );
        let (id, token) = id_and_token_of_prefix(payload.as_bytes()).expect("id and token");
        assert_eq!(id, 42);
        assert_eq!(token.expose(), SECRET_TOKEN);
        // In another order, as strings, after other fields, cut anywhere after them.
        let payload =
            format!(r#" {{"job_info":{{"id":1}}, "token":"{SECRET_TOKEN}", "id":"7", "x":"#);
        for cut in payload.find(r#", "x""#).expect("marker")..=payload.len() {
            let (id, token) =
                id_and_token_of_prefix(&payload.as_bytes()[..cut]).expect("id and token");
            assert_eq!((id, token.expose()), (7, SECRET_TOKEN), "cut at {cut}");
        }
        // Cut before both are known, or unusable: nothing.
        for prefix in [
            format!(r#"{{"id":42,"token":"{SECRET_TOKEN}"#),
            r#"{"id":42,"variables":[1,2"#.to_owned(),
            r#"{"id":-1,"token":"t"}"#.to_owned(),
            r#"{"id":1,"token":""}"#.to_owned(),
            r#"[{"id":1,"token":"t"}]"#.to_owned(),
            String::new(),
            "\u{1b}garbage".to_owned(),
        ] {
            assert!(
                id_and_token_of_prefix(prefix.as_bytes()).is_none(),
                "{prefix}"
            );
        }
    }

    #[test]
    fn rejects_payloads_without_id_or_token_without_quoting_them() {
        let cases = [
            format!(r#"{{"token":"{SECRET_TOKEN}"}}"#),
            format!(r#"{{"id":-1,"token":"{SECRET_TOKEN}"}}"#),
            format!(r#"{{"id":"{SECRET_TOKEN}","token":"{SECRET_TOKEN}"}}"#),
            r#"{"id":3}"#.to_owned(),
            r#"{"id":3,"token":""}"#.to_owned(),
            format!(r#"["{SECRET_TOKEN}"]"#),
            format!(r#"{{"id":3,"token":"{SECRET_TOKEN}""#),
            format!(r#"{{"id":3,"token":{SECRET_TOKEN}}}"#),
        ];
        for payload in cases {
            let error = parse(&payload).expect_err(&payload);
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains(SECRET_TOKEN), "{shown}");
            assert!(!shown.contains("payloadsecret"), "{shown}");
        }
    }
}
