//! End-to-end push over HTTP to real `git http-backend`, run as CGI behind a small axum server that demands Basic auth.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use paas_clever::build_context;
use paas_clever::git_push::{push, PushError, PushOutcome, PushRequest};
use paas_core::Secret;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;

const USER: &str = "Jenkins";
const PASSWORD: &str = "pa:ss/wörd-s3cret";

struct GitServer {
    root: PathBuf,
    home: PathBuf,
    /// `"<METHOD> <path>?<query> authorized=<bool>"` of each request.
    log: Mutex<Vec<String>>,
}

struct Fixture {
    _dir: tempfile::TempDir,
    server: Arc<GitServer>,
    url: String,
}

impl Fixture {
    async fn start() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repos");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        let server = Arc::new(GitServer {
            root,
            home,
            log: Mutex::new(Vec::new()),
        });
        let repo = server.root.join("app_1.git");
        run_git(
            &server.home,
            &["init", "--bare", "-q", repo.to_str().unwrap()],
        );
        run_git(
            &server.home,
            &[
                "--git-dir",
                repo.to_str().unwrap(),
                "config",
                "http.receivepack",
                "true",
            ],
        );

        let app = axum::Router::new().fallback(cgi).with_state(server.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Fixture {
            _dir: dir,
            server,
            url: format!("http://{address}/app_1.git"),
        }
    }

    fn git_dir(&self, args: &[&str]) -> Vec<u8> {
        let repo = self.server.root.join("app_1.git");
        let mut full = vec!["--git-dir", repo.to_str().unwrap()];
        full.extend_from_slice(args);
        run_git(&self.server.home, &full)
    }

    fn log(&self) -> Vec<String> {
        self.server.log.lock().unwrap().clone()
    }
}

fn git_command(home: &Path) -> std::process::Command {
    let mut command = std::process::Command::new("git");
    command
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    command
}

fn run_git(home: &Path, args: &[&str]) -> Vec<u8> {
    let out = git_command(home).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    out.stdout
}

/// Runs `git http-backend` for one request, as a web server runs a CGI script.
async fn cgi(State(server): State<Arc<GitServer>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let authorized = parts
        .headers
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    server.log.lock().unwrap().push(format!(
        "{} {}?{} authorized={authorized}",
        parts.method,
        parts.uri.path(),
        parts.uri.query().unwrap_or("")
    ));
    if !authorized {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Basic realm=\"git\"")
            .body(Body::empty())
            .unwrap();
    }
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env("HOME", &server.home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", &server.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", USER)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(content_type) = parts.headers.get("content-type") {
        command.env("CONTENT_TYPE", content_type.to_str().unwrap());
    }
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = tokio::spawn(async move { stdin.write_all(&body).await });
    let out = child.wait_with_output().await.unwrap();
    writer.await.unwrap().unwrap();
    assert!(
        out.status.success(),
        "http-backend: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // CGI output: header lines, a blank line, then the body.
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, at + 4));
    let split = split.or_else(|| {
        out.stdout
            .windows(2)
            .position(|w| w == b"\n\n")
            .map(|at| (at, at + 2))
    });
    let (headers_end, body_start) = split.expect("CGI output has no header end");
    let mut response = Response::builder();
    let mut status = StatusCode::OK;
    for line in String::from_utf8_lossy(&out.stdout[..headers_end]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            status = StatusCode::from_u16(value[..3].parse().unwrap()).unwrap();
        } else {
            response = response.header(name, value);
        }
    }
    response
        .status(status)
        .body(Body::from(out.stdout[body_start..].to_vec()))
        .unwrap()
}

fn job_files() -> Vec<(String, Vec<u8>)> {
    let mut inner = toml::Table::new();
    inner.insert("executor".into(), toml::Value::String("docker".into()));
    build_context::files(
        "registry.example/runner:1",
        &inner,
        r#"{"id":42,"variables":[]}"#,
    )
    .unwrap()
}

fn request<'a>(
    url: &'a str,
    password: &'a Secret,
    files: &'a [(String, Vec<u8>)],
) -> PushRequest<'a> {
    PushRequest {
        repo_url: url,
        user: USER,
        password,
        auth_after_challenge: false,
        plain_http_host: Some("127.0.0.1"),
        files,
        message: "Job 42",
        author_name: "Heptapod Paas Runner",
        author_email: "paasrunner@heptapod.test",
        timestamp_secs: 1_700_000_000,
    }
}

#[tokio::test]
async fn push_then_relaunch_is_already_deployed() {
    let fixture = Fixture::start().await;
    let http = reqwest::Client::new();
    let password = Secret::new(PASSWORD);
    let files = job_files();
    let timeout = Duration::from_secs(60);

    let outcome = push(&http, &request(&fixture.url, &password, &files), timeout)
        .await
        .unwrap();
    let PushOutcome::Pushed { commit } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        fixture.git_dir(&["show", "master:job.json"]),
        br#"{"id":42,"variables":[]}"#
    );
    assert_eq!(
        String::from_utf8(fixture.git_dir(&["rev-parse", "master"]))
            .unwrap()
            .trim(),
        commit
    );
    fixture.git_dir(&["fsck", "--full", "--strict"]);

    // Credentials went with every request, without waiting for a challenge.
    assert_eq!(
        fixture.log(),
        [
            "GET /app_1.git/info/refs?service=git-receive-pack authorized=true",
            "POST /app_1.git/git-receive-pack? authorized=true",
        ]
    );

    let again = push(&http, &request(&fixture.url, &password, &files), timeout)
        .await
        .unwrap();
    assert_eq!(again, PushOutcome::AlreadyDeployed { head: commit });
    assert_eq!(fixture.log().len(), 3, "a relaunch only looks at the refs");
}

#[tokio::test]
async fn credentials_after_a_challenge_go_with_every_later_request() {
    let fixture = Fixture::start().await;
    let http = reqwest::Client::new();
    let password = Secret::new(PASSWORD);
    let files = job_files();
    let mut request = request(&fixture.url, &password, &files);
    request.auth_after_challenge = true;
    let outcome = push(&http, &request, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(matches!(outcome, PushOutcome::Pushed { .. }), "{outcome:?}");
    // As git and clever-tools: nothing until the 401, then every time.
    assert_eq!(
        fixture.log(),
        [
            "GET /app_1.git/info/refs?service=git-receive-pack authorized=false",
            "GET /app_1.git/info/refs?service=git-receive-pack authorized=true",
            "POST /app_1.git/git-receive-pack? authorized=true",
        ]
    );
    let wrong = Secret::new("not-the-password");
    let mut refused = self::request(&fixture.url, &wrong, &files);
    refused.auth_after_challenge = true;
    let err = push(&http, &refused, Duration::from_secs(60))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, PushError::Unauthorized { status: 401 }),
        "{err:?}"
    );
}

#[tokio::test]
async fn wrong_password_is_unauthorized_and_not_quoted() {
    let fixture = Fixture::start().await;
    let wrong = Secret::new("wrong-s3cret");
    let files = job_files();
    let err = push(
        &reqwest::Client::new(),
        &request(&fixture.url, &wrong, &files),
        Duration::from_secs(60),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, PushError::Unauthorized { status: 401 }),
        "{err:?}"
    );
    assert!(!err.is_transient());
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains("wrong-s3cret") && !text.contains(&fixture.url),
        "{text}"
    );
}

#[tokio::test]
async fn credentials_in_the_url_are_replaced() {
    let fixture = Fixture::start().await;
    let password = Secret::new(PASSWORD);
    let files = job_files();
    let url = fixture.url.replace("http://", "http://someone:other@");
    let outcome = push(
        &reqwest::Client::new(),
        &request(&url, &password, &files),
        Duration::from_secs(60),
    )
    .await;
    assert!(
        matches!(outcome, Ok(PushOutcome::Pushed { .. })),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn missing_repository_and_dead_server() {
    let fixture = Fixture::start().await;
    let password = Secret::new(PASSWORD);
    let files = job_files();
    let http = reqwest::Client::new();
    let missing = fixture.url.replace("app_1", "app_2");
    let err = push(
        &http,
        &request(&missing, &password, &files),
        Duration::from_secs(60),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, PushError::Http { status: 404, .. }),
        "{err:?}"
    );

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/app_1.git", listener.local_addr().unwrap());
    drop(listener);
    let err = push(
        &http,
        &request(&dead, &password, &files),
        Duration::from_secs(60),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            PushError::Transport {
                timed_out: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn whole_push_is_bounded_by_the_timeout() {
    // A server that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/app_1.git", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(std::future::pending::<&'static str>);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let password = Secret::new(PASSWORD);
    let files = job_files();
    let err = push(
        &reqwest::Client::new(),
        &request(&url, &password, &files),
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            PushError::Transport {
                timed_out: true,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn credentials_go_over_plain_http_only_to_the_allowed_host() {
    use std::sync::atomic::{AtomicU64, Ordering};
    // "Another host": another loopback address, counting connections.
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicU64::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    let http = reqwest::Client::new();
    let password = Secret::new(PASSWORD);
    let files = job_files();
    let url = format!("http://127.0.0.2:{port}/app_1.git");
    for allowed in [Some("127.0.0.1"), Some("localhost"), None] {
        let mut req = request(&url, &password, &files);
        req.plain_http_host = allowed;
        let err = push(&http, &req, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, PushError::InsecureDestination { host } if host == "127.0.0.2"),
            "{err:?}"
        );
        assert!(!err.is_transient());
        assert!(err.to_string().contains("127.0.0.2"), "{err}");
        assert!(!format!("{err} {err:?}").contains(PASSWORD));
    }
    assert_eq!(connections.load(Ordering::SeqCst), 0, "credentials sent");
    // The allowed host over http, and https anywhere, are attempted.
    let mut req = request(&url, &password, &files);
    req.plain_http_host = Some("127.0.0.2");
    let err = push(&http, &req, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        !matches!(err, PushError::InsecureDestination { .. }),
        "{err:?}"
    );
    assert_eq!(
        paas_clever::git_push::plain_http_host("http://127.0.0.1:8080/v2").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        paas_clever::git_push::plain_http_host("https://api.clever-cloud.com/v2"),
        None
    );
}
