//! Git smart HTTP for the simulated deployment repositories
//! (`/git/<app id>.git/...`), served by the real `git http-backend` run as a
//! CGI program, so that the real git client pushes to it exactly as to
//! Clever Cloud's push servers (reference clever §4.8).
//!
//! Credentials are HTTP Basic with the API token as password (the legacy
//! scheme of the reference runner); a push that moves `refs/heads/master`
//! starts a deployment on the application's simulated VM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{CleverSim, GitAccess};

/// Concurrent `git http-backend` processes per simulator.
pub(crate) const MAX_GIT_PROCESSES: usize = 32;

/// Largest CGI header block accepted from `git http-backend`.
const MAX_CGI_HEADER_BYTES: usize = 64 * 1024;

/// Handler of `/git/{*path}`, any method.
pub(crate) async fn serve(State(sim): State<CleverSim>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let Some((app_id, rest)) = split_repo_path(&path) else {
        return not_found();
    };
    let remote_user = match check_credentials(&sim, request.headers()) {
        Ok(user) => user,
        Err(Denied) => return challenge(),
    };
    match sim.git_access(app_id) {
        GitAccess::Unknown => return not_found(),
        // UNVERIFIED what Clever's push servers answer before repoState is
        // CREATED (the reference runner waits for CREATED, pitfall 4);
        // 404 makes an early push fail visibly.
        GitAccess::NotReady => return not_found(),
        GitAccess::Ready => {}
    }
    let app_id = app_id.to_owned();
    let rest = rest.to_owned();
    // Detached from the connection: a client that disconnects after the
    // server received its pack (e.g. a runner killed mid-push) must not stop
    // the deployment that Clever Cloud starts for an updated master.
    let backend = tokio::spawn(async move {
        let result = run_backend(&sim, &app_id, &rest, remote_user, request).await;
        (app_id, result)
    });
    match backend.await {
        Ok((_, Ok(response))) => response,
        Ok((app_id, Err(error))) => {
            tracing::error!(%error, app_id, "git http-backend failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "git backend failure\n").into_response()
        }
        Err(error) => {
            tracing::error!(%error, "git http-backend task failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "git backend failure\n").into_response()
        }
    }
}

/// `/git/app_x.git/info/refs` → (`app_x`, `/info/refs`).
fn split_repo_path(path: &str) -> Option<(&str, &str)> {
    let tail = path.strip_prefix("/git/")?;
    if tail
        .split('/')
        .any(|segment| segment == ".." || segment == ".")
    {
        return None;
    }
    let (repo, rest) = match tail.find('/') {
        Some(slash) => (&tail[..slash], &tail[slash..]),
        None => (tail, ""),
    };
    let app_id = repo.strip_suffix(".git")?;
    let id_ok = !app_id.is_empty()
        && app_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    id_ok.then_some((app_id, rest))
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "Repository not found\n").into_response()
}

/// Missing or wrong git credentials: answered with a Basic challenge.
struct Denied;

fn challenge() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(http::header::WWW_AUTHENTICATE, "Basic realm=\"clever\"")],
        "Authentication required\n",
    )
        .into_response()
}

/// Checks HTTP Basic credentials against the kinds the simulator accepts
/// (`auth.rs`; UNVERIFIED whether Clever checks the user with the legacy
/// token). Returns the user name to report to git.
fn check_credentials(sim: &CleverSim, headers: &HeaderMap) -> Result<Option<String>, Denied> {
    let config = sim.config();
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return if config.require_git_credentials {
            Err(Denied)
        } else {
            Ok(None)
        };
    };
    let (user, password) = value
        .to_str()
        .ok()
        .and_then(super::auth::parse_basic)
        .ok_or(Denied)?;
    if !super::auth::git_authorized(config, &user, &password) {
        tracing::debug!(user, "git request with wrong credentials");
        return Err(Denied);
    }
    Ok(Some(user))
}

/// Head of master in a bare repository, if any.
async fn master_head(repo: &Path) -> Option<String> {
    let output = tokio::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            "refs/heads/master^{commit}",
        ])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .kill_on_drop(true)
        .output()
        .await
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let head = String::from_utf8(output.stdout).ok()?;
    let head = head.trim();
    (!head.is_empty()).then(|| head.to_owned())
}

async fn run_backend(
    sim: &CleverSim,
    app_id: &str,
    rest: &str,
    remote_user: Option<String>,
    request: Request,
) -> std::io::Result<Response> {
    let permit = Arc::clone(&sim.shared.git_slots)
        .acquire_owned()
        .await
        .map_err(std::io::Error::other)?;
    let git_root: PathBuf = std::path::absolute(&sim.config().git_root)?;
    let repo = sim.repo_path(app_id);
    let is_receive_pack = request.method() == Method::POST && rest == "/git-receive-pack";
    let master_before = if is_receive_pack {
        master_head(&repo).await
    } else {
        None
    };

    let headers = request.headers();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // No user or system configuration may change what is served.
        .env("HOME", &git_root)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", &git_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", request.method().as_str())
        .env("PATH_INFO", format!("/{app_id}.git{rest}"))
        .env("QUERY_STRING", request.uri().query().unwrap_or(""))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(content_type) = header("content-type") {
        command.env("CONTENT_TYPE", content_type);
    }
    // Chunked bodies have no length: http-backend then reads until EOF.
    if let Some(length) = header("content-length") {
        command.env("CONTENT_LENGTH", length);
    }
    if let Some(encoding) = header("content-encoding") {
        command.env("HTTP_CONTENT_ENCODING", encoding);
    }
    if let Some(protocol) = header("git-protocol") {
        command.env("HTTP_GIT_PROTOCOL", protocol);
    }
    if let Some(user) = remote_user {
        command.env("REMOTE_USER", user);
    }
    let mut child = command.spawn()?;

    // Feed the request body to the CGI's stdin while reading its stdout, so
    // that neither side can block the other.
    if let Some(mut stdin) = child.stdin.take() {
        let mut body = request.into_body().into_data_stream();
        tokio::spawn(async move {
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else { break };
                if stdin.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            // Dropping stdin closes it: end of the request body.
        });
    }
    if let Some(mut stderr) = child.stderr.take() {
        let app_id = app_id.to_owned();
        tokio::spawn(async move {
            let mut text = String::new();
            if stderr.read_to_string(&mut text).await.is_ok() && !text.trim().is_empty() {
                tracing::debug!(app_id, stderr = text.trim(), "git http-backend");
            }
        });
    }
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout"))?;
    let (status, response_headers, leftover) = read_cgi_headers(&mut stdout).await?;

    if is_receive_pack {
        // Buffer the (small) receive-pack report and wait for the end of
        // the push, so that the deployment is recorded before git's push
        // command returns.
        let mut body = leftover;
        stdout.read_to_end(&mut body).await?;
        let exit = child.wait().await?;
        drop(permit);
        if exit.success() && status.is_success() {
            let master_after = master_head(&repo).await;
            if let Some(commit) = master_after.filter(|after| Some(after) != master_before.as_ref())
            {
                tracing::debug!(app_id, commit, "push moved master");
                sim.record_push(app_id, &commit);
            }
        }
        return Ok(build_response(status, response_headers, Body::from(body)));
    }

    let first =
        futures::stream::once(async move { Ok::<Bytes, std::io::Error>(Bytes::from(leftover)) });
    let rest = futures::stream::unfold(Some((stdout, child, permit)), |state| async move {
        let (mut stdout, mut child, permit) = state?;
        let mut chunk = vec![0u8; 32 * 1024];
        match stdout.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                let _ = child.wait().await;
                drop(permit);
                None
            }
            Ok(read) => {
                chunk.truncate(read);
                Some((Ok(Bytes::from(chunk)), Some((stdout, child, permit))))
            }
        }
    });
    Ok(build_response(
        status,
        response_headers,
        Body::from_stream(first.chain(rest)),
    ))
}

fn build_response(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Reads the CGI header block (`Status:`, `Content-Type:` …) and returns it
/// with the body bytes already read past it.
async fn read_cgi_headers(
    stdout: &mut (impl AsyncRead + Unpin),
) -> std::io::Result<(StatusCode, HeaderMap, Vec<u8>)> {
    let mut buffer = Vec::new();
    let (header_end, body_start) = loop {
        if let Some(found) = find_header_end(&buffer) {
            break found;
        }
        if buffer.len() > MAX_CGI_HEADER_BYTES {
            return Err(std::io::Error::other("CGI header block too large"));
        }
        let mut chunk = [0u8; 8192];
        let read = stdout.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::Error::other("CGI output ended before its headers"));
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let header_text = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for line in header_text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|code| StatusCode::from_u16(code).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    Ok((status, headers, buffer[body_start..].to_vec()))
}

/// End of the header block: (end of the headers, start of the body).
fn find_header_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let crlf = buffer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| (at, at + 4));
    let lf = buffer
        .windows(2)
        .position(|window| window == b"\n\n")
        .map(|at| (at, at + 2));
    match (crlf, lf) {
        (Some(crlf), Some(lf)) => Some(if crlf.0 <= lf.0 { crlf } else { lf }),
        (found, None) | (None, found) => found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_paths_are_split_and_checked() {
        assert_eq!(
            split_repo_path("/git/app_1-2.git/info/refs"),
            Some(("app_1-2", "/info/refs"))
        );
        assert_eq!(split_repo_path("/git/app_1.git"), Some(("app_1", "")));
        assert_eq!(split_repo_path("/git/app_1/info/refs"), None);
        assert_eq!(split_repo_path("/git/../etc.git/x"), None);
        assert_eq!(split_repo_path("/git/a.git/../../x"), None);
    }

    #[test]
    fn header_end_is_found() {
        assert_eq!(find_header_end(b"A: b\r\n\r\nbody"), Some((4, 8)));
        assert_eq!(find_header_end(b"A: b\n\nbody"), Some((4, 6)));
        assert_eq!(find_header_end(b"A: b\r\n"), None);
    }
}
