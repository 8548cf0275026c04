//! Typed setting values: durations, sizes and cron schedules, parsed from manifest strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A length of time written as `"250ms"`, `"30s"`, `"5m"`, `"2h"` or `"7d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    /// `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self(std::time::Duration::from_millis(millis))
    }

    /// The standard library duration.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().chars().all(|c| c.is_ascii_digit()) && !s.trim().is_empty() {
            return Err(format!(
                "`{s}` has no unit; write `{s}s` for seconds or `{s}ms` for milliseconds"
            ));
        }
        humantime::parse_duration(s).map(Self).map_err(|e| match e {
            humantime::DurationError::UnknownUnit { unit, .. } => {
                format!("`{s}` has an unknown unit `{unit}`; use ms, s, m, h or d")
            }
            humantime::DurationError::NumberOverflow => format!("`{s}` is too long a duration"),
            _ => format!(
                "`{s}` is not a duration; write e.g. \"250ms\", \"30s\", \"5m\", \"2h\" or \"7d\""
            ),
        })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

/// An amount of bytes written as `"512B"`, `"128KiB"`, `"1MiB"` or `"1MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` kibibytes.
    pub const fn kib(n: u64) -> Self {
        Self(n * 1024)
    }

    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let has_unit = s.trim().ends_with(|c: char| c.is_ascii_alphabetic());
        if !has_unit {
            return Err(format!(
                "`{s}` has no unit; write \"{s}B\" for bytes, or use KiB or MiB"
            ));
        }
        bytesize::ByteSize::from_str(s)
            .map(|size| Self(size.as_u64()))
            .map_err(|_| {
                format!("`{s}` is not a size; write e.g. \"512B\", \"128KiB\" or \"1MiB\"")
            })
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (unit, name) in UNITS {
            if self.0 >= unit && self.0.is_multiple_of(unit) {
                return write!(f, "{}{name}", self.0 / unit);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// A five-field cron schedule in UTC: minute, hour, day of month, month, day of week. Checked
/// and parsed once, here: the runtime computes ticks from it and never parses it again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CronSchedule {
    expression: String,
    // Boxed: a parsed schedule is large, and the model's enums hold it inline.
    cron: std::sync::Arc<croner::Cron>,
}

/// Field names and ranges of a five-field cron expression, in order.
const CRON_FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT"),
];

/// Why a cron expression was refused: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidCron {
    /// The zero-based field at fault, if one field is.
    pub field: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl CronSchedule {
    /// Validates a five-field cron expression (or an alias such as `@daily`).
    pub fn parse(expr: &str) -> Result<Self, InvalidCron> {
        let whole = |message: String| InvalidCron {
            field: None,
            message,
        };
        let trimmed = expr.trim();
        if trimmed.starts_with('@') {
            return parse_with_croner(trimmed)
                .map(|cron| Self {
                    expression: trimmed.to_owned(),
                    cron: cron.into(),
                })
                .map_err(|_| {
                    whole(format!(
                        "`{trimmed}` is not a cron alias; use @yearly, @monthly, @weekly, @daily or @hourly"
                    ))
                });
        }
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        if fields.len() != 5 {
            let extra = if fields.len() == 6 {
                "; seconds are not supported"
            } else {
                ""
            };
            return Err(whole(format!(
                "a cron expression has 5 fields (minute hour day-of-month month day-of-week), found {}{extra}",
                fields.len()
            )));
        }
        // Check each field alone, the others left as `*`, so the message can name the culprit.
        for (index, field) in fields.iter().enumerate() {
            let mut probe = ["*"; 5];
            probe[index] = field;
            if parse_with_croner(&probe.join(" ")).is_err() {
                let (name, range) = CRON_FIELDS[index];
                return Err(InvalidCron {
                    field: Some(index),
                    message: format!(
                        "the {name} field `{field}` is invalid: {name} takes {range}, with `*`, `,`, `-` and `/`"
                    ),
                });
            }
        }
        let expression = fields.join(" ");
        let cron = parse_with_croner(&expression)
            .map_err(|e| whole(format!("`{trimmed}` is not a valid schedule: {e}")))?;
        Ok(Self {
            expression,
            cron: cron.into(),
        })
    }

    /// The expression, normalized to single spaces.
    pub fn as_str(&self) -> &str {
        &self.expression
    }

    /// The parsed schedule, to compute ticks from.
    pub fn cron(&self) -> &croner::Cron {
        &self.cron
    }
}

fn parse_with_croner(expr: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .build()
        .parse(expr)
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}

macro_rules! string_serde {
    ($($ty:ty => $parse:expr),* $(,)?) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                $parse(&s).map_err(serde::de::Error::custom)
            }
        }
    )*};
}

string_serde! {
    Duration => |s: &str| s.parse::<Duration>(),
    ByteSize => |s: &str| s.parse::<ByteSize>(),
    CronSchedule => |s: &str| CronSchedule::parse(s).map_err(|e| e.message),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_from_common_units() {
        assert_eq!("250ms".parse(), Ok(Duration::from_millis(250)));
        assert_eq!("30s".parse(), Ok(Duration::from_secs(30)));
        assert_eq!("5m".parse(), Ok(Duration::from_secs(300)));
        assert_eq!("7d".parse(), Ok(Duration::from_secs(7 * 86_400)));
        assert!("30".parse::<Duration>().unwrap_err().contains("no unit"));
        assert!("soon".parse::<Duration>().is_err());
    }

    #[test]
    fn durations_round_trip_through_their_display() {
        for d in [
            Duration::from_millis(250),
            Duration::from_secs(300),
            Duration::from_secs(7 * 86_400),
        ] {
            assert_eq!(d.to_string().parse(), Ok(d));
        }
    }

    #[test]
    fn sizes_parse_binary_and_decimal_units() {
        assert_eq!("128KiB".parse(), Ok(ByteSize::kib(128)));
        assert_eq!("1MiB".parse(), Ok(ByteSize::mib(1)));
        assert_eq!("1MB".parse(), Ok(ByteSize(1_000_000)));
        assert_eq!("512B".parse(), Ok(ByteSize(512)));
        assert!("1024".parse::<ByteSize>().unwrap_err().contains("no unit"));
        assert!("lots".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize::kib(128).to_string(), "128KiB");
        assert_eq!(ByteSize(1_000_000).to_string(), "1000000B");
    }

    #[test]
    fn cron_errors_name_the_field_at_fault() {
        assert!(CronSchedule::parse("0 2 * * *").is_ok());
        assert!(CronSchedule::parse("*/15 9-17 * * MON-FRI").is_ok());
        assert!(CronSchedule::parse("@daily").is_ok());
        let err = CronSchedule::parse("0 25 * * *").unwrap_err();
        assert_eq!(err.field, Some(1));
        assert!(err.message.contains("hour field `25`"), "{}", err.message);
        let err = CronSchedule::parse("0 0 * 13 *").unwrap_err();
        assert_eq!(err.field, Some(3));
        let err = CronSchedule::parse("0 0 * *").unwrap_err();
        assert!(err.message.contains("found 4"), "{}", err.message);
        let err = CronSchedule::parse("0 0 0 * * *").unwrap_err();
        assert!(err.message.contains("seconds"), "{}", err.message);
    }
}
