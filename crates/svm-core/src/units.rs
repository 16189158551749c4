//! The one grammar of sizes and durations, for flags, scenario files,
//! sweep files, profiles and configuration keys alike.
//!
//! Sizes: bytes as digits (`4096`, `1_048_576`) or hex (`0x4000`), or a
//! number and a binary unit (`512KiB`, `2 MiB`, `1GiB`; `K`, `M`, `G`, `T`
//! alone mean the same) or pages of 4 KiB (`3 pages`, `1 page`, `2p`).
//! Decimal units (`MB`) are refused rather than guessed at. Durations:
//! nanoseconds as digits, or a number and `ns`, `us`, `ms` or `s`.

use crate::addr::PAGE_SIZE;

/// What [`parse_size`] accepts, for error messages.
pub const SIZE_HELP: &str =
    "write bytes (4096, 0x4000), a binary unit (512KiB, 2MiB, 1GiB) or pages (3 pages)";

/// What [`parse_duration_ns`] accepts, for error messages.
pub const DURATION_HELP: &str = "write nanoseconds (1500) or a unit (50ns, 100us, 3ms, 2s)";

/// Splits `s` into its digits (underscores dropped) and the rest.
fn number(s: &str) -> (String, &str) {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    (num.chars().filter(|&c| c != '_').collect(), unit.trim())
}

/// Parses a size in bytes.
///
/// # Errors
/// A message that quotes the input and says what would be accepted.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let too_large = || format!("{s:?} is too large for a size");
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        let digits: String = hex.chars().filter(|&c| c != '_').collect();
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("{s:?} is not a size: {SIZE_HELP}"));
        }
        return u64::from_str_radix(&digits, 16).map_err(|_| too_large());
    }
    let (num, unit) = number(t);
    if num.is_empty() {
        return Err(format!("{s:?} is not a size: {SIZE_HELP}"));
    }
    let n: u64 = num.parse().map_err(|_| too_large())?;
    let mult = match unit {
        "" | "B" => 1,
        "K" | "KiB" | "k" | "kiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "page" | "pages" | "p" => PAGE_SIZE,
        u @ ("KB" | "kB" | "MB" | "GB" | "TB") => {
            return Err(format!(
                "{s:?}: decimal unit {u} is ambiguous; use {}iB",
                &u[..1].to_uppercase()
            ));
        }
        u => return Err(format!("{s:?}: unknown unit {u:?}; {SIZE_HELP}")),
    };
    n.checked_mul(mult).ok_or_else(too_large)
}

/// Parses a duration in nanoseconds.
///
/// # Errors
/// A message that quotes the input and says what would be accepted.
pub fn parse_duration_ns(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, unit) = number(t);
    if num.is_empty() {
        return Err(format!("{s:?} is not a duration: {DURATION_HELP}"));
    }
    let too_long = || format!("{s:?} is too long for a duration");
    let n: u64 = num.parse().map_err(|_| too_long())?;
    let mult = match unit {
        "" | "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        u => return Err(format!("{s:?}: unknown unit {u:?}; {DURATION_HELP}")),
    };
    n.checked_mul(mult).ok_or_else(too_long)
}

/// A duration written back exactly, the short way when a unit divides it
/// (`2ms`, `100us`, `1500ns`); [`parse_duration_ns`] reads it back.
pub fn show_duration(ns: u64) -> String {
    for (div, unit) in [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")] {
        if ns >= div && ns % div == 0 {
            return format!("{}{unit}", ns / div);
        }
    }
    format!("{ns}ns")
}

/// Deserializes a size written either way a file may write it: an
/// integer of bytes, or a string in the size grammar (`"64GiB"`), so that
/// profiles read sizes as flags and scenarios do
/// (`#[serde(deserialize_with = "svm_core::units::de_size")]`).
///
/// # Errors
/// A negative number, another type, or a string [`parse_size`] refuses.
pub fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct Size;
    impl serde::de::Visitor<'_> for Size {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a size: bytes as an integer, or a string such as \"64GiB\"")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("{v} is not a size: it is negative")))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
            parse_size(v).map_err(E::custom)
        }
    }
    d.deserialize_any(Size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        // input, bytes (None: refused)
        let table: &[(&str, Option<u64>)] = &[
            ("4096", Some(4096)),
            ("1_048_576", Some(1 << 20)),
            ("0x4000", Some(0x4000)),
            ("2MiB", Some(2 << 20)),
            ("2 MiB", Some(2 << 20)),
            ("512K", Some(512 << 10)),
            ("1GiB", Some(1 << 30)),
            ("3 pages", Some(3 * 4096)),
            ("1 page", Some(4096)),
            ("2p", Some(8192)),
            ("2MB", None),            // decimal: ambiguous
            ("lots", None),           // no number
            ("2XiB", None),           // unknown unit
            ("0x", None),             // no digits
            ("0xzz", None),           // not hex
            ("99999999999TiB", None), // overflows
            ("", None),
        ];
        for &(s, want) in table {
            assert_eq!(parse_size(s).ok(), want, "{s:?}");
        }
        assert!(parse_size("2MB").unwrap_err().contains("MiB"));
    }

    #[test]
    fn files_write_sizes_either_way() {
        #[derive(serde::Deserialize)]
        struct S {
            #[serde(deserialize_with = "de_size")]
            v: u64,
        }
        let v = |text: &str| serde_json::from_str::<S>(text).map(|s| s.v);
        assert_eq!(v(r#"{"v": 4096}"#).unwrap(), 4096);
        assert_eq!(v(r#"{"v": "64GiB"}"#).unwrap(), 64 << 30);
        assert!(v(r#"{"v": -1}"#).is_err());
        assert!(
            v(r#"{"v": "64GB"}"#)
                .unwrap_err()
                .to_string()
                .contains("GiB")
        );
        assert!(v(r#"{"v": true}"#).is_err());
    }

    #[test]
    fn durations() {
        let table: &[(&str, Option<u64>)] = &[
            ("1500", Some(1500)),
            ("50ns", Some(50)),
            ("100us", Some(100_000)),
            ("3ms", Some(3_000_000)),
            ("2 s", Some(2_000_000_000)),
            ("3 weeks", None),
            ("ms", None),
            ("99999999999999s", None),
        ];
        for &(s, want) in table {
            assert_eq!(parse_duration_ns(s).ok(), want, "{s:?}");
        }
        for ns in [0, 1, 999, 1000, 2_000_000, 1_500_000, 3_000_000_000] {
            assert_eq!(parse_duration_ns(&show_duration(ns)), Ok(ns));
        }
        assert_eq!(show_duration(2_000_000), "2ms");
    }
}
