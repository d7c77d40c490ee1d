//! Time in run records: [`Timestamp`] (UTC, millisecond precision, RFC 3339 on the wire) and
//! [`Millis`] (a duration), plus the formatting the reports share.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A duration in milliseconds.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    /// Whole milliseconds.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The duration in (fractional) minutes.
    pub fn minutes(self) -> f64 {
        self.0 as f64 / 60_000.0
    }
}

impl fmt::Display for Millis {
    /// `400 ms`, `1.80 s`, `6 min 00.8 s`, `2 h 05 min`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms < 1_000 {
            write!(f, "{ms} ms")
        } else if ms < 60_000 {
            write!(f, "{:.2} s", ms as f64 / 1000.0)
        } else if ms < 3_600_000 {
            let min = ms / 60_000;
            let rest = (ms % 60_000) as f64 / 1000.0;
            write!(f, "{min} min {rest:04.1} s")
        } else {
            let h = ms / 3_600_000;
            let min = (ms % 3_600_000) / 60_000;
            write!(f, "{h} h {min:02} min")
        }
    }
}

/// A point in time, UTC, with millisecond precision. On the wire it is an RFC 3339 string with
/// exactly three fractional digits and `Z`: `2026-11-20T09:14:03.250Z` (years 0000–9999).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// A string that is not a timestamp of the form `YYYY-MM-DDTHH:MM:SS.mmmZ`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a UTC timestamp of the form 2026-11-20T09:14:03.250Z ({why})")]
pub struct TimestampError {
    /// The rejected text.
    pub input: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl Timestamp {
    /// From milliseconds since the Unix epoch.
    pub fn from_unix_ms(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_ms(self) -> i64 {
        self.0
    }

    /// Parse `YYYY-MM-DDTHH:MM:SS.mmmZ` (strict: UTC, three fractional digits).
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        let err = |why| TimestampError {
            input: s.chars().take(64).collect(),
            why,
        };
        let b = s.as_bytes();
        if b.len() != 24 {
            return Err(err("wrong length"));
        }
        let seps = [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
        ];
        for (i, c) in seps {
            if b[i] != c {
                return Err(err("wrong separator"));
            }
        }
        if b[23] != b'Z' {
            return Err(err("must end in Z (UTC)"));
        }
        let num = |from: usize, to: usize| -> Result<i64, TimestampError> {
            let mut v = 0i64;
            for &c in &b[from..to] {
                if !c.is_ascii_digit() {
                    return Err(err("not a digit where one is expected"));
                }
                v = v * 10 + i64::from(c - b'0');
            }
            Ok(v)
        };
        let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
        let (h, mi, sec, ms) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
        if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
            return Err(err("no such date"));
        }
        if h > 23 || mi > 59 || sec > 59 {
            return Err(err("no such time of day"));
        }
        let days = days_from_civil(y, mo, d);
        Ok(Timestamp(
            days * 86_400_000 + h * 3_600_000 + mi * 60_000 + sec * 1000 + ms,
        ))
    }

    /// Milliseconds from `earlier` to `self` (zero when `earlier` is later).
    pub fn since(self, earlier: Timestamp) -> Millis {
        Millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// This time plus a duration.
    pub fn plus(self, d: Millis) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.0).unwrap_or(i64::MAX)),
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(86_400_000);
        let rest = self.0.rem_euclid(86_400_000);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rest / 3_600_000,
            rest / 60_000 % 60,
            rest / 1000 % 60,
            rest % 1000
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An offset from the start of a run, as `+MM:SS.mmm` (`+H:MM:SS.mmm` past an hour).
pub fn offset(d: Millis) -> String {
    let ms = d.0;
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    if h > 0 {
        format!("+{h}:{m:02}:{s:02}.{frac:03}")
    } else {
        format!("+{m:02}:{s:02}.{frac:03}")
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_known_values() {
        let t = Timestamp::parse("1970-01-01T00:00:00.000Z").unwrap();
        assert_eq!(t.unix_ms(), 0);
        let t = Timestamp::parse("2026-11-20T09:14:03.250Z").unwrap();
        assert_eq!(t.unix_ms(), 1_795_166_043_250);
        assert_eq!(t.to_string(), "2026-11-20T09:14:03.250Z");
        for s in [
            "2000-02-29T23:59:59.999Z",
            "1969-12-31T23:59:59.999Z",
            "2400-03-01T00:00:00.000Z",
            "0000-01-01T00:00:00.000Z",
        ] {
            assert_eq!(Timestamp::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects_other_forms() {
        for s in [
            "2026-11-20T09:14:03Z",
            "2026-11-20T09:14:03.250+00:00",
            "2026-11-20 09:14:03.250Z",
            "2026-02-29T00:00:00.000Z",
            "2026-11-20T24:00:00.000Z",
            "2026-1x-20T09:14:03.250Z",
            "2026-11-20T09:14:03.25Z",
            "",
        ] {
            assert!(Timestamp::parse(s).is_err(), "{s} should be rejected");
        }
    }

    #[test]
    fn formats_durations_and_offsets() {
        assert_eq!(Millis(400).to_string(), "400 ms");
        assert_eq!(Millis(1800).to_string(), "1.80 s");
        assert_eq!(Millis(360_800).to_string(), "6 min 00.8 s");
        assert_eq!(Millis(7_500_000).to_string(), "2 h 05 min");
        assert_eq!(offset(Millis(97_350)), "+01:37.350");
        assert_eq!(offset(Millis(3_723_004)), "+1:02:03.004");
    }
}
