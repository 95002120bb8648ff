//! Sizes for people to read: `512 B`, `4 KiB`, `1.5 MiB`.

/// `512 B`, `4 KiB`, `1.5 KiB`, `3.0 MiB`, `2.1 GiB`: whole KiB without a fraction, larger
/// units to one decimal.
pub fn human_size(n: u64) -> String {
    match n {
        n if n < 1 << 10 => format!("{n} B"),
        n if n < 1 << 20 && n % 1024 == 0 => format!("{} KiB", n >> 10),
        n if n < 1 << 20 => format!("{:.1} KiB", n as f64 / 1024.0),
        n if n < 1 << 30 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes() {
        assert_eq!(human_size(12), "12 B");
        assert_eq!(human_size(4096), "4 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 20), "3.0 MiB");
        assert_eq!(human_size(5 << 29), "2.5 GiB");
    }
}
