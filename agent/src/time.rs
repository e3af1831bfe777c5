//! FHIR date and time values as epoch milliseconds.
//!
//! FHIR `instant` is full RFC 3339; `dateTime` and `date` may be partial (`2024`, `2024-05`,
//! `2024-05-01`). Partial values resolve to their earliest instant in UTC, which is what a
//! window comparison needs for `period.start` and is conservative for `period.end`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone as _};

pub const MS_PER_HOUR: i64 = 3_600_000;
pub const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;

/// Access times outside `[PLAUSIBLE_FROM_MS, PLAUSIBLE_UNTIL_MS)` (1980-01-01 to 2100-01-01
/// UTC) are refused as bad lines: a year 0000 or 9999 is a broken or hostile sender, and
/// such times would sort and window every other access wrongly. The window does not depend
/// on the system clock, so replaying old logs or a clock fault never rejects real events.
pub const PLAUSIBLE_FROM_MS: i64 = 315_532_800_000;
pub const PLAUSIBLE_UNTIL_MS: i64 = 4_102_444_800_000;

/// Whether an access time is inside the plausibility window.
pub fn plausible(ms: i64) -> bool {
    (PLAUSIBLE_FROM_MS..PLAUSIBLE_UNTIL_MS).contains(&ms)
}

/// The current time in epoch milliseconds (the one clock every module reads).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A local wall-clock time in `zone` as epoch milliseconds. The hour repeated when clocks go
/// back takes its earlier instant. A time in the hour clocks skip going forward (a sender
/// whose clock had not moved yet, a time computed by adding) is read with the offset in
/// force before the skip, as java.time and ICU do: it is an access all the same, and
/// refusing it would lose it.
pub fn local_ms(zone: chrono_tz::Tz, naive: NaiveDateTime) -> Option<i64> {
    use chrono::{LocalResult, Offset as _};
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.timestamp_millis()),
        LocalResult::None => {
            let before = zone
                .from_local_datetime(&(naive - chrono::Duration::hours(3)))
                .earliest()?;
            before
                .offset()
                .fix()
                .from_local_datetime(&naive)
                .single()
                .map(|t| t.timestamp_millis())
        }
    }
}

/// Parses a FHIR instant/dateTime/date. Returns `None` when the text is not one of those forms.
/// A date-time without an offset is read as UTC; see [`parse_time_in`].
pub fn parse_fhir_time(s: &str) -> Option<i64> {
    parse_time_in(s, chrono_tz::UTC)
}

/// Like [`parse_fhir_time`], reading a date-time without an offset as local time in `zone`
/// (a source's `timezone`: some senders write local wall-clock time without an offset).
/// An ambiguous local time (the repeated hour when clocks go back) takes the earlier instant.
pub fn parse_time_in(s: &str, zone: chrono_tz::Tz) -> Option<i64> {
    let s = s.trim();
    if s.len() > 10 {
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Some(t.timestamp_millis());
        }
        for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
            if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
                return local_ms(zone, t);
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

/// A window bound as people type it: `2026-03-10` (midnight UTC) or a date-time (UTC unless
/// it carries an offset).
pub fn parse_date_or_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis());
    }
    parse_fhir_time(s)
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

    /// 2026-03-08 02:00 to 03:00 does not exist in Chicago; 2026-11-01 01:00 to 02:00 exists
    /// twice.
    #[test]
    fn local_times_across_daylight_saving_changes() {
        let chicago: chrono_tz::Tz = "America/Chicago".parse().unwrap();
        let at = |s: &str| {
            local_ms(
                chicago,
                NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap(),
            )
        };
        // Skipped: read with the standard-time offset (-6), so 02:30 is 08:30Z.
        assert_eq!(
            at("2026-03-08 02:30"),
            parse_fhir_time("2026-03-08T08:30:00Z")
        );
        assert_eq!(
            at("2026-03-08 01:59"),
            parse_fhir_time("2026-03-08T07:59:00Z")
        );
        assert_eq!(
            at("2026-03-08 03:00"),
            parse_fhir_time("2026-03-08T08:00:00Z")
        );
        // Repeated: the earlier instant (daylight time, -5).
        assert_eq!(
            at("2026-11-01 01:30"),
            parse_fhir_time("2026-11-01T06:30:00Z")
        );
        assert_eq!(
            parse_time_in("2026-03-08T02:30:00", chicago),
            parse_fhir_time("2026-03-08T08:30:00Z")
        );
    }

    #[test]
    fn times_without_offset_follow_the_zone() {
        let chicago: chrono_tz::Tz = "America/Chicago".parse().unwrap();
        assert_eq!(
            parse_time_in("2026-03-10T14:00:00", chicago),
            parse_fhir_time("2026-03-10T19:00:00Z"),
            "CDT is UTC-5"
        );
        assert_eq!(
            parse_time_in("2026-03-10T14:00:00+00:00", chicago),
            parse_fhir_time("2026-03-10T14:00:00Z"),
            "an explicit offset wins"
        );
    }

    #[test]
    fn plausibility_window() {
        assert!(!plausible(
            parse_fhir_time("0000-01-01T00:00:00Z").unwrap_or(i64::MIN)
        ));
        assert!(!plausible(parse_fhir_time("9999-12-31T23:59:59Z").unwrap()));
        assert!(!plausible(parse_fhir_time("1979-12-31T23:59:59Z").unwrap()));
        assert!(plausible(parse_fhir_time("1980-01-01T00:00:00Z").unwrap()));
        assert!(plausible(parse_fhir_time("2099-12-31T23:59:59Z").unwrap()));
        assert!(!plausible(parse_fhir_time("2100-01-01T00:00:00Z").unwrap()));
    }

    #[test]
    fn garbage_is_none() {
        for s in ["", "yesterday", "2024-13-01", "2024-02-30", "20240101T"] {
            assert_eq!(parse_fhir_time(s), None, "{s}");
        }
    }
}
