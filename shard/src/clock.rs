//! Wall-clock dates without a date crate: a Unix time as its UTC calendar fields, for log
//! stamps and result-file names.

/// A UTC date and time of day (proleptic Gregorian calendar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// `unix_secs` (seconds since 1970-01-01T00:00:00Z) as UTC calendar fields.
pub fn civil_utc(unix_secs: u64) -> CivilTime {
    let (days, rem) = ((unix_secs / 86_400) as i64, (unix_secs % 86_400) as u32);
    // Days to a civil date in eras of 400 years that start on March 1st (so the leap day
    // is the last day of its year).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    CivilTime {
        year: yoe + era * 400 + i64::from(month <= 2),
        month,
        day,
        hour: rem / 3_600,
        minute: rem / 60 % 60,
        second: rem % 60,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_become_utc_dates() {
        let t = |y, mo, d, h, mi, s| CivilTime {
            year: y,
            month: mo,
            day: d,
            hour: h,
            minute: mi,
            second: s,
        };
        assert_eq!(civil_utc(0), t(1970, 1, 1, 0, 0, 0));
        assert_eq!(civil_utc(951_782_400), t(2000, 2, 29, 0, 0, 0));
        assert_eq!(civil_utc(1_796_351_503), t(2026, 12, 4, 2, 31, 43));
        assert_eq!(civil_utc(4_107_542_399), t(2100, 2, 28, 23, 59, 59));
    }
}
