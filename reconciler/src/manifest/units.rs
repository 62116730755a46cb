//! Value types written as strings in manifests: durations (`"30s"`, `"1h30m"`) and
//! Kubernetes-style quantities (`"500m"`, `"64Gi"`, `"2"`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest duration a manifest (or a command-line flag) may give: 30 days. Longer
/// ones are refused where they are parsed, so adding one to a clock can never overflow
/// and no timeout, wait or delay outlives any sensible apply.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// A duration written the human way: `"30s"`, `"20m"`, `"1h30m"`, `"2d"`; at most
/// [`MAX_DURATION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn as_std(self) -> std::time::Duration {
        self.0
    }

    pub fn from_secs(secs: u64) -> Duration {
        Duration(std::time::Duration::from_secs(secs))
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let trimmed = s.trim();
        if trimmed.is_empty() || trimmed.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "invalid duration `{s}`: give a number and a unit, like `30s`, `20m` or `1h30m`"
            ));
        }
        let duration = humantime::parse_duration(trimmed).map_err(|e| {
            format!("invalid duration `{s}` ({e}): use a number and a unit, like `30s`, `20m` or `1h30m`")
        })?;
        if duration > MAX_DURATION {
            return Err(format!(
                "invalid duration `{s}` (over the limit of 30 days): durations are at most `30d`"
            ));
        }
        Ok(Duration(duration))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A Kubernetes resource quantity: a decimal number with an optional suffix
/// (`m` for thousandths, `k M G T P E` for powers of 1000, `Ki Mi Gi Ti Pi Ei` for powers
/// of 1024). Kept as the text the user wrote plus its exact value in thousandths.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quantity {
    text: String,
    millis: u128,
}

impl Quantity {
    /// The value in thousandths of a unit (`"500m"` → 500, `"2"` → 2000).
    pub fn millis(&self) -> u128 {
        self.millis
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Quantity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid quantity `{s}`: expected a number with an optional suffix, like `500m`, `4`, `64Gi` or `1.5G`"
            )
        };
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(split);
        let multiplier_millis: u128 = match suffix {
            "" => 1000,
            "m" => 1,
            "k" => 1000u128.pow(2),
            "M" => 1000u128.pow(3),
            "G" => 1000u128.pow(4),
            "T" => 1000u128.pow(5),
            "P" => 1000u128.pow(6),
            "E" => 1000u128.pow(7),
            "Ki" => 1000 * 1024u128,
            "Mi" => 1000 * 1024u128.pow(2),
            "Gi" => 1000 * 1024u128.pow(3),
            "Ti" => 1000 * 1024u128.pow(4),
            "Pi" => 1000 * 1024u128.pow(5),
            "Ei" => 1000 * 1024u128.pow(6),
            _ => return Err(bad()),
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && frac.is_empty()
            || frac.contains('.')
            || whole.len() > 20
            || frac.len() > 9
        {
            return Err(bad());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let frac_value: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| bad())?
        };
        let scale = 10u128.pow(frac.len() as u32);
        let millis = whole
            .checked_mul(multiplier_millis)
            .and_then(|w| w.checked_add(frac_value * multiplier_millis / scale))
            .ok_or_else(bad)?;
        Ok(Quantity {
            text: s.to_string(),
            millis,
        })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as \"500m\", 4 or \"64Gi\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                if v < 0 {
                    return Err(E::custom(format!(
                        "invalid quantity {v}: must not be negative"
                    )));
                }
                v.to_string().parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                v.to_string().parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!("30s".parse::<Duration>().unwrap(), Duration::from_secs(30));
        assert_eq!(
            "1h30m".parse::<Duration>().unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!("20m".parse::<Duration>().unwrap().to_string(), "20m");
        assert!("30".parse::<Duration>().is_err());
        assert_eq!("30d".parse::<Duration>().unwrap().as_std(), MAX_DURATION);
        for over in [
            "31d",
            "30d 1s",
            "18446744073709551615s",
            "99999999999999999999999d",
        ] {
            let err = over.parse::<Duration>().unwrap_err();
            assert!(
                err.starts_with(&format!("invalid duration `{over}`")),
                "{err}"
            );
        }
        assert!("soon".parse::<Duration>().is_err());
    }

    #[test]
    fn parses_quantities() {
        let q = |s: &str| s.parse::<Quantity>().map(|q| q.millis());
        assert_eq!(q("500m"), Ok(500));
        assert_eq!(q("2"), Ok(2000));
        assert_eq!(q("1.5"), Ok(1500));
        assert_eq!(q("64Gi"), Ok(64 * 1024 * 1024 * 1024 * 1000));
        assert_eq!(q("1k"), Ok(1_000_000));
        assert!(q("64GB").is_err());
        assert!(q("").is_err());
        assert!(q(".").is_err());
        assert!(q("1.2.3").is_err());
        assert!(q("99999999999999999999999Ei").is_err());
    }
}
