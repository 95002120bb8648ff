//! Percentiles, medians and ratios of measured figures.

use std::time::Duration;

/// Nearest-rank percentile.
pub(crate) fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn sorted(v: &[Duration]) -> Vec<Duration> {
    let mut v = v.to_vec();
    v.sort();
    v
}

pub(crate) fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite()).then(|| a / b)
}

pub(crate) fn dur_ratio(a: Duration, b: Duration) -> Option<f64> {
    ratio(a.as_secs_f64(), b.as_secs_f64())
}

/// The median of `v` (the mean of the middle two for an even count); 0 when empty.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_take_the_middle() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        assert_eq!(pct(&v, 0.5), Duration::from_millis(500));
        assert_eq!(pct(&v, 0.99), Duration::from_millis(990));
        assert_eq!(pct(&v, 0.999), Duration::from_millis(999));
        assert_eq!(pct(&v[..1], 0.999), Duration::from_millis(1));
    }
}
