//! Text from outside (job variables, coordinator and Clever Cloud messages) made safe to show: cut, without control characters, scrubbed of secrets.
//!
//! Every text that paas-runner did not write itself and that may reach an
//! operator's log, `paas-runner state`, a metric label or a job log goes
//! through [`sanitize`] first, and is then logged as a tracing field (never
//! spliced into a message string). Three dangers are removed:
//!
//! - **forged lines and terminal codes**: line breaks, `ESC` (hence ANSI
//!   colour and cursor codes), every other C0 and C1 control, DEL, and the
//!   Unicode bidirectional overrides and isolates (which reorder what a
//!   reader sees) are written as visible escapes such as `\n` or
//!   `\u{1b}`, so the text stays readable for debugging but can neither
//!   start a line nor drive a terminal;
//! - **secrets**: each secret the caller has in scope (runner tokens, the
//!   job token, `cc_token`, the watch token) is replaced by `[REDACTED]`;
//! - **size**: the result holds at most `max_chars` characters of the
//!   original, cut on a character boundary and marked with `…[cut]`.

use crate::secret::Secret;

/// A sane length for a quoted outside message (an error message, a server
/// explanation).
pub const MAX_MESSAGE_CHARS: usize = 512;

/// A sane length for a short outside value, such as a job variable that
/// names a flavor.
pub const MAX_VALUE_CHARS: usize = 64;

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// What ends a text that was cut.
pub const CUT_MARKER: &str = "…[cut]";

/// Secrets shorter than this are not scrubbed: replacing every occurrence
/// of a two-letter "secret" would garble the text and protect nothing.
/// Real tokens are far longer.
pub const MIN_SCRUBBED_SECRET_CHARS: usize = 6;

/// `text` cut to at most `max_chars` characters of the original, with
/// every control or bidi-override character written as a visible escape and
/// every secret of `secrets` replaced by [`REDACTED`].
///
/// Secrets are scrubbed before the cut, so a secret that starts within the
/// kept part is removed whole, never left half-visible.
pub fn sanitize(text: &str, max_chars: usize, secrets: &[&Secret]) -> String {
    // Look only at a bounded prefix: what lies beyond the cut plus the
    // longest secret cannot reach the result.
    let longest_secret = secrets
        .iter()
        .map(|secret| secret.expose().chars().count())
        .max()
        .unwrap_or(0);
    let window = max_chars.saturating_add(longest_secret);
    let (prefix, longer_than_window) = char_prefix(text, window);
    let scrubbed = scrub(prefix, secrets);
    let mut out =
        String::with_capacity(scrubbed.len().min(max_chars.saturating_mul(4)) + CUT_MARKER.len());
    let mut kept = 0usize;
    let mut cut = longer_than_window;
    let mut rest = scrubbed.as_str();
    while let Some(ch) = rest.chars().next() {
        if kept >= max_chars {
            cut = true;
            break;
        }
        // A redaction marker counts as one character of the original: it
        // is never cut in the middle.
        if rest.starts_with(REDACTED) {
            out.push_str(REDACTED);
            rest = &rest[REDACTED.len()..];
            kept += 1;
            continue;
        }
        push_visible(&mut out, ch);
        rest = &rest[ch.len_utf8()..];
        kept += 1;
    }
    if cut {
        out.push_str(CUT_MARKER);
    }
    out
}

/// `text` with every secret of `secrets` (of at least
/// [`MIN_SCRUBBED_SECRET_CHARS`]) replaced by [`REDACTED`], and nothing
/// else changed: for text that is already safe but may quote a secret.
pub fn scrub(text: &str, secrets: &[&Secret]) -> String {
    let mut scrubbed = text.to_owned();
    for secret in secrets {
        let value = secret.expose();
        if value.chars().count() >= MIN_SCRUBBED_SECRET_CHARS {
            scrubbed = scrubbed.replace(value, REDACTED);
        }
    }
    scrubbed
}

/// [`sanitize`] of lossily decoded bytes (an HTTP body, a git message).
pub fn sanitize_bytes(bytes: &[u8], max_chars: usize, secrets: &[&Secret]) -> String {
    // Four bytes per character at most: no need to decode more.
    let longest_secret = secrets
        .iter()
        .map(|secret| secret.expose().len())
        .max()
        .unwrap_or(0);
    let limit = max_chars
        .saturating_add(longest_secret)
        .saturating_mul(4)
        .saturating_add(4);
    let longer = bytes.len() > limit;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(limit)]);
    let mut result = sanitize(&text, max_chars, secrets);
    if longer && !result.ends_with(CUT_MARKER) {
        result.push_str(CUT_MARKER);
    }
    result
}

/// Whether `ch` must not be shown as is: C0 and C1 controls, DEL, and the
/// Unicode characters that change the display order or hide text (bidi
/// embeddings, overrides and isolates, the line and paragraph separators,
/// zero-width joiners and marks, the byte order mark).
pub fn is_unsafe_char(ch: char) -> bool {
    ch.is_control()
        || matches!(
            ch,
            '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
                | '\u{061c}'
        )
}

/// Whether `text` contains a character [`sanitize`] would escape.
pub fn has_unsafe_chars(text: &str) -> bool {
    text.chars().any(is_unsafe_char)
}

fn push_visible(out: &mut String, ch: char) {
    if !is_unsafe_char(ch) {
        out.push(ch);
        return;
    }
    match ch {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        other => {
            use std::fmt::Write as _;
            let _ = write!(out, "\\u{{{:x}}}", other as u32);
        }
    }
}

/// The first `max_chars` characters of `text`, and whether there were more.
fn char_prefix(text: &str, max_chars: usize) -> (&str, bool) {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => (&text[..end], true),
        None => (text, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, max_chars: usize, secrets: &[&str], expected: &str) {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
        let refs: Vec<&Secret> = secrets.iter().collect();
        assert_eq!(sanitize(text, max_chars, &refs), expected, "{text:?}");
    }

    #[test]
    fn plain_text_is_unchanged() {
        check(
            "The specified instance does not exist",
            100,
            &[],
            "The specified instance does not exist",
        );
        check("", 10, &[], "");
        check("héhé ✓ 日本", 100, &[], "héhé ✓ 日本");
    }

    #[test]
    fn control_characters_become_visible_escapes() {
        check(
            "M\n2026-01-01 INFO forged",
            100,
            &[],
            "M\\n2026-01-01 INFO forged",
        );
        check("\x1b[31mred\x1b[0m", 100, &[], "\\u{1b}[31mred\\u{1b}[0m");
        check("a\rb\tc\0d\x7f", 100, &[], "a\\rb\\tc\\u{0}d\\u{7f}");
        check("C1\u{9b}31m", 100, &[], "C1\\u{9b}31m");
        check("abc\u{202e}fed", 100, &[], "abc\\u{202e}fed");
        check("x\u{2066}y\u{2069}", 100, &[], "x\\u{2066}y\\u{2069}");
        check("line\u{2028}sep", 100, &[], "line\\u{2028}sep");
        let out = sanitize("\n\x1b\u{85}\u{202d}", 100, &[]);
        assert!(!has_unsafe_chars(&out), "{out:?}");
    }

    #[test]
    fn secrets_are_scrubbed() {
        check(
            "token cc-s3cret-token refused",
            100,
            &["cc-s3cret-token"],
            "token [REDACTED] refused",
        );
        check(
            "a glrt-aaaaaa b glcbt-bbbbbb",
            100,
            &["glrt-aaaaaa", "glcbt-bbbbbb"],
            "a [REDACTED] b [REDACTED]",
        );
        // Too short to be a real token: left alone rather than garbling.
        check("a t b", 100, &["t", ""], "a t b");
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary_with_a_marker() {
        check("abcdef", 3, &[], "abc…[cut]");
        check("ééééé", 2, &[], "éé…[cut]");
        check("abc", 3, &[], "abc");
        // A secret straddling the cut is removed whole.
        check(
            "ab secretvalue tail",
            5,
            &["secretvalue"],
            "ab [REDACTED] …[cut]",
        );
        // A secret beyond the cut does not matter, a secret just at it neither.
        check("abcde secretvalue", 5, &["secretvalue"], "abcde…[cut]");
        let huge = "x".repeat(10_000_000);
        let out = sanitize(&huge, MAX_MESSAGE_CHARS, &[]);
        assert_eq!(
            out.chars().count(),
            MAX_MESSAGE_CHARS + CUT_MARKER.chars().count()
        );
    }

    #[test]
    fn bytes_are_decoded_lossily_and_bounded() {
        let token = Secret::new("cc-s3cret-token");
        assert_eq!(
            sanitize_bytes(b"bad \xff cc-s3cret-token\n", 100, &[&token]),
            "bad \u{fffd} [REDACTED]\\n"
        );
        let huge = vec![b'y'; 50_000_000];
        let out = sanitize_bytes(&huge, 10, &[]);
        assert_eq!(out, format!("{}{CUT_MARKER}", "y".repeat(10)));
    }
}
