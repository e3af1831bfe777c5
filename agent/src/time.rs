//! FHIR date and time values as epoch milliseconds.
//!
//! FHIR `instant` is full RFC 3339; `dateTime` and `date` may be partial (`2024`, `2024-05`,
//! `2024-05-01`). Partial values resolve to their earliest instant in UTC, which is what a
//! window comparison needs for `period.start` and is conservative for `period.end`.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

pub const MS_PER_HOUR: i64 = 3_600_000;
pub const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;

/// Parses a FHIR instant/dateTime/date. Returns `None` when the text is not one of those forms.
pub fn parse_fhir_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() > 10 {
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Some(t.timestamp_millis());
        }
        // Lenient: a time without an offset is read as UTC rather than rejected.
        for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
            if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
                return Some(t.and_utc().timestamp_millis());
            }
        }
        return None;
    }
    let date = match s.len() {
        10 => NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?,
        7 => NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").ok()?,
        4 => NaiveDate::parse_from_str(&format!("{s}-01-01"), "%Y-%m-%d").ok()?,
        _ => return None,
    };
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// RFC 3339 UTC text for an epoch-milliseconds time.
pub fn format_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_instants_with_offsets() {
        assert_eq!(
            parse_fhir_time("2012-10-25T22:04:27+11:00"),
            parse_fhir_time("2012-10-25T11:04:27Z")
        );
        assert_eq!(parse_fhir_time("1970-01-01T00:00:01.5Z"), Some(1500));
    }

    #[test]
    fn partial_dates_resolve_to_their_start() {
        assert_eq!(parse_fhir_time("1970-01-02"), Some(MS_PER_DAY));
        assert_eq!(parse_fhir_time("1970-02"), Some(31 * MS_PER_DAY));
        assert_eq!(parse_fhir_time("1970"), Some(0));
    }

    #[test]
    fn garbage_is_none() {
        for s in ["", "yesterday", "2024-13-01", "2024-02-30", "20240101T"] {
            assert_eq!(parse_fhir_time(s), None, "{s}");
        }
    }
}
