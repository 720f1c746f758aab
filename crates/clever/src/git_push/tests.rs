//! Tests of the git push module: framing and objects alone, then the protocol against real `git receive-pack`.

use super::*;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn files() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "runner.toml".to_owned(),
            b"[[runners]]\nexecutor = \"docker\"\n".to_vec(),
        ),
        ("job.json".to_owned(), br#"{"id":42}"#.to_vec()),
        ("Dockerfile".to_owned(), b"FROM alpine\n".to_vec()),
    ]
}

fn request<'a>(files: &'a [(String, Vec<u8>)], password: &'a Secret) -> PushRequest<'a> {
    PushRequest {
        repo_url: "https://push.example/app_1.git",
        user: "Jenkins",
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

fn data_pkt(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_pkt_line(&mut out, payload);
    out
}

#[test]
fn pkt_line_framing() {
    assert_eq!(data_pkt(b"a\n"), b"0006a\n");
    assert_eq!(data_pkt(b""), b"0004");
    let mut reader = PktReader::new(b"0006a\n000000010002");
    assert_eq!(reader.next_pkt().unwrap(), Some(Pkt::Data(b"a\n")));
    assert_eq!(reader.next_pkt().unwrap(), Some(Pkt::Flush));
    assert_eq!(reader.next_pkt().unwrap(), Some(Pkt::Special));
    assert_eq!(reader.next_pkt().unwrap(), Some(Pkt::Special));
    assert_eq!(reader.next_pkt().unwrap(), None);
    for bad in [&b"zzzz"[..], b"00", b"0003", b"0010abc"] {
        assert!(
            matches!(
                PktReader::new(bad).next_pkt(),
                Err(PushError::Protocol { .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn object_ids_match_git() {
    let check = |kind, data: &[u8], expect: &str| {
        assert_eq!(GitObject::new(kind, data.to_vec()).hex_id(), expect)
    };
    check(
        ObjectKind::Blob,
        b"",
        "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391",
    );
    check(
        ObjectKind::Blob,
        b"hello\n",
        "ce013625030ba8dba906f756967f9e9ca394464a",
    );
    check(
        ObjectKind::Tree,
        b"",
        "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
    );
}

#[test]
fn object_header_sizes() {
    let check = |kind, size, expect: &[u8]| {
        let mut out = Vec::new();
        write_object_header(&mut out, kind, size);
        assert_eq!(out, expect, "size {size}");
    };
    check(ObjectKind::Blob, 0, &[0x30]);
    check(ObjectKind::Blob, 15, &[0x3f]);
    check(ObjectKind::Blob, 16, &[0xb0, 0x01]);
    check(ObjectKind::Commit, 0x1234, &[0x94, 0xa3, 0x02]);
    check(ObjectKind::Tree, 100_000, &[0xa0, 0xea, 0x30]);
}

/// Reads a pack back: (kind, data) of each object; checks counts and trailer.
fn unpack(pack: &[u8]) -> Vec<(u8, Vec<u8>)> {
    assert_eq!(&pack[..4], b"PACK");
    assert_eq!(u32::from_be_bytes(pack[4..8].try_into().unwrap()), 2);
    let count = u32::from_be_bytes(pack[8..12].try_into().unwrap());
    let (content, trailer) = pack.split_at(pack.len() - 20);
    assert_eq!(Sha1::digest(content).as_slice(), trailer);
    let mut position = 12;
    let mut objects = Vec::new();
    for _ in 0..count {
        let first = content[position];
        let kind = (first >> 4) & 0x07;
        let mut size = (first & 0x0f) as u64;
        let mut shift = 4;
        let mut byte = first;
        position += 1;
        while byte & 0x80 != 0 {
            byte = content[position];
            size |= ((byte & 0x7f) as u64) << shift;
            shift += 7;
            position += 1;
        }
        let mut decoder = flate2::bufread::ZlibDecoder::new(&content[position..]);
        let mut data = Vec::new();
        decoder.read_to_end(&mut data).unwrap();
        position += decoder.total_in() as usize;
        assert_eq!(data.len() as u64, size);
        objects.push((kind, data));
    }
    assert_eq!(position, content.len());
    objects
}

#[test]
fn pack_holds_commit_tree_and_sorted_blobs() {
    let files = files();
    let password = Secret::new("s3cret");
    let packed = PackedCommit::new(&request(&files, &password)).unwrap();
    let objects = unpack(&packed.pack);
    let kinds: Vec<u8> = objects.iter().map(|(kind, _)| *kind).collect();
    assert_eq!(kinds, [1, 2, 3, 3, 3]);
    let commit = String::from_utf8(objects[0].1.clone()).unwrap();
    let tree_id = GitObject::new(ObjectKind::Tree, objects[1].1.clone()).hex_id();
    assert_eq!(
        commit,
        format!(
            "tree {tree_id}\n\
             author Heptapod Paas Runner <paasrunner@heptapod.test> 1700000000 +0000\n\
             committer Heptapod Paas Runner <paasrunner@heptapod.test> 1700000000 +0000\n\
             \nJob 42\n"
        )
    );
    assert_eq!(
        GitObject::new(ObjectKind::Commit, objects[0].1.clone()).hex_id(),
        packed.commit_id
    );
    // Blobs follow the tree order: Dockerfile, job.json, runner.toml.
    assert_eq!(objects[2].1, b"FROM alpine\n");
    assert_eq!(objects[3].1, br#"{"id":42}"#);
    let tree = &objects[1].1;
    let names: Vec<&[u8]> = tree
        .split(|&b| b == 0)
        .filter_map(|part| {
            part.windows(7)
                .position(|w| w == b"100644 ")
                .map(|at| &part[at + 7..])
        })
        .collect();
    assert_eq!(names, [&b"Dockerfile"[..], b"job.json", b"runner.toml"]);
}

#[test]
fn request_body_starts_with_the_command() {
    let files = files();
    let password = Secret::new("s3cret");
    let packed = PackedCommit::new(&request(&files, &password)).unwrap();
    let body = packed.request_body(&[
        "report-status".to_owned(),
        "agent=paas-runner/test".to_owned(),
    ]);
    let mut reader = PktReader::new(&body);
    let Some(Pkt::Data(command)) = reader.next_pkt().unwrap() else {
        panic!("no command")
    };
    assert_eq!(
        command,
        format!(
            "{ZERO_ID} {} refs/heads/master\0 report-status agent=paas-runner/test",
            packed.commit_id
        )
        .as_bytes()
    );
    assert_eq!(reader.next_pkt().unwrap(), Some(Pkt::Flush));
    assert_eq!(&body[reader.position..], &packed.pack[..]);
}

#[test]
fn invalid_requests_are_refused_before_any_traffic() {
    let password = Secret::new("s3cret");
    for name in ["", ".", "..", ".git", ".GIT", "a/b", "nul\0"] {
        let files = vec![(name.to_owned(), Vec::new())];
        assert!(
            matches!(
                PackedCommit::new(&request(&files, &password)),
                Err(PushError::InvalidRequest { .. })
            ),
            "{name:?}"
        );
    }
    let twice = vec![
        ("a".to_owned(), Vec::new()),
        ("a".to_owned(), b"x".to_vec()),
    ];
    assert!(matches!(
        PackedCommit::new(&request(&twice, &password)),
        Err(PushError::InvalidRequest { .. })
    ));
    let files = files();
    let mut bad_author = request(&files, &password);
    bad_author.author_email = "a>b";
    assert!(matches!(
        PackedCommit::new(&bad_author),
        Err(PushError::InvalidRequest { .. })
    ));
    let mut bad_date = request(&files, &password);
    bad_date.timestamp_secs = -1;
    assert!(matches!(
        PackedCommit::new(&bad_date),
        Err(PushError::InvalidRequest { .. })
    ));
}

#[test]
fn debug_shows_neither_password_nor_contents() {
    let files = files();
    let password = Secret::new("s3cret");
    let debug = format!("{:?}", request(&files, &password));
    // "FROM" as the bytes a derived Debug of the contents would show.
    assert!(
        !debug.contains("s3cret") && !debug.contains("70, 82, 79, 77"),
        "{debug}"
    );
    assert!(debug.contains("(\"job.json\", 9)"), "{debug}");
}

#[test]
fn repo_urls_drop_credentials() {
    let urls = RepoUrls::new("https://user:pw@push-par.example/app_1.git/?x=1#f").unwrap();
    assert_eq!(
        urls.info_refs.as_str(),
        "https://push-par.example/app_1.git/info/refs?service=git-receive-pack"
    );
    assert_eq!(
        urls.receive_pack.as_str(),
        "https://push-par.example/app_1.git/git-receive-pack"
    );
    assert_eq!(urls.display, "https://push-par.example/app_1.git");
    for bad in ["ssh://git@host/app.git", "not a url", "file:///tmp/x"] {
        assert!(
            matches!(RepoUrls::new(bad), Err(PushError::InvalidRequest { .. })),
            "{bad}"
        );
    }
}

fn advertisement_body(lines: &[&[u8]]) -> Vec<u8> {
    let mut body = data_pkt(b"# service=git-receive-pack\n");
    body.extend_from_slice(FLUSH_PKT);
    for line in lines {
        body.extend(data_pkt(line));
    }
    body.extend_from_slice(FLUSH_PKT);
    body
}

#[test]
fn advertisement_parsing() {
    let empty = parse_advertisement(&advertisement_body(&[
        format!("{ZERO_ID} capabilities^{{}}\0report-status delete-refs side-band-64k quiet agent=git/2.47\n").as_bytes(),
    ]))
    .unwrap();
    assert!(empty.refs.is_empty());
    assert!(empty.capabilities.iter().any(|c| c == "report-status"));
    assert_eq!(empty.head(MASTER), None);

    let head = "a".repeat(40);
    let other = "B".repeat(40);
    let full = parse_advertisement(&advertisement_body(&[
        b"version 1\n",
        format!("{other} refs/heads/dev\0report-status\n").as_bytes(),
        format!("{head} refs/heads/master\n").as_bytes(),
        format!("{head} .have\n").as_bytes(),
    ]))
    .unwrap();
    assert_eq!(full.head(MASTER), Some(head.as_str()));
    assert_eq!(full.head("refs/heads/dev"), Some("b".repeat(40).as_str()));
    assert_eq!(full.capabilities, ["report-status"]);

    let bad_bodies: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"<html>login</html>".to_vec(),
        data_pkt(b"# service=git-upload-pack\n"),
        advertisement_body(&[b"xyz refs/heads/master\n"]),
        advertisement_body(&[b"no-space-here"]),
        // Missing final flush.
        advertisement_body(&[])[..advertisement_body(&[]).len() - 4].to_vec(),
    ];
    for body in bad_bodies {
        assert!(
            matches!(parse_advertisement(&body), Err(PushError::Protocol { .. })),
            "{body:?}"
        );
    }
}

fn report(lines: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for line in lines {
        body.extend(data_pkt(line));
    }
    body.extend_from_slice(FLUSH_PKT);
    body
}

fn sideband(band: u8, payload: &[u8]) -> Vec<u8> {
    let mut framed = vec![band];
    framed.extend_from_slice(payload);
    data_pkt(&framed)
}

#[test]
fn report_parsing() {
    assert!(parse_report(&report(&[b"unpack ok\n", b"ok refs/heads/master\n"])).is_ok());
    let rejected = parse_report(&report(&[
        b"unpack ok\n",
        b"ng refs/heads/master pre-receive hook declined\n",
    ]));
    assert!(
        matches!(rejected, Err(PushError::Rejected { ref reason }) if reason == "pre-receive hook declined")
    );
    let unpack = parse_report(&report(&[
        b"unpack index-pack abnormal exit\n",
        b"ng refs/heads/master unpacker error\n",
    ]));
    assert!(
        matches!(unpack, Err(PushError::Rejected { ref reason }) if reason.contains("index-pack abnormal exit"))
    );
    for bad in [
        report(&[b"unpack ok\n"]),
        report(&[b"ok refs/heads/master\n"]),
        Vec::new(),
        b"garbage".to_vec(),
    ] {
        assert!(
            matches!(parse_report(&bad), Err(PushError::Protocol { .. })),
            "{bad:?}"
        );
    }

    // Side-band, although not asked for: the report inside channel 1.
    let inner = report(&[b"unpack ok\n", b"ok refs/heads/master\n"]);
    let mut body = sideband(2, b"remote: deploying\n");
    body.extend(sideband(1, &inner[..10]));
    body.extend(sideband(1, &inner[10..]));
    body.extend_from_slice(FLUSH_PKT);
    assert!(parse_report(&body).is_ok());

    let mut fatal = sideband(2, b"working\n");
    fatal.extend(sideband(3, b"disk full\n"));
    assert!(
        matches!(parse_report(&fatal), Err(PushError::Rejected { ref reason }) if reason.contains("disk full"))
    );
}

#[test]
fn transient_classification() {
    let http = |status| PushError::Http {
        status,
        step: "push",
    };
    assert!(http(502).is_transient());
    assert!(http(429).is_transient());
    assert!(http(408).is_transient());
    assert!(!http(404).is_transient());
    assert!(PushError::Transport {
        detail: String::new(),
        timed_out: true
    }
    .is_transient());
    assert!(!PushError::Unauthorized { status: 401 }.is_transient());
    assert!(!PushError::Rejected {
        reason: String::new()
    }
    .is_transient());
    assert!(!PushError::Protocol {
        detail: String::new()
    }
    .is_transient());
}

// ---------------------------------------------------------------------------
// Against real git, without HTTP: what `git http-backend` would relay.

struct BareRepo {
    _dir: tempfile::TempDir,
    home: PathBuf,
    path: PathBuf,
}

impl BareRepo {
    fn new() -> BareRepo {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let path = dir.path().join("app.git");
        let repo = BareRepo {
            _dir: dir,
            home,
            path,
        };
        let out = repo.git(&["init", "--bare", "-q"], Some(&repo.path.clone()), None);
        assert!(out.status.success(), "{out:?}");
        repo
    }

    /// Runs git isolated from the user's and system's configuration.
    fn git(
        &self,
        args: &[&str],
        path_arg: Option<&Path>,
        stdin: Option<&[u8]>,
    ) -> std::process::Output {
        let mut command = Command::new("git");
        command
            .args(args)
            .args(path_arg)
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut child_stdin = child.stdin.take().unwrap();
        let input = stdin.unwrap_or_default().to_vec();
        let writer = std::thread::spawn(move || child_stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        out
    }

    fn git_dir(&self, args: &[&str]) -> std::process::Output {
        let git_dir = self.path.to_str().unwrap();
        let mut full = vec!["--git-dir", git_dir];
        full.extend_from_slice(args);
        self.git(&full, None, None)
    }

    /// The advertisement as `git http-backend` sends it.
    fn advertisement(&self) -> Advertisement {
        let out = self.git(
            &["receive-pack", "--stateless-rpc", "--advertise-refs"],
            Some(&self.path),
            None,
        );
        assert!(out.status.success(), "{out:?}");
        let mut body = data_pkt(b"# service=git-receive-pack\n");
        body.extend_from_slice(FLUSH_PKT);
        body.extend_from_slice(&out.stdout);
        parse_advertisement(&body).unwrap()
    }

    fn receive_pack(&self, body: &[u8]) -> Vec<u8> {
        let out = self.git(
            &["receive-pack", "--stateless-rpc"],
            Some(&self.path),
            Some(body),
        );
        assert!(out.status.success(), "{out:?}");
        out.stdout
    }

    fn show(&self, spec: &str) -> Vec<u8> {
        let out = self.git_dir(&["show", spec]);
        assert!(out.status.success(), "{out:?}");
        out.stdout
    }

    fn fsck(&self) {
        let out = self.git_dir(&["fsck", "--full", "--strict", "--no-dangling"]);
        assert!(out.status.success(), "{out:?}");
        assert!(out.stderr.is_empty() && out.stdout.is_empty(), "{out:?}");
    }
}

#[test]
fn push_to_real_receive_pack() {
    let repo = BareRepo::new();
    let advertisement = repo.advertisement();
    assert!(advertisement.refs.is_empty());
    assert!(advertisement
        .capabilities
        .iter()
        .any(|c| c == "report-status"));

    let files = files();
    let password = Secret::new("s3cret");
    let packed = PackedCommit::new(&request(&files, &password)).unwrap();
    let report = repo.receive_pack(&packed.request_body(&requested_capabilities(&advertisement)));
    parse_report(&report).unwrap();

    assert_eq!(repo.show("master:job.json"), br#"{"id":42}"#);
    assert_eq!(repo.show("master:Dockerfile"), b"FROM alpine\n");
    let rev = repo.git_dir(&["rev-parse", "master"]);
    assert_eq!(
        String::from_utf8(rev.stdout).unwrap().trim(),
        packed.commit_id
    );
    repo.fsck();

    // The next look finds master: a relaunch would not push again.
    assert_eq!(
        repo.advertisement().head(MASTER),
        Some(packed.commit_id.as_str())
    );
}

#[test]
fn real_receive_pack_with_side_band_and_large_files() {
    let repo = BareRepo::new();
    // Large, poorly compressible content exercises multi-byte size headers.
    let mut state = 0x2545_f491_u32;
    let noise: Vec<u8> = (0..300_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    let files = vec![
        ("big.bin".to_owned(), noise.clone()),
        ("empty".to_owned(), Vec::new()),
        ("job.json".to_owned(), b"{}".to_vec()),
    ];
    let password = Secret::new("s3cret");
    let packed = PackedCommit::new(&request(&files, &password)).unwrap();
    let capabilities = ["report-status".to_owned(), "side-band-64k".to_owned()];
    let report = repo.receive_pack(&packed.request_body(&capabilities));
    assert_eq!(report[4], 1, "answer should be multiplexed: {report:?}");
    parse_report(&report).unwrap();
    assert_eq!(repo.show("master:big.bin"), noise);
    repo.fsck();
}

#[test]
fn real_receive_pack_rejection() {
    let repo = BareRepo::new();
    let hook = repo.path.join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho deployment refused >&2\nexit 1\n").unwrap();
    let mut permissions = std::fs::metadata(&hook).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&hook, permissions).unwrap();

    let files = files();
    let password = Secret::new("s3cret");
    let packed = PackedCommit::new(&request(&files, &password)).unwrap();
    for capabilities in [
        vec!["report-status".to_owned()],
        vec!["report-status".to_owned(), "side-band-64k".to_owned()],
    ] {
        let report = repo.receive_pack(&packed.request_body(&capabilities));
        let err = parse_report(&report).unwrap_err();
        assert!(
            matches!(&err, PushError::Rejected { reason } if reason.contains("pre-receive hook declined")),
            "{err}"
        );
    }
    assert!(repo.advertisement().refs.is_empty());
}
