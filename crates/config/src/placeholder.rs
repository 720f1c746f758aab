//! The token written into the inner runner's `runner.toml`: a placeholder
//! that keeps what gitlab-runner derives from the runner token, never the
//! token itself.
//!
//! Evidence (`docs/protocol-notes.md` §2): for a job already fetched,
//! gitlab-runner authenticates every call (`UpdateJob`, `PatchTrace`,
//! artifacts) with the **job** token; the runner token is only a map key
//! of its HTTP clients and the source of the *short token*
//! (`helpers.ShortenToken`), shown to jobs as `CI_RUNNER_SHORT_TOKEN`, in
//! the log header, in container and network names, in build directories
//! and in S3 cache paths when `[runners.cache] Shared = false`. So the
//! placeholder keeps the token's prefix and the characters the short
//! token is cut from, under both rules gitlab-runner has had (before and
//! since 18.2: the prefix it strips, then 9 characters; formerly 8
//! characters of unprefixed tokens), and replaces the rest.
//!
//! UNVERIFIED (notes §2.3): Heptapod Runner's `exec-fetched-job` itself
//! could not be read; that it makes no runner-token call at start-up rests
//! on the upstream `network/` code it is built on.

/// What replaces the part of the token the short token does not use. Not a
/// valid token (GitLab's tokens have no `.`), so a leaked `runner.toml`
/// can be recognised and opens nothing.
const FILLER: &str = ".placeholder.not.a.token";

/// Characters of the short token after the prefix gitlab-runner strips.
const SHORT_TOKEN_CHARS: usize = 9;

/// The placeholder of `token` for the inner runner's configuration: the
/// characters gitlab-runner derives the short token from, then
/// [`FILLER`]. The whole token is never kept: a token so short that its
/// short form is all of it keeps one character less.
pub fn placeholder_token(token: &str) -> String {
    let kept = (stripped_prefix_len(token) + SHORT_TOKEN_CHARS)
        .min(token.chars().count().saturating_sub(1));
    let mut placeholder: String = token.chars().take(kept).collect();
    placeholder.push_str(FILLER);
    placeholder
}

/// Length of the prefix gitlab-runner's `ShortenToken` strips (since
/// 18.2): `glrt-` with an optional partition `t1_`/`t2_`/`t3_`, a bare
/// partition prefix, `glrtr-`, `glcbt-`, or `GR` and 7 hex digits (notes
/// §2.2). Each older rule reads no further than this plus 9 characters.
fn stripped_prefix_len(token: &str) -> usize {
    let partition = |rest: &str| {
        let bytes = rest.as_bytes();
        bytes.len() >= 3 && bytes[0] == b't' && matches!(bytes[1], b'1'..=b'3') && bytes[2] == b'_'
    };
    if let Some(rest) = token.strip_prefix("glrt-") {
        return 5 + if partition(rest) { 3 } else { 0 };
    }
    if token.starts_with("glrtr-") || token.starts_with("glcbt-") {
        return 6;
    }
    if partition(token) {
        return 3;
    }
    let bytes = token.as_bytes();
    if bytes.len() >= 9 && bytes.starts_with(b"GR") && bytes[2..9].iter().all(u8::is_ascii_hexdigit)
    {
        return 9;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(token: &str, kept: &str) {
        let placeholder = placeholder_token(token);
        assert_eq!(placeholder, format!("{kept}{FILLER}"), "{token}");
        assert!(token.is_empty() || !placeholder.contains(token), "{token}");
    }

    #[test]
    fn the_short_token_survives_and_nothing_else() {
        // Lengths of notes §2.3: 14, 17, 15, 15, 12, 18 and 9.
        check("glrt-abcdefghijklmnopqrstu", "glrt-abcdefghi");
        check("glrt-t1_abcdefghijklmnopqrst", "glrt-t1_abcdefghi");
        check("glrtr-abcdefghijklmnopqrs", "glrtr-abcdefghi");
        check("glcbt-abcdefghijklmnopqrs", "glcbt-abcdefghi");
        check("t2_abcdefghijklmnopqrs", "t2_abcdefghi");
        check("GR1348941abcdefghijklmnop", "GR1348941abcdefghi");
        check("D3adNQYu8OCjkYDbwDaG", "D3adNQYu8");
        // Not a partition, not a rotation prefix: plain `glrt-` / legacy.
        check("glrt-t4_abcdefghijklm", "glrt-t4_abcdef");
        check("GR13xyzabcdefghijklm", "GR13xyzab");
    }

    #[test]
    fn a_short_token_is_never_kept_whole() {
        check("glrt-abc", "glrt-ab");
        check("abcdefghi", "abcdefgh");
        check("", "");
    }
}
