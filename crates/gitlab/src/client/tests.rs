use super::reply::{is_retryable_status, MAX_MESSAGE_CHARS};
use super::*;

#[test]
fn endpoints_are_named_from_a_fixed_set() {
    for (url, endpoint) in [
        ("https://gl.example/api/v4/jobs/request", "request_job"),
        (
            "https://gl.example/prefix/api/v4/jobs/12/trace",
            "patch_trace",
        ),
        ("https://gl.example/api/v4/jobs/12", "update_job"),
        ("https://gl.example/api/v4/job", "job_status"),
        ("https://gl.example/api/v4/runners/verify", "verify_runner"),
        (
            "https://gl.example/api/v4/projects/3/jobs/12/trace",
            "read_trace",
        ),
        ("https://gl.example/api/v4/anything/else?x=1", "other"),
        ("https://gl.example/nothing", "other"),
    ] {
        assert_eq!(endpoint_of(url), endpoint, "{url}");
    }
}

#[test]
fn base_urls_are_normalised() {
    let check = |input: &str, expected: &str| {
        let client = CoordinatorClient::new(input, reqwest::Client::new()).expect(input);
        assert_eq!(client.base_url(), expected);
        assert_eq!(client.api_root, format!("{expected}/api/v4"));
    };
    check("https://gitlab.example.com", "https://gitlab.example.com");
    check("https://gitlab.example.com/", "https://gitlab.example.com");
    check("http://127.0.0.1:1234", "http://127.0.0.1:1234");
    check(
        " https://Example.com/gitlab/ ",
        "https://example.com/gitlab",
    );
}

#[test]
fn bad_base_urls_are_refused_without_echoing_credentials() {
    for input in [
        "gitlab.example.com",
        "ftp://gitlab.example.com",
        "https://user:hunter2@gitlab.example.com",
        "https://gitlab.example.com/?private_token=hunter2",
        "https://user:hunter2@[::1",
    ] {
        let error = CoordinatorClient::new(input, reqwest::Client::new()).expect_err(input);
        assert!(matches!(error, GitlabError::InvalidUrl(_)), "{error:?}");
        // Only the credentials case matters here; a query string is
        // refused anyway and shown to help fix the config.
        if input.contains('@') {
            assert!(!format!("{error} {error:?}").contains("hunter2"), "{error}");
        }
    }
}

#[test]
fn server_messages_are_extracted_scrubbed_and_shortened() {
    let token = Secret::new("glrt-scrubme");
    let check = |body: &str, expected: &str| {
        assert_eq!(server_message(body.as_bytes(), &[&token]), expected);
    };
    check(
        r#"{"message":"403 Forbidden - Job is not running"}"#,
        "403 Forbidden - Job is not running",
    );
    check(r#"{"error":"state is invalid"}"#, "state is invalid");
    check(r#"{"message":{"state":["bad"]}}"#, r#"{"state":["bad"]}"#);
    check("  <html>bad gateway</html>\n", "<html>bad gateway</html>");
    check("", "(empty body)");
    check("token glrt-scrubme is bad", "token [REDACTED] is bad");
    let long = "é".repeat(MAX_MESSAGE_CHARS + 10);
    let shortened = server_message(long.as_bytes(), &[]);
    assert_eq!(
        shortened,
        format!("{}…[cut]", "é".repeat(MAX_MESSAGE_CHARS))
    );
    check(
        "{\"message\":\"bad\\n2026-01-01 INFO forged \\u001b[31m\"}",
        "bad\\n2026-01-01 INFO forged \\u{1b}[31m",
    );
}

#[test]
fn job_statuses_classify_as_running_unless_final() {
    for status in ["running", "pending", "canceling", "something_new"] {
        assert_eq!(
            remote_job_status(status.to_owned()),
            RemoteJobStatus::Running {
                status: status.to_owned()
            }
        );
    }
    for status in ["success", "failed", "canceled", "skipped"] {
        assert_eq!(
            remote_job_status(status.to_owned()),
            RemoteJobStatus::Finished {
                status: Some(status.to_owned())
            }
        );
    }
}

#[test]
fn retryable_statuses_follow_gitlab_runner() {
    for status in [408, 429, 500, 502, 503, 504, 512, 599] {
        assert!(is_retryable_status(status), "{status}");
    }
    for status in [400, 401, 403, 404, 409, 413, 416, 422, 501, 505, 511] {
        assert!(!is_retryable_status(status), "{status}");
    }
}

#[test]
fn job_request_body_is_small() {
    let token = Secret::new("glrt-".to_owned() + &"x".repeat(64));
    let last_update = "f".repeat(MAX_LAST_UPDATE_BYTES);
    let body = job_request_body(&JobRequest {
        token: &token,
        system_id: "s_0123456789ab",
        last_update: Some(&last_update),
    })
    .expect("serialisable");
    // Workhorse refuses bodies over 32 KiB (reference §2.4).
    assert!(body.len() < 4 * 1024, "{} bytes", body.len());
}
