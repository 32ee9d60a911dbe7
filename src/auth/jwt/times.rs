//! Connect-time windows of a user JWT (`times`, `times_location`, spec 5.2).
//!
//! Windows are `HH:MM:SS` on the current day in `times_location` (an IANA
//! name) or, without one, in the host's local time zone, as nats-server
//! does. A window whose start is after its end crosses midnight.
//! Comparisons are strict (`start < now < end`). Time zones come from jiff,
//! which reads the system tz database like Go's `time.LoadLocation`.

use std::time::SystemTime;

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

use super::claims::TimeRange;

/// Parse `HH:MM:SS` as Go's `time.Parse("15:04:05", ..)`: hour 1 or 2
/// digits, minute and second exactly 2 digits, all in range.
pub(crate) fn parse_clock(s: &str) -> Option<Time> {
    let mut parts = s.split(':');
    let (h, m, sec) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || h.is_empty()
        || h.len() > 2
        || m.len() != 2
        || sec.len() != 2
        || ![h, m, sec]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let (h, m, sec): (i8, i8, i8) = (h.parse().ok()?, m.parse().ok()?, sec.parse().ok()?);
    if h > 23 || m > 59 || sec > 59 {
        return None;
    }
    Time::new(h, m, sec, 0).ok()
}

/// The zone of `times_location` (empty: the host's local zone), as Go's
/// `time.LoadLocation` names them (`UTC`, `Local`, or an IANA name).
pub(crate) fn load_zone(location: &str) -> Result<TimeZone, String> {
    match location {
        "" | "Local" => Ok(TimeZone::system()),
        "UTC" => Ok(TimeZone::UTC),
        name => TimeZone::get(name).map_err(|e| format!("unknown time zone {name:?}: {e}")),
    }
}

/// Check `now` against the windows. `Ok(None)`: no windows (always allowed).
/// `Ok(Some(end))`: inside; `end` is the end of the window that lasts
/// longest. `Err(())`: outside every window (or a window is unparsable).
pub(crate) fn window_end(
    times: &[TimeRange],
    location: &str,
    now: SystemTime,
) -> Result<Option<SystemTime>, ()> {
    if times.is_empty() {
        return Ok(None);
    }
    let zone = load_zone(location).map_err(|_| ())?;
    let now = Timestamp::try_from(now).map_err(|_| ())?;
    let today = now.to_zoned(zone.clone()).date();
    let mut best: Option<Timestamp> = None;
    for range in times {
        let (Some(start), Some(end)) = (parse_clock(&range.start), parse_clock(&range.end)) else {
            return Err(());
        };
        // Candidate windows: today's, and for a window crossing midnight
        // also the one that started yesterday.
        let mut candidates: Vec<(Date, Date)> = Vec::with_capacity(2);
        if start > end {
            candidates.push((today.yesterday().map_err(|_| ())?, today));
            candidates.push((today, today.tomorrow().map_err(|_| ())?));
        } else {
            candidates.push((today, today));
        }
        for (start_day, end_day) in candidates {
            let from = at(&zone, start_day, start)?;
            let to = at(&zone, end_day, end)?;
            if from < now && now < to && best.is_none_or(|b| to > b) {
                best = Some(to);
            }
        }
    }
    match best {
        Some(end) => Ok(Some(SystemTime::from(end))),
        None => Err(()),
    }
}

fn at(zone: &TimeZone, day: Date, time: Time) -> Result<Timestamp, ()> {
    let zoned: Zoned = day
        .to_datetime(time)
        .to_zoned(zone.clone())
        .map_err(|_| ())?;
    Ok(zoned.timestamp())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn range(start: &str, end: &str) -> TimeRange {
        TimeRange {
            start: start.into(),
            end: end.into(),
        }
    }

    fn utc(s: &str) -> SystemTime {
        SystemTime::from(s.parse::<Timestamp>().unwrap())
    }

    #[test]
    fn clock_parsing() {
        assert!(parse_clock("09:00:00").is_some());
        assert!(parse_clock("9:00:00").is_some());
        assert!(parse_clock("24:00:00").is_none());
        assert!(parse_clock("09:0:00").is_none());
        assert!(parse_clock("09:00").is_none());
        assert!(parse_clock("09:00:00:00").is_none());
    }

    #[test]
    fn inside_outside_strict() {
        let t = [range("09:00:00", "17:00:00")];
        assert_eq!(
            window_end(&t, "UTC", utc("2026-03-02T12:00:00Z")),
            Ok(Some(utc("2026-03-02T17:00:00Z")))
        );
        assert_eq!(window_end(&t, "UTC", utc("2026-03-02T09:00:00Z")), Err(()));
        assert_eq!(window_end(&t, "UTC", utc("2026-03-02T17:00:00Z")), Err(()));
        assert_eq!(window_end(&t, "UTC", utc("2026-03-02T18:00:00Z")), Err(()));
        assert_eq!(
            window_end(&[], "UTC", utc("2026-03-02T18:00:00Z")),
            Ok(None)
        );
    }

    #[test]
    fn crossing_midnight() {
        let t = [range("22:00:00", "02:00:00")];
        assert_eq!(
            window_end(&t, "UTC", utc("2026-03-02T23:00:00Z")),
            Ok(Some(utc("2026-03-03T02:00:00Z")))
        );
        assert_eq!(
            window_end(&t, "UTC", utc("2026-03-03T01:00:00Z")),
            Ok(Some(utc("2026-03-03T02:00:00Z")))
        );
        assert_eq!(window_end(&t, "UTC", utc("2026-03-03T12:00:00Z")), Err(()));
    }

    #[test]
    fn location_and_longest_window() {
        // 12:00 UTC is 13:00 in Berlin (CET) in March before DST.
        let t = [range("12:30:00", "14:00:00"), range("12:00:00", "16:00:00")];
        assert_eq!(
            window_end(&t, "Europe/Berlin", utc("2026-03-02T12:00:00Z")),
            Ok(Some(utc("2026-03-02T15:00:00Z")))
        );
        assert_eq!(
            window_end(&t, "Not/AZone", utc("2026-03-02T12:00:00Z")),
            Err(())
        );
        assert!(load_zone("Europe/Berlin").is_ok());
        let _ = Duration::ZERO;
    }
}
