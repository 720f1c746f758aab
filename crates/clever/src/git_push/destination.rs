//! Where a push goes: the two endpoints of a repository URL (credentials
//! in it dropped), and whether credentials may go there at all.

use super::{PushError, SERVICE};

/// The two endpoints of a repository, and a credential-free name for logs.
pub(super) struct RepoUrls {
    pub(super) info_refs: url::Url,
    pub(super) receive_pack: url::Url,
    pub(super) display: String,
}

impl RepoUrls {
    pub(super) fn new(repo_url: &str) -> Result<RepoUrls, PushError> {
        let invalid = |detail: &str| PushError::InvalidRequest {
            detail: format!("repository URL {detail}"),
        };
        let mut url = url::Url::parse(repo_url)
            .map_err(|err| invalid(&format!("is not a valid URL ({err})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("must be http or https"));
        }
        // Credentials in the URL would end up in logs; ours go in a header.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_query(None);
        url.set_fragment(None);
        let base = url.as_str().trim_end_matches('/').to_owned();
        let info_refs = url::Url::parse(&format!("{base}/info/refs?service={SERVICE}"))
            .map_err(|err| invalid(&format!("is not a valid URL ({err})")))?;
        let receive_pack = url::Url::parse(&format!("{base}/{SERVICE}"))
            .map_err(|err| invalid(&format!("is not a valid URL ({err})")))?;
        Ok(RepoUrls {
            info_refs,
            receive_pack,
            display: base,
        })
    }
}

/// Credentials go over https, or over http to the one allowed host.
pub(super) fn check_destination(
    url: &url::Url,
    plain_http_host: Option<&str>,
) -> Result<(), PushError> {
    let host = url.host_str().unwrap_or("");
    let allowed = match url.scheme() {
        "https" => true,
        "http" => plain_http_host.is_some_and(|allowed| allowed.eq_ignore_ascii_case(host)),
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    Err(PushError::InsecureDestination {
        host: paas_core::sanitize(host, 255, &[]),
    })
}
