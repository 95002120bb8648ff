//! Human units on the command line: durations (`500ms`, `30s`, `5m`, `7d`) and sizes (`16MiB`).

use std::time::Duration;

/// Longest duration accepted anywhere (100 years): past it, deadlines overflow the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses `500ms`, `30s`, `5m`, `2h`, `7d`, `1h30m` or `1h 30m` ([`humantime`]'s syntax); a bare
/// number means seconds. At most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration: use e.g. 500ms, 30s, 5m, 7d".into());
    }
    let too_long = || format!("duration {s:?} is too long: at most 36500d (100 years)");
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => too_long(),
            _ => format!("invalid duration {s:?}: use e.g. 500ms, 30s, 5m, 7d"),
        })?,
    };
    if d > MAX_DURATION {
        return Err(too_long());
    }
    Ok(d)
}

/// Like [`parse_duration`], for settings where zero makes no sense (a timeout, an interval).
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} is zero: use a duration above 0, e.g. 30s"));
    }
    Ok(d)
}

/// Parses `16MiB`, `512KiB`, `1GiB`, `10MB`, `1024` (bytes) with [`bytesize`]; rejects sizes
/// past `u64`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let n = s
        .parse::<bytesize::ByteSize>()
        .map_err(|_| format!("invalid size {s:?}: use e.g. 16MiB, 512KiB, 1GiB or 1024 (bytes)"))?
        .as_u64();
    // bytesize saturates on overflow: `u64::MAX` is how a size past `u64` comes back.
    if n == u64::MAX {
        return Err(format!("size {s:?} is too large"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("5 parsecs").unwrap_err(),
            r#"invalid duration "5 parsecs": use e.g. 500ms, 30s, 5m, 7d"#
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999d")
            .unwrap_err()
            .contains("too long"));
        assert!(parse_duration("150000000000000d150000000000000d")
            .unwrap_err()
            .contains("too long"));
        assert!(parse_duration("36501d").is_err());
        assert_eq!(parse_duration("36500d").unwrap(), MAX_DURATION);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(parse_positive_duration("0s").unwrap_err().contains("zero"));
        assert!(parse_positive_duration("0ms").is_err());
        assert_eq!(
            parse_positive_duration("1ms").unwrap(),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("1KiB").unwrap(), 1024);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("1234").unwrap(), 1234);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 furlongs").is_err());
        assert!(parse_size("99999999999999999999GiB")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("18446744073709551616").is_err());
        assert_eq!(parse_size("1TiB").unwrap(), 1 << 40);
    }
}
