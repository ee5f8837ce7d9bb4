//! UTC calendar windows (SPEC §1): a budget's counter resets at the start of each window.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};

use crate::error::{Error, Result};

/// How often a budget resets. Calendar-aligned in UTC: weeks start Monday 00:00, months on day 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    /// Each UTC minute.
    Minute,
    /// Each UTC hour.
    Hour,
    /// Each UTC day.
    Day,
    /// Each ISO week, Monday 00:00 UTC.
    Week,
    /// Each calendar month, from day 1 00:00 UTC.
    Month,
    /// Never resets.
    Total,
}

impl Window {
    /// Every window, in order of length.
    pub const ALL: [Self; 6] = [
        Self::Minute,
        Self::Hour,
        Self::Day,
        Self::Week,
        Self::Month,
        Self::Total,
    ];

    /// The name used in specs and JSON.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Total => "total",
        }
    }

    /// Start (Unix ms, inclusive) of the window that contains `now_ms`. `Total` starts at 0.
    #[must_use]
    pub fn start_ms(self, now_ms: i64) -> i64 {
        let Some(now) = DateTime::<Utc>::from_timestamp_millis(now_ms) else {
            return 0;
        };
        let date = now.date_naive();
        let start: Option<DateTime<Utc>> = match self {
            Self::Minute => now.with_second(0).and_then(|t| t.with_nanosecond(0)),
            Self::Hour => now
                .with_minute(0)
                .and_then(|t| t.with_second(0))
                .and_then(|t| t.with_nanosecond(0)),
            Self::Day => midnight(date),
            Self::Week => {
                let back = i64::from(date.weekday().num_days_from_monday());
                midnight(date - Duration::days(back))
            }
            Self::Month => date.with_day(1).and_then(midnight),
            Self::Total => return 0,
        };
        start.map_or(0, |t| t.timestamp_millis())
    }

    /// End (Unix ms, exclusive) of the window that starts at `start_ms`: when it resets.
    /// `None` for `Total`, which never resets.
    #[must_use]
    pub fn end_ms(self, start_ms: i64) -> Option<i64> {
        const MINUTE: i64 = 60_000;
        match self {
            Self::Minute => Some(start_ms + MINUTE),
            Self::Hour => Some(start_ms + 60 * MINUTE),
            Self::Day => Some(start_ms + 24 * 60 * MINUTE),
            Self::Week => Some(start_ms + 7 * 24 * 60 * MINUTE),
            Self::Month => {
                let start = DateTime::<Utc>::from_timestamp_millis(start_ms)?.date_naive();
                let (y, m) = if start.month() == 12 {
                    (start.year() + 1, 1)
                } else {
                    (start.year(), start.month() + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1)
                    .and_then(midnight)
                    .map(|t| t.timestamp_millis())
            }
            Self::Total => None,
        }
    }
}

fn midnight(date: NaiveDate) -> Option<DateTime<Utc>> {
    date.and_hms_opt(0, 0, 0).map(|t| Utc.from_utc_datetime(&t))
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Window {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown budget window {s:?}: use one of minute, hour, day, week, month, total"
                ))
            })
    }
}

/// Formats Unix ms as RFC 3339 UTC (`2026-11-23T00:00:00Z`), for messages.
#[must_use]
pub fn format_utc(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn windows_align_to_utc_calendar() {
        let now = ms("2026-11-25T13:47:21.500Z"); // a Wednesday
        assert_eq!(Window::Minute.start_ms(now), ms("2026-11-25T13:47:00Z"));
        assert_eq!(Window::Hour.start_ms(now), ms("2026-11-25T13:00:00Z"));
        assert_eq!(Window::Day.start_ms(now), ms("2026-11-25T00:00:00Z"));
        assert_eq!(Window::Week.start_ms(now), ms("2026-11-23T00:00:00Z"));
        assert_eq!(Window::Month.start_ms(now), ms("2026-11-01T00:00:00Z"));
        assert_eq!(Window::Total.start_ms(now), 0);
    }

    #[test]
    fn ends_are_next_starts() {
        let now = ms("2026-12-31T23:59:59.999Z");
        for w in Window::ALL {
            let start = w.start_ms(now);
            match w.end_ms(start) {
                Some(end) => {
                    assert!(end > now, "{w}");
                    assert_eq!(w.start_ms(end), end, "{w}");
                    assert_eq!(w.start_ms(end - 1), start, "{w}");
                }
                None => assert_eq!(w, Window::Total),
            }
        }
        assert_eq!(
            Window::Month.end_ms(Window::Month.start_ms(now)),
            Some(ms("2027-01-01T00:00:00Z"))
        );
        let feb = ms("2028-02-10T00:00:00Z");
        assert_eq!(
            Window::Month.end_ms(Window::Month.start_ms(feb)),
            Some(ms("2028-03-01T00:00:00Z"))
        );
    }

    #[test]
    fn week_starts_monday_even_on_sunday() {
        assert_eq!(
            Window::Week.start_ms(ms("2026-11-29T23:00:00Z")),
            ms("2026-11-23T00:00:00Z")
        );
        assert_eq!(
            Window::Week.start_ms(ms("2026-11-30T00:00:00Z")),
            ms("2026-11-30T00:00:00Z")
        );
    }

    #[test]
    fn parses_names_and_rejects_others() {
        assert_eq!("day".parse::<Window>().unwrap(), Window::Day);
        let err = "daily".parse::<Window>().unwrap_err();
        assert!(err.to_string().contains("minute, hour, day"), "{err}");
    }
}
