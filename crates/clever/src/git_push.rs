//! Deployment of a build context to an application's git repository, by one push over git smart HTTP.
//!
//! # Why hand-rolled
//!
//! No maintained pure-Rust crate can push over smart HTTP with rustls: gix
//! (gitoxide) fetches but has no push, and git2 binds libgit2, a C library
//! that brings its own HTTP and TLS stacks (OpenSSL on Linux). Running the
//! `git` program is not an option either: the Clever Cloud token is the push
//! password, and it would have to reach a process argument, the environment
//! of a child or a file (remote URL, credential store), all of which other
//! local users or crash dumps may read.
//!
//! The subset of git needed here is small and stable, and is implemented in
//! this module alone: one root commit of a flat tree of regular files, sent
//! as an undeltified version-2 packfile to a repository that has no
//! `master` yet, with the `report-status` capability (see git's
//! `gitprotocol-http`, `gitprotocol-pack` and `gitformat-pack` documents).
//!
//! # Protocol
//!
//! 1. `GET <repo>/info/refs?service=git-receive-pack`: the ref advertisement.
//!    If `refs/heads/master` exists the job was already deployed (a relaunch
//!    after a crash or a lost response): nothing is pushed, since a second
//!    push would start a second deployment, hence a second run of the job.
//! 2. `POST <repo>/git-receive-pack`: one command creating
//!    `refs/heads/master`, then the packfile; the answer is the status report.
//!
//! HTTP Basic credentials go with both requests, without waiting for a 401
//! challenge, on http as well as https URLs (the reference runner sends none
//! on plain http); with [`PushRequest::auth_after_challenge`] they go only
//! once a request was answered 401, and from then on with every request, as
//! git and clever-tools do. They travel in a header marked sensitive and
//! never appear in errors or logs.
//!
//! UNVERIFIED (reference §4.8): Clever Cloud's git server is only known to
//! serve git's own client. This module speaks the same protocol (v0, as
//! `git push` over HTTP does) and is tested against `git http-backend`; it
//! copes with a server that multiplexes its answer in side-band channels
//! unasked, or that does not offer `report-status`. Whether the server
//! checks the user name that goes with the legacy token is unknown too.

use base64::Engine as _;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use paas_core::Secret;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use sha1::{Digest, Sha1};
use std::io::Write as _;
use std::time::{Duration, Instant};

/// What to push where.
pub struct PushRequest<'a> {
    /// The application's `deployment.httpUrl` (http or https). Credentials
    /// embedded in it are ignored: [`PushRequest::user`] and
    /// [`PushRequest::password`] are used instead.
    pub repo_url: &'a str,
    /// Basic auth user (`cc_auth_user`).
    pub user: &'a str,
    /// Basic auth password (`cc_token`).
    pub password: &'a Secret,
    /// Credentials wait for a 401 challenge instead of going with the first
    /// request (see `paas_clever::api::GitCredentials`).
    pub auth_after_challenge: bool,
    /// The only host to which the credentials may go over plain http (see
    /// [`plain_http_host`]); `None`: https only.
    pub plain_http_host: Option<&'a str>,
    /// Flat list of regular files (no `/` in names), in any order.
    pub files: &'a [(String, Vec<u8>)],
    /// Commit message.
    pub message: &'a str,
    pub author_name: &'a str,
    pub author_email: &'a str,
    /// Author and committer date, in seconds since the Unix epoch (UTC).
    pub timestamp_secs: i64,
}

impl std::fmt::Debug for PushRequest<'_> {
    /// File contents stay out: `job.json` holds the job token and variables.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files: Vec<(&str, usize)> = self
            .files
            .iter()
            .map(|(name, content)| (name.as_str(), content.len()))
            .collect();
        f.debug_struct("PushRequest")
            .field("repo_url", &self.repo_url)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("auth_after_challenge", &self.auth_after_challenge)
            .field("plain_http_host", &self.plain_http_host)
            .field("files (name, bytes)", &files)
            .field("message", &self.message)
            .field("author_name", &self.author_name)
            .field("author_email", &self.author_email)
            .field("timestamp_secs", &self.timestamp_secs)
            .finish()
    }
}

/// What a successful [`push`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// `refs/heads/master` was created and points to `commit`.
    Pushed { commit: String },
    /// `refs/heads/master` existed already (at `head`); nothing was pushed.
    AlreadyDeployed { head: String },
}

/// Why a push failed. Messages never contain the password nor a URL.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The git server refused the credentials (HTTP 401 or 403).
    #[error("git server refused the credentials (HTTP {status})")]
    Unauthorized { status: u16 },
    /// The git server answered with another unexpected HTTP status.
    #[error("git server answered HTTP {status} to the {step}")]
    Http { status: u16, step: &'static str },
    /// The git server received the push but refused to update `master`.
    #[error("git server rejected the push: {reason}")]
    Rejected { reason: String },
    /// The git server's answer is not what the protocol prescribes.
    #[error("git protocol error: {detail}")]
    Protocol { detail: String },
    /// The git server could not be reached, or did not answer in time.
    #[error("git server unreachable: {detail}")]
    Transport { detail: String, timed_out: bool },
    /// The request itself cannot be pushed (bad URL, file name or author).
    #[error("invalid push request: {detail}")]
    InvalidRequest { detail: String },
    /// The repository URL is plain http on a host credentials may not go
    /// to over http: nothing was sent.
    #[error(
        "the deployment repository on host {host} is not served over https: \
         the Clever Cloud credentials were not sent there"
    )]
    InsecureDestination { host: String },
}

impl PushError {
    /// Whether the same push may succeed if tried again later.
    pub fn is_transient(&self) -> bool {
        match self {
            PushError::Transport { .. } => true,
            PushError::Http { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            PushError::Unauthorized { .. }
            | PushError::Rejected { .. }
            | PushError::Protocol { .. }
            | PushError::InvalidRequest { .. }
            | PushError::InsecureDestination { .. } => false,
        }
    }

    /// The same error with every occurrence of `secret` replaced (texts
    /// quoted from the server could echo the password).
    fn scrubbed(self, secret: &Secret) -> PushError {
        let scrub = |text: String| paas_core::sanitize::scrub(&text, &[secret]);
        match self {
            PushError::Rejected { reason } => PushError::Rejected {
                reason: scrub(reason),
            },
            PushError::Protocol { detail } => PushError::Protocol {
                detail: scrub(detail),
            },
            PushError::Transport { detail, timed_out } => PushError::Transport {
                detail: scrub(detail),
                timed_out,
            },
            other => other,
        }
    }
}

/// The host to which credentials may go over plain http, given the
/// configured `cc_api_url`: its host when it is itself plain http (a
/// simulator, or a test setup), `None` when it is https (production: the
/// deployment repositories must be https too).
pub fn plain_http_host(api_url: &str) -> Option<String> {
    let url = url::Url::parse(api_url).ok()?;
    if url.scheme() != "http" {
        return None;
    }
    url.host_str().map(str::to_owned)
}

/// Pushes `req.files` as the first commit of `refs/heads/master`, unless
/// that branch exists already. `timeout` bounds the whole operation.
pub async fn push(
    http: &reqwest::Client,
    req: &PushRequest<'_>,
    timeout: Duration,
) -> Result<PushOutcome, PushError> {
    match tokio::time::timeout(timeout, push_without_timeout(http, req)).await {
        Ok(result) => result.map_err(|error| error.scrubbed(req.password)),
        Err(_elapsed) => Err(PushError::Transport {
            detail: format!("push did not finish within {} s", timeout.as_secs_f64()),
            timed_out: true,
        }),
    }
}

/// The git branch that Clever Cloud deploys.
const MASTER: &str = "refs/heads/master";
const ZERO_ID: &str = "0000000000000000000000000000000000000000";
const SERVICE: &str = "git-receive-pack";
/// Bound on what is read from the server: an advertisement of a fresh
/// deployment repository or a status report is a few hundred bytes.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Longest pkt-line payload (65520 bytes minus the 4-byte length).
const MAX_PKT_PAYLOAD: usize = 65516;
/// Reasons and details quoted from the server are cut to this length.
const MAX_QUOTED_CHARS: usize = 500;

async fn push_without_timeout(
    http: &reqwest::Client,
    req: &PushRequest<'_>,
) -> Result<PushOutcome, PushError> {
    let repo = RepoUrls::new(req.repo_url)?;
    check_destination(&repo.info_refs, req.plain_http_host)?;
    // Build the objects first: a request that cannot be pushed fails before
    // any network traffic.
    let pack = PackedCommit::new(req)?;
    let mut authorization = BasicAuth {
        header: basic_authorization(req.user, req.password)?,
        send: !req.auth_after_challenge,
    };

    let advertisement_body = exchange(
        || http.get(repo.info_refs.clone()).header(ACCEPT, "*/*"),
        &mut authorization,
        "ref advertisement",
        Some("application/x-git-receive-pack-advertisement"),
        &repo,
    )
    .await?;
    let advertisement = parse_advertisement(&advertisement_body)?;
    if let Some(head) = advertisement.head(MASTER) {
        tracing::info!(repo = %repo.display, head, "master exists already, not pushing");
        return Ok(PushOutcome::AlreadyDeployed {
            head: head.to_owned(),
        });
    }

    let capabilities = requested_capabilities(&advertisement);
    let body = bytes::Bytes::from(pack.request_body(&capabilities));
    let report = exchange(
        || {
            http.post(repo.receive_pack.clone())
                .header(CONTENT_TYPE, "application/x-git-receive-pack-request")
                .header(ACCEPT, "application/x-git-receive-pack-result")
                .body(body.clone())
        },
        &mut authorization,
        "push",
        None,
        &repo,
    )
    .await?;
    if capabilities.iter().any(|c| *c == "report-status") {
        if let Err(error) = parse_report(&report) {
            // A concurrent push created master first (a previous process,
            // killed while its push was in flight, for this same job): the
            // job is deployed, and must not be deployed twice.
            if let PushError::Rejected { .. } = error {
                let body = exchange(
                    || http.get(repo.info_refs.clone()).header(ACCEPT, "*/*"),
                    &mut authorization,
                    "ref advertisement",
                    Some("application/x-git-receive-pack-advertisement"),
                    &repo,
                )
                .await?;
                if let Some(head) = parse_advertisement(&body)?.head(MASTER) {
                    tracing::warn!(repo = %repo.display, head, "push refused but master exists: deployed by an earlier push");
                    return Ok(PushOutcome::AlreadyDeployed {
                        head: head.to_owned(),
                    });
                }
            }
            return Err(error);
        }
    } else {
        // Without report-status a server that accepted the request has
        // nothing to say; HTTP success is all there is to go by.
        tracing::warn!(repo = %repo.display, "git server does not offer report-status; assuming success");
    }
    tracing::info!(repo = %repo.display, commit = %pack.commit_id, "pushed");
    Ok(PushOutcome::Pushed {
        commit: pack.commit_id.clone(),
    })
}

fn basic_authorization(user: &str, password: &Secret) -> Result<HeaderValue, PushError> {
    let credentials = base64::engine::general_purpose::STANDARD
        .encode(format!("{user}:{}", password.expose()).as_bytes());
    let mut value = HeaderValue::from_str(&format!("Basic {credentials}")).map_err(|_| {
        PushError::InvalidRequest {
            detail: "credentials cannot be sent in a header".to_owned(),
        }
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The Basic credentials of a push, and whether they go with requests yet.
struct BasicAuth {
    header: HeaderValue,
    send: bool,
}

/// Sends one request (built by `request`, again after a 401 challenge when
/// the credentials were not sent yet) and returns the body of a 2xx answer.
async fn exchange(
    request: impl Fn() -> reqwest::RequestBuilder,
    authorization: &mut BasicAuth,
    step: &'static str,
    expected_content_type: Option<&str>,
    repo: &RepoUrls,
) -> Result<Vec<u8>, PushError> {
    // Servers that only speak smart HTTP to git clients check for this prefix.
    let user_agent = concat!("git/paas-runner-", env!("CARGO_PKG_VERSION"));
    let started = Instant::now();
    let send = |with_credentials: bool| {
        let mut builder = request().header(USER_AGENT, user_agent);
        if with_credentials {
            builder = builder.header(AUTHORIZATION, authorization.header.clone());
        }
        builder.send()
    };
    let mut response = send(authorization.send).await.map_err(transport_error)?;
    if response.status().as_u16() == 401 && !authorization.send {
        tracing::debug!(repo = %repo.display, step, "git server asks for credentials");
        authorization.send = true;
        response = send(true).await.map_err(transport_error)?;
    }
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::debug!(repo = %repo.display, step, status, elapsed_ms, "git http exchange");
    match status {
        200..=299 => {}
        401 | 403 => return Err(PushError::Unauthorized { status }),
        _ => return Err(PushError::Http { status, step }),
    }
    if let Some(expected) = expected_content_type {
        // A dumb HTTP server or a login page would answer 200 with
        // something else; the smart protocol announces itself by type.
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case(expected) {
            return Err(PushError::Protocol {
                detail: format!(
                    "not a smart HTTP git server (content type {:?})",
                    quote(content_type.as_bytes())
                ),
            });
        }
    }
    read_limited(response).await
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, PushError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(PushError::Protocol {
                detail: format!("answer larger than {MAX_RESPONSE_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn transport_error(err: reqwest::Error) -> PushError {
    let (detail, timed_out) = crate::describe_http_error(err);
    PushError::Transport { detail, timed_out }
}

/// Capabilities to ask for, among those the server advertises.
fn requested_capabilities(advertisement: &Advertisement) -> Vec<String> {
    let mut capabilities = Vec::new();
    if advertisement
        .capabilities
        .iter()
        .any(|c| c == "report-status")
    {
        capabilities.push("report-status".to_owned());
    }
    capabilities.push(concat!("agent=paas-runner/", env!("CARGO_PKG_VERSION")).to_owned());
    capabilities
}

// ---------------------------------------------------------------------------
// pkt-line framing

/// Appends `payload` as one pkt-line: 4 hex digits of total length, then the payload.
fn write_pkt_line(out: &mut Vec<u8>, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PKT_PAYLOAD);
    out.extend_from_slice(format!("{:04x}", payload.len() + 4).as_bytes());
    out.extend_from_slice(payload);
}

const FLUSH_PKT: &[u8] = b"0000";

#[derive(Debug, PartialEq, Eq)]
enum Pkt<'a> {
    /// `0000`: end of a section.
    Flush,
    /// `0001` and `0002` (protocol v2 delimiter and response end).
    Special,
    Data(&'a [u8]),
}

/// Reads consecutive pkt-lines from a buffer.
struct PktReader<'a> {
    data: &'a [u8],
    position: usize,
}

impl<'a> PktReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        PktReader { data, position: 0 }
    }

    /// The next pkt-line, or `None` at the end of the buffer.
    fn next_pkt(&mut self) -> Result<Option<Pkt<'a>>, PushError> {
        let rest = &self.data[self.position..];
        if rest.is_empty() {
            return Ok(None);
        }
        let length = rest
            .get(..4)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| usize::from_str_radix(hex, 16).ok())
            .ok_or_else(|| PushError::Protocol {
                detail: format!(
                    "bad pkt-line length {:?}",
                    quote(&rest[..rest.len().min(4)])
                ),
            })?;
        match length {
            0 => {
                self.position += 4;
                Ok(Some(Pkt::Flush))
            }
            1 | 2 => {
                self.position += 4;
                Ok(Some(Pkt::Special))
            }
            3 => Err(PushError::Protocol {
                detail: "bad pkt-line length 3".to_owned(),
            }),
            _ => {
                let payload = rest.get(4..length).ok_or_else(|| PushError::Protocol {
                    detail: format!("truncated pkt-line ({} of {length} bytes)", rest.len()),
                })?;
                self.position += length;
                Ok(Some(Pkt::Data(payload)))
            }
        }
    }

    /// The next pkt-line, which must exist.
    fn expect_pkt(&mut self, what: &str) -> Result<Pkt<'a>, PushError> {
        self.next_pkt()?.ok_or_else(|| PushError::Protocol {
            detail: format!("answer ends before the {what}"),
        })
    }
}

fn strip_newline(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

/// Server text made safe to quote in a message (see
/// [`paas_core::sanitize`]; the password is scrubbed by [`push`]).
fn quote(bytes: &[u8]) -> String {
    paas_core::sanitize_bytes(bytes, MAX_QUOTED_CHARS, &[])
        .trim()
        .to_owned()
}

// ---------------------------------------------------------------------------
// Ref advertisement

#[derive(Debug, Default)]
struct Advertisement {
    /// `(object id, ref name)` pairs.
    refs: Vec<(String, String)>,
    capabilities: Vec<String>,
}

impl Advertisement {
    fn head(&self, ref_name: &str) -> Option<&str> {
        self.refs
            .iter()
            .find(|(_, name)| name == ref_name)
            .map(|(id, _)| id.as_str())
    }
}

/// Parses the body of `GET info/refs?service=git-receive-pack`.
fn parse_advertisement(body: &[u8]) -> Result<Advertisement, PushError> {
    let mut reader = PktReader::new(body);
    match reader.expect_pkt("service header")? {
        Pkt::Data(line) if strip_newline(line) == format!("# service={SERVICE}").as_bytes() => {}
        other => {
            return Err(PushError::Protocol {
                detail: format!("expected the service header, got {}", describe(&other)),
            })
        }
    }
    if reader.expect_pkt("flush after the service header")? != Pkt::Flush {
        return Err(PushError::Protocol {
            detail: "no flush after the service header".to_owned(),
        });
    }
    let mut advertisement = Advertisement::default();
    let mut first = true;
    loop {
        let line = match reader.expect_pkt("end of the ref advertisement")? {
            Pkt::Flush => break,
            Pkt::Special => {
                return Err(PushError::Protocol {
                    detail: "unexpected special pkt-line".to_owned(),
                })
            }
            Pkt::Data(line) => strip_newline(line),
        };
        // Protocol v1 servers may announce their version first.
        if first && line == b"version 1" {
            continue;
        }
        let (ref_part, capabilities) = match line.iter().position(|&b| b == 0) {
            Some(nul) => (&line[..nul], Some(&line[nul + 1..])),
            None => (line, None),
        };
        if let Some(capabilities) = capabilities {
            if !first {
                return Err(PushError::Protocol {
                    detail: "capabilities after the first ref".to_owned(),
                });
            }
            advertisement.capabilities = String::from_utf8_lossy(capabilities)
                .split(' ')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
        }
        first = false;
        let ref_part = String::from_utf8_lossy(ref_part);
        if ref_part.starts_with("shallow ") {
            continue;
        }
        let Some((id, name)) = ref_part.split_once(' ') else {
            return Err(PushError::Protocol {
                detail: format!("bad ref line {:?}", quote(line)),
            });
        };
        if id.len() != 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PushError::Protocol {
                detail: format!("bad object id in ref line {:?}", quote(line)),
            });
        }
        // An empty repository advertises only its capabilities, under this
        // pseudo-ref; `.have` lines name objects of alternates.
        if name == "capabilities^{}" || name == ".have" {
            continue;
        }
        advertisement
            .refs
            .push((id.to_ascii_lowercase(), name.to_owned()));
    }
    Ok(advertisement)
}

fn describe(pkt: &Pkt<'_>) -> String {
    match pkt {
        Pkt::Flush => "a flush".to_owned(),
        Pkt::Special => "a special pkt-line".to_owned(),
        Pkt::Data(line) => format!("{:?}", quote(line)),
    }
}

// ---------------------------------------------------------------------------
// Status report

/// Checks the answer to the push: the report-status section, possibly
/// wrapped in side-band channels even though none was asked for.
fn parse_report(body: &[u8]) -> Result<(), PushError> {
    let status = demultiplex(body)?;
    let mut reader = PktReader::new(&status);
    let mut unpack: Option<String> = None;
    let mut master: Option<Result<(), String>> = None;
    while let Some(pkt) = reader.next_pkt()? {
        let Pkt::Data(line) = pkt else { break };
        let line = String::from_utf8_lossy(strip_newline(line)).into_owned();
        if let Some(result) = line.strip_prefix("unpack ") {
            unpack = Some(result.to_owned());
        } else if let Some(name) = line.strip_prefix("ok ") {
            if name == MASTER {
                master = Some(Ok(()));
            }
        } else if let Some(rest) = line.strip_prefix("ng ") {
            let (name, reason) = rest.split_once(' ').unwrap_or((rest, "no reason given"));
            if name == MASTER {
                master = Some(Err(reason.to_owned()));
            }
        }
    }
    match unpack.as_deref() {
        None => {
            return Err(PushError::Protocol {
                detail: "no unpack status in the answer".to_owned(),
            })
        }
        Some("ok") => {}
        Some(error) => {
            return Err(PushError::Rejected {
                reason: format!("unpack failed: {}", quote(error.as_bytes())),
            })
        }
    }
    match master {
        Some(Ok(())) => Ok(()),
        Some(Err(reason)) => Err(PushError::Rejected {
            reason: quote(reason.as_bytes()),
        }),
        None => Err(PushError::Protocol {
            detail: format!("no status for {MASTER} in the answer"),
        }),
    }
}

/// The report-status pkt-lines of an answer. In side-band mode every
/// pkt-line starts with a channel byte: 1 carries the report, 2 progress
/// messages, 3 a fatal error. A plain report starts with `unpack`, so the
/// first byte tells which mode the server chose.
fn demultiplex(body: &[u8]) -> Result<Vec<u8>, PushError> {
    let mut reader = PktReader::new(body);
    let mut report = Vec::new();
    let mut progress = Vec::new();
    while let Some(pkt) = reader.next_pkt()? {
        let Pkt::Data(payload) = pkt else {
            if report.is_empty() {
                // A flush before any band data: plain mode with an empty
                // report, or the end of the side-band stream.
                continue;
            }
            break;
        };
        match payload.first() {
            Some(1) => report.extend_from_slice(&payload[1..]),
            Some(2) => progress.extend_from_slice(&payload[1..]),
            Some(3) => {
                return Err(PushError::Rejected {
                    reason: format!("remote error: {}", quote(&payload[1..])),
                });
            }
            _ => return Ok(body.to_vec()),
        }
    }
    if !progress.is_empty() {
        tracing::debug!(messages = %quote(&progress), "git server progress messages");
    }
    Ok(report)
}

// ---------------------------------------------------------------------------
// Objects and packfile

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ObjectKind {
    Commit = 1,
    Tree = 2,
    Blob = 3,
}

impl ObjectKind {
    fn name(self) -> &'static str {
        match self {
            ObjectKind::Commit => "commit",
            ObjectKind::Tree => "tree",
            ObjectKind::Blob => "blob",
        }
    }
}

struct GitObject {
    kind: ObjectKind,
    data: Vec<u8>,
    id: [u8; 20],
}

impl GitObject {
    fn new(kind: ObjectKind, data: Vec<u8>) -> Self {
        let mut hasher = Sha1::new();
        hasher.update(format!("{} {}\0", kind.name(), data.len()).as_bytes());
        hasher.update(&data);
        GitObject {
            kind,
            data,
            id: hasher.finalize().into(),
        }
    }

    fn hex_id(&self) -> String {
        hex::encode(self.id)
    }
}

/// The commit to push, as a packfile, with its id.
struct PackedCommit {
    commit_id: String,
    pack: Vec<u8>,
}

impl PackedCommit {
    fn new(req: &PushRequest<'_>) -> Result<PackedCommit, PushError> {
        let mut files: Vec<&(String, Vec<u8>)> = req.files.iter().collect();
        for (name, _) in &files {
            check_file_name(name)?;
        }
        // Tree entries are sorted by name bytes; for files only (no
        // directories, which sort as if they ended with "/") that is all.
        files.sort_by(|(a, _), (b, _)| a.as_bytes().cmp(b.as_bytes()));
        if let Some(pair) = files.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(PushError::InvalidRequest {
                detail: format!("file {:?} given twice", pair[0].0),
            });
        }
        let blobs: Vec<GitObject> = files
            .iter()
            .map(|(_, content)| GitObject::new(ObjectKind::Blob, content.clone()))
            .collect();
        let mut tree_data = Vec::new();
        for ((name, _), blob) in files.iter().zip(&blobs) {
            tree_data.extend_from_slice(b"100644 ");
            tree_data.extend_from_slice(name.as_bytes());
            tree_data.push(0);
            tree_data.extend_from_slice(&blob.id);
        }
        let tree = GitObject::new(ObjectKind::Tree, tree_data);
        let commit = GitObject::new(ObjectKind::Commit, commit_data(req, &tree.hex_id())?);
        let commit_id = commit.hex_id();
        let mut objects = vec![commit, tree];
        objects.extend(blobs);
        Ok(PackedCommit {
            commit_id,
            pack: build_pack(&objects)?,
        })
    }

    /// The body of `POST git-receive-pack`: the command creating master, then the pack.
    fn request_body(&self, capabilities: &[String]) -> Vec<u8> {
        let command = format!(
            "{ZERO_ID} {} {MASTER}\0 {}",
            self.commit_id,
            capabilities.join(" ")
        );
        let mut body = Vec::with_capacity(command.len() + 8 + self.pack.len());
        write_pkt_line(&mut body, command.as_bytes());
        body.extend_from_slice(FLUSH_PKT);
        body.extend_from_slice(&self.pack);
        body
    }
}

fn check_file_name(name: &str) -> Result<(), PushError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.eq_ignore_ascii_case(".git")
        || name.contains(['/', '\0']);
    if bad {
        return Err(PushError::InvalidRequest {
            detail: format!("file name {name:?} cannot be pushed"),
        });
    }
    Ok(())
}

fn commit_data(req: &PushRequest<'_>, tree_id: &str) -> Result<Vec<u8>, PushError> {
    let bad_ident = |s: &str| s.contains(['<', '>', '\n', '\0']);
    if bad_ident(req.author_name) || bad_ident(req.author_email) {
        return Err(PushError::InvalidRequest {
            detail: "author name or email contains '<', '>' or a line break".to_owned(),
        });
    }
    if req.message.contains('\0') {
        return Err(PushError::InvalidRequest {
            detail: "commit message contains a NUL byte".to_owned(),
        });
    }
    if req.timestamp_secs < 0 {
        return Err(PushError::InvalidRequest {
            detail: "commit timestamp is before 1970".to_owned(),
        });
    }
    let ident = format!(
        "{} <{}> {} +0000",
        req.author_name, req.author_email, req.timestamp_secs
    );
    let mut message = req.message.to_owned();
    if !message.ends_with('\n') {
        message.push('\n');
    }
    Ok(format!("tree {tree_id}\nauthor {ident}\ncommitter {ident}\n\n{message}").into_bytes())
}

/// A version-2 packfile of undeltified, zlib-compressed objects.
fn build_pack(objects: &[GitObject]) -> Result<Vec<u8>, PushError> {
    let count = u32::try_from(objects.len()).map_err(|_| PushError::InvalidRequest {
        detail: "too many files".to_owned(),
    })?;
    let mut pack = Vec::new();
    pack.extend_from_slice(b"PACK");
    pack.extend_from_slice(&2u32.to_be_bytes());
    pack.extend_from_slice(&count.to_be_bytes());
    for object in objects {
        write_object_header(&mut pack, object.kind, object.data.len() as u64);
        let mut encoder = ZlibEncoder::new(&mut pack, Compression::default());
        encoder
            .write_all(&object.data)
            .and_then(|_| encoder.finish().map(|_| ()))
            .map_err(|err| PushError::InvalidRequest {
                detail: format!("compression failed: {err}"),
            })?;
    }
    let trailer: [u8; 20] = Sha1::digest(&pack).into();
    pack.extend_from_slice(&trailer);
    Ok(pack)
}

/// Object header: type in bits 4-6 of the first byte with the 4 low bits
/// of the size, then 7 more bits of size per byte, high bit = "more".
fn write_object_header(out: &mut Vec<u8>, kind: ObjectKind, size: u64) {
    let mut byte = ((kind as u8) << 4) | (size & 0x0f) as u8;
    let mut remaining = size >> 4;
    while remaining > 0 {
        out.push(byte | 0x80);
        byte = (remaining & 0x7f) as u8;
        remaining >>= 7;
    }
    out.push(byte);
}

mod destination;
#[cfg(test)]
mod tests;

use destination::{check_destination, RepoUrls};
