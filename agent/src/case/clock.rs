//! Breach-notification deadlines: HIPAA 45 CFR 164.404–164.412 and state rules from
//! `rules/jurisdictions.toml`.
//!
//! - Individuals: no later than 60 calendar days after discovery (164.404(b)).
//! - Media: more than 500 residents of one state, 60 days (164.406).
//! - HHS: 500 or more affected, with the individual notices (164.408(b)); fewer, in the annual
//!   log due 60 days after the end of the calendar year of discovery (164.408(c)).
//! - A law-enforcement delay (164.412) pauses the notice clocks for its days: a written one for
//!   the period it states, an oral one for at most 30 days from the statement.
//! - State rules: a number of calendar or business days from discovery or from the
//!   determination that a breach occurred, above a residents threshold, optionally only for
//!   facilities licensed in that state.

use super::RulesError;
use chrono::{Datelike, Duration, NaiveDate, Weekday};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LawEnforcementDelay {
    /// A written statement: notices wait until `until` (exclusive).
    Written { from: NaiveDate, until: NaiveDate },
    /// An oral statement: at most 30 days from `from`, shorter if `days` says so.
    Oral { from: NaiveDate, days: u32 },
}

impl LawEnforcementDelay {
    /// The paused days as [start, end).
    fn span(&self) -> (NaiveDate, NaiveDate) {
        match *self {
            LawEnforcementDelay::Written { from, until } => (from, until.max(from)),
            LawEnforcementDelay::Oral { from, days } => {
                (from, from + Duration::days(i64::from(days.min(30))))
            }
        }
    }
}

/// What the clocks need to know about a breach.
#[derive(Debug, Clone, Default)]
pub struct Breach {
    pub discovered: Option<NaiveDate>,
    /// When the organization determined a breach occurred (some state rules count from it);
    /// default: the discovery date.
    pub determined: Option<NaiveDate>,
    /// Affected individuals per state of residence (two-letter code; "??" unknown).
    pub residents: BTreeMap<String, u32>,
    pub delays: Vec<LawEnforcementDelay>,
    /// States whose licence the covered entity holds (for rules like California's).
    pub licensed_in: Vec<String>,
}

impl Breach {
    pub fn affected(&self) -> u32 {
        self.residents.values().sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadline {
    /// Which clock this is, stable while the facts that make it apply hold
    /// (`individuals`, `media-CA`, `hhs`, `hhs-annual-2026`, `rule-<name>`): reminders are
    /// keyed by it, so recomputing the clocks never queues one twice.
    pub key: String,
    /// Who must be notified.
    pub notify: String,
    pub due: NaiveDate,
    /// The rule, for the record.
    pub basis: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Days,
    BusinessDays,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum From {
    Discovery,
    Determination,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateRule {
    pub state: String,
    pub name: String,
    pub notify: Vec<String>,
    pub within: u32,
    pub unit: Unit,
    pub from: From,
    /// The rule applies when at least this many residents of the state are affected.
    #[serde(default = "one")]
    pub min_residents: u32,
    /// The rule applies to facilities licensed in the state, whoever the patients are.
    #[serde(default)]
    pub licensed_facilities: bool,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jurisdictions {
    #[serde(default, rename = "rule")]
    pub rules: Vec<StateRule>,
    /// Holidays that are not business days, per state: `"MM-DD"` (moved to Monday when on a
    /// Sunday), `"mon#3/01"` (third Monday of January), `"mon#last/05"`, `"thu#4/11+1"` (the
    /// day after the fourth Thursday of November).
    #[serde(default)]
    pub holidays: BTreeMap<String, Vec<String>>,
}

impl Jurisdictions {
    pub const EMBEDDED: &'static str = include_str!("../../../rules/jurisdictions.toml");

    pub fn parse(text: &str) -> Result<Self, RulesError> {
        let invalid = RulesError::Invalid;
        let j: Jurisdictions = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        for (state, days) in &j.holidays {
            for d in days {
                holiday_in(d, 2026)
                    .map_err(|e| invalid(format!("holidays.{state}: {d:?}: {e}")))?;
            }
        }
        for r in &j.rules {
            if r.within == 0 {
                return Err(invalid(format!(
                    "rule {:?}: within must be at least 1",
                    r.name
                )));
            }
        }
        Ok(j)
    }

    pub fn load(path: &Path) -> Result<Self, RulesError> {
        RulesError::load(path, Self::parse)
    }

    fn is_holiday(&self, state: &str, day: NaiveDate) -> bool {
        self.holidays.get(state).is_some_and(|list| {
            list.iter()
                .any(|h| holiday_in(h, day.year()).ok().flatten() == Some(day))
        })
    }

    /// The `n`th business day after `start` in `state` (weekends and its holidays skipped).
    pub fn add_business_days(&self, state: &str, start: NaiveDate, n: u32) -> NaiveDate {
        let mut d = start;
        let mut left = n;
        while left > 0 {
            d += Duration::days(1);
            if !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) && !self.is_holiday(state, d) {
                left -= 1;
            }
        }
        d
    }
}

/// Why a holiday rule names no day.
#[derive(Debug, thiserror::Error)]
pub enum HolidayError {
    #[error("bad +offset")]
    Offset,
    #[error("weekday must be mon..fri")]
    Weekday,
    #[error("expected wd#N/MM")]
    NthShape,
    #[error("bad month")]
    Month,
    #[error("bad N")]
    Nth,
    #[error("N must be 1-5 or last")]
    NthRange,
    #[error("expected MM-DD")]
    DayShape,
    #[error("bad day")]
    Day,
    #[error("no such date")]
    NoSuchDate,
}

/// Why no deadline can be computed for a breach.
#[derive(Debug, thiserror::Error)]
pub enum DeadlineError {
    #[error("the discovery date is not set")]
    NoDiscovery,
    #[error("bad year")]
    Year,
}

/// The date of a holiday rule in `year` (`None`: the rule names no day that year).
fn holiday_in(rule: &str, year: i32) -> Result<Option<NaiveDate>, HolidayError> {
    let (base, offset) = match rule.split_once('+') {
        Some((b, o)) => (b, o.parse::<i64>().map_err(|_| HolidayError::Offset)?),
        None => (rule, 0),
    };
    let date = if let Some((wd, rest)) = base.split_once('#') {
        let weekday = match wd {
            "mon" => Weekday::Mon,
            "tue" => Weekday::Tue,
            "wed" => Weekday::Wed,
            "thu" => Weekday::Thu,
            "fri" => Weekday::Fri,
            _ => return Err(HolidayError::Weekday),
        };
        let (nth, month) = rest.split_once('/').ok_or(HolidayError::NthShape)?;
        let month: u32 = month.parse().map_err(|_| HolidayError::Month)?;
        if nth == "last" {
            let next = if month == 12 {
                NaiveDate::from_ymd_opt(year + 1, 1, 1)
            } else {
                NaiveDate::from_ymd_opt(year, month + 1, 1)
            }
            .ok_or(HolidayError::Month)?;
            let mut d = next - Duration::days(1);
            while d.weekday() != weekday {
                d -= Duration::days(1);
            }
            Some(d)
        } else {
            let n: u32 = nth.parse().map_err(|_| HolidayError::Nth)?;
            if !(1..=5).contains(&n) {
                return Err(HolidayError::NthRange);
            }
            NaiveDate::from_weekday_of_month_opt(year, month, weekday, n as u8)
        }
    } else {
        let (m, d) = base.split_once('-').ok_or(HolidayError::DayShape)?;
        let (m, d): (u32, u32) = (
            m.parse().map_err(|_| HolidayError::Month)?,
            d.parse().map_err(|_| HolidayError::Day)?,
        );
        let date = NaiveDate::from_ymd_opt(year, m, d).ok_or(HolidayError::NoSuchDate)?;
        Some(if date.weekday() == Weekday::Sun {
            date + Duration::days(1)
        } else {
            date
        })
    };
    Ok(date.map(|d| d + Duration::days(offset)))
}

/// `start + days`, then pushed later by every law-enforcement pause that overlaps the running
/// clock (a pause that begins before the deadline it would extend counts in full).
fn paused(start: NaiveDate, days: i64, delays: &[LawEnforcementDelay]) -> NaiveDate {
    let mut spans: Vec<(NaiveDate, NaiveDate)> =
        delays.iter().map(LawEnforcementDelay::span).collect();
    spans.sort();
    let mut due = start + Duration::days(days);
    for (s, e) in spans {
        let from = s.max(start);
        if from < due && e > from {
            due += e - from;
        }
    }
    due
}

/// Lowercase letters and digits, other runs as one `-`.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

/// Every deadline that applies to `b`, earliest first.
pub fn deadlines(b: &Breach, j: &Jurisdictions) -> Result<Vec<Deadline>, DeadlineError> {
    let discovered = b.discovered.ok_or(DeadlineError::NoDiscovery)?;
    let determined = b.determined.unwrap_or(discovered);
    let affected = b.affected();
    let mut out = Vec::new();
    if affected == 0 {
        return Ok(out);
    }
    let sixty = paused(discovered, 60, &b.delays);
    out.push(Deadline {
        key: "individuals".into(),
        notify: format!("{affected} affected individual(s)"),
        due: sixty,
        basis: "45 CFR 164.404(b): without unreasonable delay, no later than 60 calendar days after discovery".into(),
    });
    for (state, n) in &b.residents {
        if *n > 500 {
            out.push(Deadline {
                key: format!("media-{state}"),
                notify: format!("prominent media outlets serving {state}"),
                due: sixty,
                basis: format!("45 CFR 164.406: {n} residents of {state}, more than 500"),
            });
        }
    }
    if affected >= 500 {
        out.push(Deadline {
            key: "hhs".into(),
            notify: "HHS (Secretary), breach portal".into(),
            due: sixty,
            basis: format!(
                "45 CFR 164.408(b): {affected} affected, 500 or more: with the individual notices"
            ),
        });
    } else {
        let year_end =
            NaiveDate::from_ymd_opt(discovered.year(), 12, 31).ok_or(DeadlineError::Year)?;
        out.push(Deadline {
            key: format!("hhs-annual-{}", discovered.year()),
            notify: "HHS (Secretary), annual log of breaches under 500".into(),
            due: year_end + Duration::days(60),
            basis: format!("45 CFR 164.408(c): {affected} affected, under 500: within 60 days after the end of {}", discovered.year()),
        });
    }
    for r in &j.rules {
        let residents = b.residents.get(&r.state).copied().unwrap_or(0);
        let licensed = b.licensed_in.iter().any(|s| s == &r.state);
        let applies = if r.licensed_facilities {
            licensed
        } else {
            residents >= r.min_residents
        };
        if !applies {
            continue;
        }
        let start = match r.from {
            From::Discovery => discovered,
            From::Determination => determined,
        };
        let due = match r.unit {
            Unit::Days => paused(start, i64::from(r.within), &b.delays),
            Unit::BusinessDays => {
                let plain = j.add_business_days(&r.state, start, r.within);
                // A pause moves the start of the count by its calendar days.
                let shift = paused(start, 0, &b.delays) - start;
                if shift > Duration::zero() {
                    j.add_business_days(&r.state, start + shift, r.within)
                } else {
                    plain
                }
            }
        };
        out.push(Deadline {
            key: format!("rule-{}", slug(&r.name)),
            notify: r.notify.join(", "),
            due,
            basis: format!(
                "{}: {} {} after {}",
                r.name,
                r.within,
                match r.unit {
                    Unit::Days => "calendar days",
                    Unit::BusinessDays => "business days",
                },
                match r.from {
                    From::Discovery => "discovery",
                    From::Determination => "the breach determination",
                }
            ),
        });
    }
    out.sort_by(|a, b| a.due.cmp(&b.due).then(a.notify.cmp(&b.notify)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn breach(discovered: &str, residents: &[(&str, u32)]) -> Breach {
        Breach {
            discovered: Some(d(discovered)),
            residents: residents.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            ..Default::default()
        }
    }

    fn due(b: &Breach, who: &str) -> Option<NaiveDate> {
        let j = Jurisdictions::parse(Jurisdictions::EMBEDDED).unwrap();
        deadlines(b, &j)
            .unwrap()
            .into_iter()
            .find(|x| x.notify.contains(who))
            .map(|x| x.due)
    }

    #[test]
    fn sixty_calendar_days_across_month_ends_and_leap_years() {
        assert_eq!(
            due(&breach("2026-01-31", &[("NY", 3)]), "individual"),
            Some(d("2026-04-01"))
        );
        // 2028 is a leap year: February has 29 days.
        assert_eq!(
            due(&breach("2028-01-31", &[("NY", 3)]), "individual"),
            Some(d("2028-03-31"))
        );
        assert_eq!(
            due(&breach("2026-12-15", &[("NY", 3)]), "individual"),
            Some(d("2027-02-13"))
        );
    }

    #[test]
    fn hhs_and_media_thresholds() {
        let small = breach("2026-05-10", &[("NY", 499)]);
        assert_eq!(
            due(&small, "annual log"),
            Some(d("2027-03-01")),
            "60 days after 2026-12-31"
        );
        assert_eq!(due(&small, "breach portal"), None);
        // The year after 2027 ends in a leap February.
        assert_eq!(
            due(&breach("2027-06-01", &[("NY", 1)]), "annual log"),
            Some(d("2028-02-29"))
        );
        let at = breach("2026-05-10", &[("NY", 500)]);
        assert_eq!(due(&at, "breach portal"), Some(d("2026-07-09")));
        assert_eq!(due(&at, "annual log"), None);
        assert_eq!(due(&at, "media"), None, "500 is not more than 500");
        let over = breach("2026-05-10", &[("NY", 501)]);
        assert_eq!(
            due(&over, "media outlets serving NY"),
            Some(d("2026-07-09"))
        );
        let spread = breach("2026-05-10", &[("NY", 300), ("NJ", 300)]);
        assert_eq!(
            due(&spread, "breach portal"),
            Some(d("2026-07-09")),
            "600 in all"
        );
        assert_eq!(due(&spread, "media"), None, "no state over 500");
    }

    #[test]
    fn texas_attorney_general_from_250_residents_counted_from_determination() {
        let mut b = breach("2026-03-02", &[("TX", 249)]);
        assert_eq!(due(&b, "Texas Attorney General"), None);
        b.residents.insert("TX".into(), 250);
        assert_eq!(due(&b, "Texas Attorney General"), Some(d("2026-04-01")));
        b.determined = Some(d("2026-03-20"));
        assert_eq!(due(&b, "Texas Attorney General"), Some(d("2026-04-19")));
    }

    #[test]
    fn california_fifteen_business_days_for_licensed_facilities() {
        let mut b = breach("2026-11-20", &[("NV", 2)]);
        assert_eq!(due(&b, "Public Health"), None, "not licensed in California");
        b.licensed_in = vec!["CA".into()];
        // From Friday 2026-11-20: Thanksgiving (Thu 11-26) and the day after are holidays,
        // so the 15th business day is Tuesday 2026-12-15.
        assert_eq!(due(&b, "Public Health"), Some(d("2026-12-15")));
        // Christmas on a Friday and New Year's Day on a Friday are skipped too.
        let mut b = breach("2026-12-17", &[("CA", 1)]);
        b.licensed_in = vec!["CA".into()];
        assert_eq!(due(&b, "Public Health"), Some(d("2027-01-11")));
    }

    #[test]
    fn law_enforcement_delay_pauses_the_clock() {
        let mut b = breach("2026-01-10", &[("NY", 10)]);
        b.delays = vec![LawEnforcementDelay::Written {
            from: d("2026-02-01"),
            until: d("2026-03-03"),
        }];
        // 30 paused days on top of 60.
        assert_eq!(due(&b, "individual"), Some(d("2026-04-10")));
        // An oral statement pauses for 30 days at most, whatever was said.
        b.delays = vec![LawEnforcementDelay::Oral {
            from: d("2026-02-01"),
            days: 45,
        }];
        assert_eq!(due(&b, "individual"), Some(d("2026-04-10")));
        // A delay that starts after the deadline changes nothing.
        b.delays = vec![LawEnforcementDelay::Oral {
            from: d("2026-04-01"),
            days: 10,
        }];
        assert_eq!(due(&b, "individual"), Some(d("2026-03-11")));
    }

    #[test]
    fn holiday_rules() {
        assert_eq!(
            holiday_in("thu#4/11+1", 2026).unwrap(),
            Some(d("2026-11-27"))
        );
        assert_eq!(
            holiday_in("mon#last/05", 2026).unwrap(),
            Some(d("2026-05-25"))
        );
        assert_eq!(
            holiday_in("01-01", 2023).unwrap(),
            Some(d("2023-01-02")),
            "Sunday → Monday"
        );
        assert!(Jurisdictions::parse("[holidays]\nCA = [\"13-01\"]\n")
            .unwrap_err()
            .to_string()
            .contains("13-01"));
    }
}
