//! Sizes for people: the command line's parser (the one grammar of
//! `svm_core::units`, shared with scenario, sweep and profile files) and
//! the two ways sizes are written back.

/// Parses a size in bytes: the one grammar ([`svm_core::units`]).
///
/// # Errors
/// A message saying what is wrong and what would be accepted.
pub fn parse(s: &str) -> Result<u64, String> {
    svm_core::units::parse_size(s)
}

/// A size written back exactly, the short way when a unit divides it:
/// `2MiB`, `1GiB`, else bytes (`1572865`). `parse` reads it back.
pub fn show(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A size for reading, to three significant digits: `1.33GiB`,
/// `85.3MiB`, `512KiB`, `300B`.
pub fn human(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift {
            #[allow(clippy::cast_precision_loss)]
            let v = bytes as f64 / (1u64 << shift) as f64;
            return if v >= 100.0 {
                format!("{v:.0}{unit}")
            } else if v >= 10.0 {
                format!("{v:.1}{unit}")
            } else {
                format!("{v:.2}{unit}")
            };
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("2MiB"), Ok(2 << 20));
        assert_eq!(parse("2 MiB"), Ok(2 << 20));
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse("512K"), Ok(512 << 10));
        assert_eq!(parse("1_048_576"), Ok(1 << 20));
        assert!(parse("2MB").unwrap_err().contains("MiB"));
        assert!(parse("lots").is_err());
        assert!(parse("2XiB").is_err());
        assert!(parse("99999999999TiB").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn show_round_trips() {
        for b in [4096, 2 << 20, 1 << 30, 3 << 10, 12345] {
            assert_eq!(parse(&show(b)), Ok(b));
        }
        assert_eq!(show(3 << 19), "1536KiB");
        assert_eq!(show((3 << 19) + 1), "1572865");
        assert_eq!(parse(&show((3 << 19) + 1)), Ok((3 << 19) + 1));
        assert_eq!(human(1_398_112 << 10), "1.33GiB");
        assert_eq!(human(87_392 << 10), "85.3MiB");
        assert_eq!(human(512 << 10), "512KiB");
        assert_eq!(human(300), "300B");
        assert_eq!(human(0), "0B");
    }
}
