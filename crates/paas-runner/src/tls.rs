//! Private certificate authorities: gitlab-runner's `tls-ca-file` for a
//! coordinator, and `cc_tls_ca_file` for Clever Cloud (its API and the
//! deployment repositories), each a PEM bundle added to the public roots
//! of that runner's HTTP clients.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use paas_config::RunnerConfig;

/// The coordinator and cloud clients of `config`: `shared` where no
/// private authority is configured, else a client that also trusts it.
pub fn clients_for(
    config: &RunnerConfig,
    shared: &reqwest::Client,
) -> anyhow::Result<(reqwest::Client, reqwest::Client)> {
    let coordinator = match &config.tls_ca_file {
        Some(path) => client_trusting(path)
            .with_context(|| format!("runner {:?}: key `tls-ca-file`", config.name))?,
        None => shared.clone(),
    };
    let cloud = match &config.cc.tls_ca_file {
        Some(path) => client_trusting(path)
            .with_context(|| format!("runner {:?}: key `cc_tls_ca_file`", config.name))?,
        None => shared.clone(),
    };
    Ok((coordinator, cloud))
}

/// A client like the shared one (no redirects, same timeouts) that also
/// trusts the certificate authorities of the PEM file at `path`.
pub fn client_trusting(path: &Path) -> anyhow::Result<reqwest::Client> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the certificate bundle {}", path.display()))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("{} is not a PEM certificate bundle", path.display()))?;
    if certificates.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", path.display());
    }
    let mut builder = paas_gitlab::http_client_builder().pool_idle_timeout(Duration::from_secs(90));
    for certificate in certificates {
        builder = builder.add_root_certificate(certificate);
    }
    Ok(builder.build()?)
}
