//! Sizes and durations as policies and job files write them: `"512M"`,
//! `"4G"`, `"90s"`, `"1h30m"`, or plain integers (bytes, seconds).
//!
//! Shared by the policy (`pinfold_sandbox::policy`) and the job file's
//! `limits:` ([`crate::job::JobLimits`]), which may only lower the policy's.

use serde::{Deserialize, Serialize};

/// A duration in whole seconds, written in TOML as an integer (seconds) or a
/// string such as `"90s"`, `"10m"`, `"1h30m"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(pub u64);

impl Seconds {
    /// Parses `"10m"`, `"1h 30m"`, `"45s"` or `"600"`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<u64>() {
            return Ok(Seconds(n));
        }
        let d = humantime::parse_duration(s).map_err(|e| {
            format!("bad duration {s:?} ({e}): use e.g. \"90s\", \"10m\" or \"1h30m\"")
        })?;
        if d.subsec_nanos() != 0 {
            return Err(format!(
                "bad duration {s:?}: use whole seconds (e.g. \"90s\")"
            ));
        }
        Ok(Seconds(d.as_secs()))
    }
}

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == 0 {
            return f.write_str("0");
        }
        let d = std::time::Duration::from_secs(self.0);
        write!(f, "{}", humantime::format_duration(d)).map(|_| ())
    }
}

impl Serialize for Seconds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        int_or_str(d, Seconds, Seconds::parse)
    }
}

/// A size in bytes, written in TOML as an integer or a string with a K/M/G/T suffix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"512M"`, `"4G"`, `"1024"`, `"2k"`. Suffixes are binary (K = 1024).
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        let (digits, mult) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            None => (s, 1u64),
            Some((i, _)) => {
                let suffix = s[i..].trim().to_ascii_uppercase();
                let mult = match suffix.trim_end_matches("IB").trim_end_matches('B') {
                    "" => 1,
                    "K" => 1 << 10,
                    "M" => 1 << 20,
                    "G" => 1 << 30,
                    "T" => 1 << 40,
                    _ => {
                        return Err(format!(
                            "bad size {s:?}: use a number with an optional K, M, G or T suffix"
                        ));
                    }
                };
                (&s[..i], mult)
            }
        };
        let n: u64 = digits.parse().map_err(|_| {
            format!("bad size {s:?}: use a number with an optional K, M, G or T suffix")
        })?;
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0;
        for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
            if n != 0 && n.is_multiple_of(1 << shift) {
                return write!(f, "{}{suffix}", n >> shift);
            }
        }
        write!(f, "{n}")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        int_or_str(d, ByteSize, ByteSize::parse)
    }
}

/// Reads a value written in TOML as a bare integer (`from_int`) or as a string (`parse`):
/// the one way [`Seconds`] and [`ByteSize`] are read.
fn int_or_str<'de, D, T>(
    d: D,
    from_int: fn(u64) -> T,
    parse: fn(&str) -> std::result::Result<T, String>,
) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Str(String),
    }
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(from_int(n)),
        Raw::Str(s) => parse(&s).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(Seconds::parse("90").unwrap(), Seconds(90));
        assert_eq!(Seconds::parse("1h30m").unwrap(), Seconds(5400));
        assert_eq!(Seconds(600).to_string(), "10m");
        assert!(Seconds::parse("1500ms").is_err());
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("4G").unwrap().0, 4 << 30);
        assert_eq!(ByteSize::parse("512MiB").unwrap().0, 512 << 20);
        assert_eq!(ByteSize::parse("1024").unwrap().0, 1024);
        assert!(ByteSize::parse("G").is_err());
        assert!(ByteSize::parse("99999999999999T").is_err());
        assert_eq!(ByteSize(64 << 20).to_string(), "64M");
    }
}
