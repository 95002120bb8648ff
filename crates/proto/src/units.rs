//! Human units on the command line: durations (`500ms`, `30s`, `5m`, `7d`) and sizes (`16MiB`).

use std::time::Duration;

/// Longest duration accepted anywhere (100 years): past it, deadlines overflow the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses `500ms`, `30s`, `5m`, `2h`, `7d` (or a combination such as `1h30m`); at most
/// [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration: use e.g. 500ms, 30s, 5m, 7d".into());
    }
    let too_long = || format!("duration {s:?} is too long: at most 36500d (100 years)");
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration {s:?}: expected a number, e.g. 30s"
            ));
        }
        let n: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "ms" => 0.001,
            "s" | "" if rest.is_empty() => 1.0,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => {
                return Err(format!(
                    "invalid duration unit {unit:?} in {s:?}: use ms, s, m, h or d"
                ))
            }
        };
        let part = Duration::try_from_secs_f64(n * secs).map_err(|_| too_long())?;
        total = total.checked_add(part).ok_or_else(too_long)?;
        if total > MAX_DURATION {
            return Err(too_long());
        }
    }
    Ok(total)
}

/// Like [`parse_duration`], for settings where zero makes no sense (a timeout, an interval).
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} is zero: use a duration above 0, e.g. 30s"));
    }
    Ok(d)
}

/// Parses `16MiB`, `512KiB`, `1GiB`, `10MB`, `1024` (bytes); rejects sizes past `u64`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let n: f64 = s[..digits]
        .parse()
        .map_err(|_| format!("invalid size {s:?}: use e.g. 16MiB"))?;
    let mult: u64 = match s[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        u => {
            return Err(format!(
                "invalid size unit {u:?} in {s:?}: use B, KiB, MiB, GiB or TiB"
            ))
        }
    };
    let bytes = n * mult as f64;
    // `as u64` would saturate silently; 2^64 is exactly representable, so compare with it.
    if !bytes.is_finite() || bytes >= 18_446_744_073_709_551_616.0 {
        return Err(format!("size {s:?} is too large"));
    }
    Ok(bytes as u64)
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
        assert!(parse_duration("5 parsecs").is_err());
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
