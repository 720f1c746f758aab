//! Parsing of the `Range` response header of trace appends (`0-<length>`).

/// The end of a `start-end` range as the coordinator sends it in the
/// `Range` header of `PATCH /jobs/:id/trace` answers (202 and 416).
///
/// In those answers the end is the total log length, i.e. the next offset to
/// write at (exclusive), unlike the inclusive end of the request's
/// `Content-Range`. Returns `None` unless both bounds are decimal numbers and
/// `start <= end`.
pub fn parse_range_end(header: &str) -> Option<u64> {
    let (start, end) = header.trim().split_once('-')?;
    let start = parse_decimal(start.trim())?;
    let end = parse_decimal(end.trim())?;
    (start <= end).then_some(end)
}

/// `u64::from_str` accepts a leading `+`; a range bound must be plain digits.
fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_range_end;

    fn check(header: &str, expected: Option<u64>) {
        assert_eq!(parse_range_end(header), expected, "header {header:?}");
    }

    #[test]
    fn parses_the_end_of_well_formed_ranges() {
        check("0-123", Some(123));
        check("0-0", Some(0));
        check(" 0-42 ", Some(42));
        check("10-20", Some(20));
        check("0-18446744073709551615", Some(u64::MAX));
    }

    #[test]
    fn rejects_malformed_ranges() {
        check("", None);
        check("123", None);
        check("0-", None);
        check("-5", None);
        check("0-abc", None);
        check("0-+5", None);
        check("0--5", None);
        check("5-3", None);
        check("bytes 0-12", None);
        check("0-18446744073709551616", None);
    }
}
