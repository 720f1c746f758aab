//! What Clever Cloud's official clients (clever-tools 4, `@clevercloud/client`
//! 12) need from the simulator, over real HTTP: OAuth 1 PLAINTEXT on the
//! API and OAuth token/secret on git (with only that kind accepted), the
//! deployments of an application with the pushed commit, the organisation's
//! deployments and instances, and the objects the CLI reads.

mod clever_support;

use clever_support::{build_context, push, start_sim, with_credentials, WAIT};
use paas_sim::clever::{AuthKinds, CleverConfig};
use serde_json::{json, Value};

fn oauth_header(config: &CleverConfig) -> String {
    format!(
        "OAuth oauth_consumer_key=\"{}\", oauth_token=\"{}\", oauth_signature=\"{}%26{}\"",
        config.oauth_consumer_key,
        config.oauth_token,
        config.oauth_consumer_secret,
        config.oauth_secret
    )
}

async fn call(
    method: reqwest::Method,
    url: &str,
    authorization: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .header("Authorization", authorization);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_cli_flow_with_oauth_only() {
    let sim = start_sim(|config| {
        config.auth_kinds = AuthKinds::OAUTH1_ONLY;
        config.require_git_credentials = true;
    })
    .await;
    let config = sim.sim.config().clone();
    let oauth = oauth_header(&config);
    let base = sim.sim.base_url();
    let orga = &config.orga_id;

    // The legacy token is refused when only OAuth is accepted.
    let (status, _) = sim.api.list().await;
    assert_eq!(status, 401);

    // `clever create --type docker`: self, the catalogue, then the create
    // body of clever-tools 4 (`models/application.js` `create`).
    let (status, user) = call(
        reqwest::Method::GET,
        &format!("{base}/v2/self"),
        &oauth,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(user["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("user_")));
    let (status, offers) = call(
        reqwest::Method::GET,
        &format!("{base}/v2/products/instances"),
        &oauth,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let offers = offers.as_array().expect("offers").clone();
    // clever-tools' rule: enabled, variant slug `docker`, highest version.
    let offer = offers
        .iter()
        .filter(|offer| offer["enabled"] == true && offer["variant"]["slug"] == "docker")
        .max_by(|a, b| a["version"].as_str().cmp(&b["version"].as_str()))
        .expect("a docker offer");
    let version = offer["version"].as_str().expect("version").to_owned();
    let body = json!({
        "deploy": "git",
        "description": "cli-app",
        "instanceType": offer["type"],
        "instanceVersion": version,
        "instanceVariant": offer["variant"]["id"],
        "maxFlavor": offer["defaultFlavor"]["name"],
        "maxInstances": 1,
        "minFlavor": offer["defaultFlavor"]["name"],
        "minInstances": 1,
        "name": "cli-app",
        "zone": "par",
        "instanceLifetime": "REGULAR",
        "env": {},
    });
    let apps_url = format!("{base}/v2/organisations/{orga}/applications");
    let (status, app) = call(reqwest::Method::POST, &apps_url, &oauth, Some(body)).await;
    assert_eq!(status, 200, "{app}");
    let app_id = app["id"].as_str().expect("id").to_owned();
    let app_url = format!("{apps_url}/{app_id}");
    // `status` reads `buildFlavor.name`.
    assert!(app["buildFlavor"]["name"].is_string(), "{app}");

    // `clever env`: the application's env and the linked ones.
    for linked in ["addons/env", "dependencies/env"] {
        let (status, env) = call(
            reqwest::Method::GET,
            &format!("{app_url}/{linked}"),
            &oauth,
            None,
        )
        .await;
        assert_eq!((status, env), (200, json!([])), "{linked}");
    }

    // No deployment before the push.
    let deployments_url = format!("{app_url}/deployments?limit=5");
    let (_, before) = call(reqwest::Method::GET, &deployments_url, &oauth, None).await;
    assert_eq!(before, json!([]));

    // `clever deploy`: git with the OAuth token and secret as Basic
    // credentials; a plain Dockerfile deploys.
    let ready = sim
        .sim
        .wait_until(
            |sim| {
                sim.app(&app_id)
                    .is_some_and(|app| app.repo_ready_at.is_some())
            },
            WAIT,
        )
        .await;
    assert!(ready);
    let context = build_context(&[("Dockerfile", "FROM alpine\n".to_owned())]).await;
    let repo = app["deployment"]["httpUrl"].as_str().expect("httpUrl");
    let (ok, out) = push(
        &context,
        &with_credentials(repo, &config.token, &config.token),
    )
    .await;
    assert!(
        !ok,
        "the legacy token must not push when only OAuth is accepted: {out}"
    );
    let (ok, out) = push(
        &context,
        &with_credentials(repo, &config.oauth_token, &config.oauth_secret),
    )
    .await;
    assert!(ok, "{out}");

    let deployed = sim
        .sim
        .wait_until(
            |sim| {
                sim.app(&app_id)
                    .is_some_and(|app| app.vm.state == paas_sim::vm::VmState::Running)
            },
            WAIT,
        )
        .await;
    assert!(deployed);
    let (_, deployments) = call(reqwest::Method::GET, &deployments_url, &oauth, None).await;
    let deployment = deployments[0].clone();
    assert_eq!(deployment["commit"], context.head.as_str(), "{deployments}");
    assert_eq!(deployment["state"], "OK", "a REGULAR app that is up");
    let uuid = deployment["uuid"].as_str().expect("uuid");
    let (status, one) = call(
        reqwest::Method::GET,
        &format!("{app_url}/deployments/{uuid}"),
        &oauth,
        None,
    )
    .await;
    assert_eq!((status, &one), (200, &deployment));
    let (status, _) = call(
        reqwest::Method::GET,
        &format!("{app_url}/deployments/unknown"),
        &oauth,
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Organisation-wide listings.
    let (_, organisation) = call(
        reqwest::Method::GET,
        &format!("{base}/v2/organisations/{orga}/deployments"),
        &oauth,
        None,
    )
    .await;
    assert_eq!(organisation[&app_id][0]["state"], "OK");
    let (_, instances) = call(
        reqwest::Method::GET,
        &format!("{base}/v2/organisations/{orga}/instances"),
        &oauth,
        None,
    )
    .await;
    assert_eq!(instances[0]["appId"], app_id.as_str());
    assert_eq!(instances[0]["state"], "UP");
    assert_eq!(instances[0]["commit"], context.head.as_str());

    // `--app <name>` resolves through the summary.
    let (_, summary) = call(
        reqwest::Method::GET,
        &format!("{base}/v2/summary"),
        &oauth,
        None,
    )
    .await;
    assert_eq!(
        summary["organisations"][0]["applications"][0]["name"],
        "cli-app"
    );

    // `clever delete`.
    let (status, _) = call(reqwest::Method::DELETE, &app_url, &oauth, None).await;
    assert_eq!(status, 200);
    let (status, _) = call(reqwest::Method::GET, &app_url, &oauth, None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bearer_only_refuses_the_others() {
    let sim = start_sim(|config| config.auth_kinds = AuthKinds::API_TOKEN_ONLY).await;
    let config = sim.sim.config().clone();
    let url = sim.api.apps_url();
    for (authorization, expect) in [
        (format!("Bearer {}", config.api_token), 200),
        (format!("token {}", config.token), 401),
        (oauth_header(&config), 401),
        ("Bearer wrong".to_owned(), 401),
    ] {
        let (status, _) = call(reqwest::Method::GET, &url, &authorization, None).await;
        assert_eq!(status, expect, "{authorization}");
    }
}
