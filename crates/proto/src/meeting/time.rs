//! Times in bodies: when a pre-signed S3 URL expires, and how a listener prints it.

use chrono::{DateTime, NaiveDateTime};

/// When a pre-signed S3 URL expires, in Unix seconds: `X-Amz-Date` + `X-Amz-Expires`.
/// `None` when the URL lacks either.
pub fn presigned_url_expiry(url: &str) -> Option<i64> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    let mut date = None;
    let mut expires = None;
    for pair in query.split('&') {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        if k.eq_ignore_ascii_case("X-Amz-Date") {
            date = Some(v);
        } else if k.eq_ignore_ascii_case("X-Amz-Expires") {
            expires = v.parse::<i64>().ok();
        }
    }
    parse_amz_date(date?)?.checked_add(expires?)
}

/// `20250611T100003Z` → Unix seconds.
fn parse_amz_date(s: &str) -> Option<i64> {
    let t = NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ").ok()?;
    Some(t.and_utc().timestamp())
}

/// `HH:MM UTC` of Unix seconds; `None` past the calendar's range.
pub(super) fn hh_mm_utc(secs: i64) -> Option<String> {
    Some(
        DateTime::from_timestamp(secs, 0)?
            .format("%H:%M UTC")
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presigned_expiry() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20250611T100003Z"), Some(1_749_636_003));
        assert_eq!(parse_amz_date("2025-06-11"), None);
        assert_eq!(parse_amz_date("20251311T100003Z"), None);
        assert_eq!(
            presigned_url_expiry("https://h/p?X-Amz-Expires=60&X-Amz-Date=20250611T100003Z"),
            Some(1_749_636_063)
        );
        assert_eq!(presigned_url_expiry("https://h/p"), None);
        let huge = format!(
            "https://h/p?X-Amz-Date=20250611T100003Z&X-Amz-Expires={}",
            i64::MAX
        );
        assert_eq!(presigned_url_expiry(&huge), None);
        assert_eq!(presigned_url_expiry("https://h/p?X-Amz-Expires=60"), None);
        assert_eq!(
            hh_mm_utc(1_749_636_063 + 7200).as_deref(),
            Some("12:01 UTC")
        );
        assert_eq!(hh_mm_utc(i64::MAX), None);
    }
}
