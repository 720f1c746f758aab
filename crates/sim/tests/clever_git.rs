//! Deployment repositories over git smart HTTP, with the real git client.

mod clever_support;

use clever_support::{
    build_context, git, job_json, push, ready_app, runner_toml, start_sim, with_credentials,
    DOCKERFILE, WAIT,
};
use std::time::Duration;

async fn context() -> clever_support::BuildContext {
    build_context(&[
        ("Dockerfile", DOCKERFILE.to_owned()),
        ("runner.toml", runner_toml("http://127.0.0.1:9/")),
        ("job.json", job_json(1, "job-token", &[])),
    ])
    .await
}

#[tokio::test]
async fn push_with_required_credentials() {
    let sim = start_sim(|config| {
        config.require_git_credentials = true;
        config.git_user = Some("Jenkins".to_owned());
    })
    .await;
    let app_id = ready_app(&sim, "hpd-job-g-1").await;
    let url = sim.sim.git_url(&app_id);
    let context = context().await;

    // Without credentials git gets a Basic challenge and has nothing to
    // answer it with.
    let (ok, out) = push(&context, &url).await;
    assert!(!ok, "push without credentials succeeded: {out}");
    let (ok, out) = push(&context, &with_credentials(&url, "Jenkins", "wrong")).await;
    assert!(!ok, "push with a wrong password succeeded: {out}");
    let token = sim.sim.config().token.clone();
    let (ok, out) = push(&context, &with_credentials(&url, "someone", &token)).await;
    assert!(!ok, "push with a wrong user succeeded: {out}");
    assert_eq!(sim.sim.stats().pushes, 0);

    // The reference runner checks for an existing master first.
    let authed = with_credentials(&url, "Jenkins", &token);
    let (ok, out) = git(context.dir.path(), &["ls-remote", &authed, "master"]).await;
    assert!(
        ok && out.trim().is_empty(),
        "ls-remote on an empty repo: {out}"
    );

    let (ok, out) = push(&context, &authed).await;
    assert!(ok, "push failed: {out}");
    let record = sim.sim.app(&app_id).expect("record");
    assert_eq!(record.pushes, 1);
    assert_eq!(record.commit_id.as_deref(), Some(context.head.as_str()));
    assert_eq!(sim.sim.stats().pushes, 1);

    let (ok, out) = git(context.dir.path(), &["ls-remote", &authed, "master"]).await;
    assert!(ok && out.starts_with(&context.head), "ls-remote: {out}");
    // Pushing the same head again triggers nothing.
    let (ok, out) = push(&context, &authed).await;
    assert!(ok, "{out}");
    assert_eq!(sim.sim.app(&app_id).expect("record").pushes, 1);
}

#[tokio::test]
async fn push_without_required_credentials() {
    let sim = start_sim(|config| {
        config.require_git_credentials = false;
        config.git_user = Some("Jenkins".to_owned());
    })
    .await;
    let app_id = ready_app(&sim, "hpd-job-g-2").await;
    let url = sim.sim.git_url(&app_id);
    let context = context().await;
    // As the reference runner does with an http:// URL: no credentials.
    let (ok, out) = push(&context, &url).await;
    assert!(ok, "push failed: {out}");
    assert_eq!(sim.sim.app(&app_id).expect("record").pushes, 1);

    // Credentials, when sent, are checked (git only sends them on a
    // challenge, so send them by hand).
    let http = reqwest::Client::new();
    let refs = format!("{url}/info/refs?service=git-upload-pack");
    let token = sim.sim.config().token.clone();
    let wrong = http
        .get(&refs)
        .basic_auth("Jenkins", Some("wrong"))
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong
            .headers()
            .get("WWW-Authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Basic realm=\"clever\"")
    );
    let right = http
        .get(&refs)
        .basic_auth("Jenkins", Some(&token))
        .send()
        .await
        .expect("request");
    assert_eq!(right.status(), 200);
    assert_eq!(
        right
            .headers()
            .get("Content-Type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-git-upload-pack-advertisement")
    );
}

#[tokio::test]
async fn repositories_are_served_only_while_ready_and_live() {
    let sim = start_sim(|config| config.repo_ready_delay = Duration::from_secs(3600)).await;
    let app_id = sim.api.create_ok(&sim.sim, "hpd-job-g-3", "S").await;
    let context = context().await;
    let url = sim.sim.git_url(&app_id);
    let (ok, out) = push(&context, &url).await;
    assert!(!ok, "push before CREATED succeeded: {out}");

    let sim = start_sim(|_| {}).await;
    let app_id = ready_app(&sim, "hpd-job-g-4").await;
    let url = sim.sim.git_url(&app_id);
    sim.api.delete_app(&app_id).await;
    let (ok, out) = push(&context, &url).await;
    assert!(!ok, "push to a deleted app succeeded: {out}");
    let (ok, out) = push(&context, &sim.sim.git_url("app_unknown")).await;
    assert!(!ok, "push to an unknown app succeeded: {out}");
    let response = reqwest::get(format!("{}/git/../x.git/info/refs", sim.sim.base_url()))
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    assert!(
        sim.sim
            .wait_until(|sim| sim.stats().pushes == 0, WAIT)
            .await
    );
}
