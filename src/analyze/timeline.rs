//! Units over time: the cumulative units per variant by time of first exposure, in bins
//! chosen from the data's span — seconds for a demo, minutes for a short run, hours or
//! days for a long one — so that the curve exists whenever there are two bins' worth of
//! data.
//!
//! The input is new units per time key: the first 19 characters of the first exposure's
//! RFC 3339 timestamp (`2026-11-23T02:05:07`) when every first exposure of the
//! experiment falls in one clock hour, else the first 16 (`2026-11-23T02:05`) — a rule
//! stated on the strings, so the direct analysis ([`key`]) and the SQL (`SUBSTR`) apply
//! it identically, and a long run does not send one row per second. The bin width is
//! the smallest of [`BIN_SECONDS`] (no finer than the keys) that keeps the series within
//! [`MAX_POINTS`] points, and every bin from the first to the last is listed (so the
//! x axis is linear in time). Keys that are not a time (an event without `ts`) are left
//! out of the series.

use super::report::TimePoint;
use std::collections::BTreeMap;

/// The bin widths tried, in seconds: 1, 5, 15 s, 1, 5, 15 min, 1, 6 h, 1 day, 1 week.
const BIN_SECONDS: [i64; 10] = [1, 5, 15, 60, 300, 900, 3600, 21600, 86400, 604800];

/// The most points a series has (unless even weekly bins give more).
const MAX_POINTS: i64 = 120;

/// Whether the time keys of an experiment whose first exposures span `first` to `last`
/// (seconds since the epoch) are seconds — within one clock hour, what the SQL checks as
/// `SUBSTR(MIN(ts), 1, 13) = SUBSTR(MAX(ts), 1, 13)` — or minutes.
pub(super) fn per_second(first: i64, last: i64) -> bool {
    first.div_euclid(3600) == last.div_euclid(3600)
}

/// The time key of `t` (seconds since the epoch): the first 19 or 16 characters of its
/// timestamp.
pub(super) fn key_of(t: i64, per_second: bool) -> String {
    format_time(t, per_second)
}

/// Seconds since the epoch of an RFC 3339 timestamp (its first 19 characters).
pub(super) fn seconds_of_ts(ts: &str) -> Option<i64> {
    seconds_of(ts.get(..19)?)
}

/// The cumulative units per variant (`variants` of them) over time, from the new units per
/// time key.
pub(super) fn units_over_time(
    new_units: &BTreeMap<String, Vec<u64>>,
    variants: usize,
) -> Vec<TimePoint> {
    let per_key: Vec<(i64, &Vec<u64>)> = new_units
        .iter()
        .filter_map(|(k, v)| Some((seconds_of(k)?, v)))
        .collect();
    let (Some(first), Some(last)) = (per_key.first(), per_key.last()) else {
        return Vec::new();
    };
    let (first, last) = (first.0, last.0);
    let finest = if new_units.keys().any(|k| k.len() == 16) {
        60
    } else {
        1
    };
    let width = BIN_SECONDS
        .into_iter()
        .filter(|&w| w >= finest)
        .find(|w| (last - first) / w < MAX_POINTS)
        .unwrap_or(BIN_SECONDS[BIN_SECONDS.len() - 1]);
    let start = first.div_euclid(width) * width;
    let bins = (last - start) / width + 1;
    let mut cum = vec![0u64; variants];
    let mut next = per_key.iter().peekable();
    (0..bins)
        .map(|b| {
            let bin_start = start + b * width;
            while let Some((_, units)) = next.next_if(|(t, _)| *t < bin_start + width) {
                for (c, u) in cum.iter_mut().zip(units.iter()) {
                    *c += u;
                }
            }
            TimePoint {
                time: format_time(bin_start, finest == 1 && width < 60),
                units: cum.clone(),
            }
        })
        .collect()
}

/// Seconds since 1970-01-01T00:00:00 of `YYYY-MM-DDTHH:MM` or `YYYY-MM-DDTHH:MM:SS`.
fn seconds_of(key: &str) -> Option<i64> {
    let b = key.as_bytes();
    if !(b.len() == 16 || b.len() == 19 && b[16] == b':')
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = key.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d, h, mi) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
    );
    let sec = if b.len() == 19 { num(17..19)? } else { 0 };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 + sec)
}

/// `YYYY-MM-DDTHH:MM`, with `:SS` when `seconds`, of seconds since 1970-01-01T00:00:00.
fn format_time(t: i64, seconds: bool) -> String {
    let (days, s) = (t.div_euclid(86400), t.rem_euclid(86400));
    let (y, mo, d) = civil_from_days(days);
    let hm = format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}", s / 3600, s / 60 % 60);
    if seconds {
        format!("{hm}:{:02}", s % 60)
    } else {
        hm
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The date of days since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(keys: &[(&str, u64)]) -> Vec<TimePoint> {
        let m: BTreeMap<String, Vec<u64>> = keys
            .iter()
            .map(|(k, n)| (k.to_string(), vec![*n, 1]))
            .collect();
        units_over_time(&m, 2)
    }

    #[test]
    fn times_round_trip() {
        for k in ["1970-01-01T00:00", "2026-11-23T02:05", "2028-02-29T23:59"] {
            assert_eq!(format_time(seconds_of(k).unwrap(), false), k);
        }
        assert_eq!(
            format_time(seconds_of("2026-11-23T02:05:07").unwrap(), true),
            "2026-11-23T02:05:07"
        );
        assert_eq!(seconds_of("1970-01-02T00:01"), Some(86460));
        assert_eq!(seconds_of(""), None);
        assert_eq!(seconds_of("2026-13-01T00:00"), None);
        assert_eq!(seconds_of("2026-11-01T00:+1"), None);
    }

    #[test]
    fn keys_are_seconds_within_one_clock_hour() {
        let t = |ts| seconds_of_ts(ts).unwrap();
        let (a, b) = (
            t("2026-11-23T02:05:07.123456Z"),
            t("2026-11-23T02:59:59.000000Z"),
        );
        assert!(per_second(a, b));
        assert_eq!(key_of(a, true), "2026-11-23T02:05:07");
        assert!(!per_second(a, t("2026-11-23T03:00:00.000000Z")));
        assert_eq!(key_of(a, false), "2026-11-23T02:05");
        assert_eq!(seconds_of_ts("2026-11-23"), None);
    }

    #[test]
    fn a_demo_of_seconds_gets_second_bins() {
        let s = series(&[("2026-11-23T02:05:07", 3), ("2026-11-23T02:05:09", 2)]);
        let times: Vec<&str> = s.iter().map(|p| p.time.as_str()).collect();
        assert_eq!(
            times,
            [
                "2026-11-23T02:05:07",
                "2026-11-23T02:05:08",
                "2026-11-23T02:05:09"
            ]
        );
        assert_eq!(s[1].units, [3, 1]);
        assert_eq!(s[2].units, [5, 2]);
        // one second's worth of data: one point, nothing to draw
        assert_eq!(series(&[("2026-11-23T02:05:07", 3)]).len(), 1);
    }

    #[test]
    fn a_run_of_a_few_minutes_gets_minute_bins() {
        let s = series(&[("2026-11-23T02:05", 3), ("2026-11-23T02:08", 2)]);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].time, "2026-11-23T02:05");
        assert_eq!(s[2].units, [3, 1]);
        assert_eq!(s[3].units, [5, 2]);
    }

    #[test]
    fn a_long_run_gets_wider_bins() {
        let s = series(&[
            ("2026-11-01T00:00", 1),
            ("2026-11-03T10:30", 1),
            ("2026-11-08T23:59", 1),
        ]);
        // 8 days: hourly bins would be 192 points; 6-hour bins give 32
        assert_eq!(s.len(), 32);
        assert_eq!(s[0].time, "2026-11-01T00:00");
        assert_eq!(s[9].time, "2026-11-03T06:00");
        assert_eq!(s[9].units, [2, 2]);
        assert_eq!(s[31].units, [3, 3]);
    }
}
