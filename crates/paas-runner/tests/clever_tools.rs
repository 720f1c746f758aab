//! Clever Cloud's own CLI, `clever-tools`, unmodified, against
//! `paas-runner sim`: create → env → deploy (git push) → status → delete,
//! each step required to succeed, with what the simulator then shows
//! checked over its API.
//!
//! The `clever` executable comes from `PAAS_RUNNER_CLEVER_TOOLS` (CI
//! installs a pinned version with npm, see `.ci/run`). Without it the test
//! prints a notice and passes, unless `PAAS_RUNNER_REQUIRE_TOOLS` is set.
//!
//! How the CLI is pointed at the simulator (clever-tools 4
//! `src/config/config.js`): `API_HOST` (the API's base, without `/v2`),
//! `CLEVER_TOKEN` + `CLEVER_SECRET` (an OAuth token, as a `$env` profile),
//! `OAUTH_CONSUMER_KEY`/`OAUTH_CONSUMER_SECRET` (the consumer the
//! simulator knows), `CONFIGURATION_FILE` and `HOME` in a throwaway
//! directory. Its JavaScript git (isomorphic-git with an https agent)
//! cannot speak plain http, so the test turns on the CLI's own
//! `system-git` feature (`clever features enable system-git`): pushes go
//! through the system's git, with the OAuth token and secret as Basic
//! credentials, sent after the simulator's 401.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Bound on one CLI command (`deploy` polls every 5 s).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// What `paas-runner sim` prints that the CLI needs.
struct SimInfo {
    api_host: String,
    orga_id: String,
    consumer_key: String,
    consumer_secret: String,
    token: String,
    secret: String,
}

fn clever_executable() -> Option<PathBuf> {
    match std::env::var_os("PAAS_RUNNER_CLEVER_TOOLS") {
        Some(path) if Path::new(&path).exists() => Some(PathBuf::from(path)),
        _ => {
            assert!(
                std::env::var_os("PAAS_RUNNER_REQUIRE_TOOLS").is_none(),
                "clever-tools is required (PAAS_RUNNER_REQUIRE_TOOLS is set) but \
                 PAAS_RUNNER_CLEVER_TOOLS does not name an installed `clever`"
            );
            println!(
                "NOTE: PAAS_RUNNER_CLEVER_TOOLS is not set to a `clever` executable: \
                 the clever-tools test is skipped"
            );
            None
        }
    }
}

/// Starts `paas-runner sim` with no workload and reads what it prints.
async fn start_sim(dir: &Path) -> (tokio::process::Child, SimInfo) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_paas-runner"))
        .args(["sim", "--jobs", "0", "--listen-address", ""])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("paas-runner sim starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read") {
            let done = line.starts_with("workload:");
            printed.push(line);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("paas-runner sim prints its settings");
    // Keep reading so that the simulator never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let value = |label: &str| {
        printed
            .iter()
            .find_map(|line| line.strip_prefix(label))
            .map(|rest| rest.trim().to_owned())
            .unwrap_or_else(|| panic!("no {label} in {printed:?}"))
    };
    let api_url = value("cc_api_url:");
    let oauth = value("OAuth 1:");
    // `consumer KEY / SECRET, token TOKEN / SECRET`
    let words: Vec<&str> = oauth
        .split([' ', ','])
        .filter(|word| !word.is_empty())
        .collect();
    let [_, consumer_key, _, consumer_secret, _, token, _, secret] = words[..] else {
        panic!("unexpected OAuth line {oauth:?}")
    };
    let info = SimInfo {
        api_host: api_url.trim_end_matches("/v2").to_owned(),
        orga_id: value("cc_orga_id:"),
        consumer_key: consumer_key.to_owned(),
        consumer_secret: consumer_secret.to_owned(),
        token: token.to_owned(),
        secret: secret.to_owned(),
    };
    (child, info)
}

struct Cli<'a> {
    clever: &'a Path,
    home: PathBuf,
    work: PathBuf,
    sim: &'a SimInfo,
}

impl Cli<'_> {
    /// Runs `clever args` in the work directory, `stdin` fed to it; panics
    /// with its output unless it succeeds. Returns its standard output.
    async fn run(&self, args: &[&str], stdin: &str) -> String {
        let mut command = tokio::process::Command::new(self.clever);
        command
            .args(args)
            .current_dir(&self.work)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("CONFIGURATION_FILE", self.home.join("clever-tools.json"))
            .env("API_HOST", &self.sim.api_host)
            .env("CLEVER_TOKEN", &self.sim.token)
            .env("CLEVER_SECRET", &self.sim.secret)
            .env("OAUTH_CONSUMER_KEY", &self.sim.consumer_key)
            .env("OAUTH_CONSUMER_SECRET", &self.sim.consumer_secret)
            .env("NO_UPDATE_NOTIFIER", "1")
            .env("NO_COLOR", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("clever starts");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).await.expect("stdin");
        drop(input);
        let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("clever {args:?} did not end in {COMMAND_TIMEOUT:?}"))
            .expect("clever runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "clever {args:?} failed ({:?})\nstdout:\n{stdout}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args(["-c", "user.name=ci", "-c", "user.email=ci@example.invalid"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A signed read of the simulator's API, as the CLI signs.
async fn api_get(sim: &SimInfo, path: &str) -> (u16, Value) {
    let authorization = format!(
        "OAuth oauth_consumer_key=\"{}\", oauth_token=\"{}\", oauth_signature=\"{}%26{}\"",
        sim.consumer_key, sim.token, sim.consumer_secret, sim.secret
    );
    let response = reqwest::Client::new()
        .get(format!("{}{path}", sim.api_host))
        .header("Authorization", authorization)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("api answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clever_tools_creates_configures_deploys_inspects_and_deletes() {
    let Some(clever) = clever_executable() else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("paas-runner-clever-tools-")
        .tempdir()
        .expect("tempdir");
    let (_sim, sim) = start_sim(dir.path()).await;
    let cli = Cli {
        clever: &clever,
        home: dir.path().join("home"),
        work: dir.path().join("work"),
        sim: &sim,
    };
    std::fs::create_dir_all(&cli.home).expect("home");
    std::fs::create_dir_all(&cli.work).expect("work");
    git(&cli.work, &["init", "-q", "-b", "main"]);
    std::fs::write(
        cli.work.join("Dockerfile"),
        "FROM alpine\nCMD [\"sleep\", \"infinity\"]\n",
    )
    .expect("Dockerfile");
    git(&cli.work, &["add", "Dockerfile"]);
    git(&cli.work, &["commit", "-q", "-m", "app"]);
    let commit = git(&cli.work, &["rev-parse", "HEAD"]);

    cli.run(&["features", "enable", "system-git"], "").await;

    // create: `.clever.json` links the work directory to the application.
    cli.run(
        &[
            "create",
            "--type",
            "docker",
            "--org",
            &sim.orga_id,
            "ci-app",
        ],
        "",
    )
    .await;
    let link: Value = serde_json::from_slice(
        &std::fs::read(cli.work.join(".clever.json")).expect(".clever.json"),
    )
    .expect("json");
    let app_id = link["apps"][0]["app_id"]
        .as_str()
        .expect("app id")
        .to_owned();
    let app_path = format!("/v2/organisations/{}/applications/{app_id}", sim.orga_id);
    let (status, app) = api_get(&sim, &app_path).await;
    assert_eq!(status, 200, "{app}");
    assert_eq!(app["description"], "ci-app", "the CLI sends a description");

    // env: import replaces the whole set, set adds one.
    cli.run(&["env", "import"], "A=1\nB=two words\n").await;
    cli.run(&["env", "set", "FOO", "bar"], "").await;
    let listed = cli.run(&["env"], "").await;
    for line in ["A=\"1\"", "B=\"two words\"", "FOO=\"bar\""] {
        assert!(listed.contains(line), "{line} in {listed}");
    }

    // deploy: git push to the simulator's repository, deployment followed
    // to its end.
    cli.run(&["deploy", "--quiet"], "").await;
    let (_, deployments) = api_get(&sim, &format!("{app_path}/deployments?limit=5")).await;
    assert_eq!(deployments[0]["commit"], commit.as_str(), "{deployments}");
    assert_eq!(deployments[0]["state"], "OK", "{deployments}");
    let (_, organisation) = api_get(
        &sim,
        &format!("/v2/organisations/{}/deployments", sim.orga_id),
    )
    .await;
    assert_eq!(organisation[&app_id][0]["commit"], commit.as_str());
    let (_, instances) = api_get(
        &sim,
        &format!("/v2/organisations/{}/instances", sim.orga_id),
    )
    .await;
    assert_eq!(instances[0]["state"], "UP", "{instances}");

    // status: running, at the pushed commit.
    let status = cli.run(&["status"], "").await;
    assert!(status.contains("running"), "{status}");
    assert!(status.contains(&commit), "{status}");

    // delete: gone for the API too.
    cli.run(&["delete", "--yes"], "").await;
    let (status, _) = api_get(&sim, &app_path).await;
    assert_eq!(status, 404);
}
