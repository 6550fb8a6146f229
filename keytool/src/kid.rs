//! Key ids of the form `k20250601T120000Z`: `k` and the UTC time the key was made.
//!
//! The keyring format has no room for dates, so the id carries it; `retire --older-than` reads
//! it back. Ids chosen by hand are fine, they just cannot be retired by age.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECONDS_PER_DAY: u64 = 86_400;

/// The id of a key made at `time`, to the second.
pub fn kid_at(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (year, month, day) = civil_from_days(secs / SECONDS_PER_DAY);
    let rest = secs % SECONDS_PER_DAY;
    format!(
        "k{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The time encoded in an id made by [`kid_at`], or `None` for any other id.
pub fn time_of(kid: &str) -> Option<SystemTime> {
    let body = kid.strip_prefix('k')?.strip_suffix('Z')?;
    let (date, clock) = body.split_once('T')?;
    if date.len() != 8
        || clock.len() != 6
        || !(date.bytes().chain(clock.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let num = |text: &str| text.parse::<u64>().ok();
    let (year, month, day) = (num(&date[..4])?, num(&date[4..6])?, num(&date[6..])?);
    let (hour, minute, second) = (num(&clock[..2])?, num(&clock[2..4])?, num(&clock[4..])?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    // Reject dates such as February 31 that the arithmetic would roll into the next month.
    if civil_from_days(days) != (year, month, day) {
        return None;
    }
    let secs = days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Year, month and day of the `days`th day after 1970-01-01 (proleptic Gregorian calendar).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Counted from 0000-03-01, so that the leap day ends each 4-year cycle.
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`]; `None` before 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let year = if month <= 2 {
        year.checked_sub(1)?
    } else {
        year
    };
    let era = year / 400;
    let year_of_era = year % 400;
    let month_index = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era).checked_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn formats_utc_to_the_second() {
        assert_eq!(kid_at(at(0)), "k19700101T000000Z");
        // 2024-02-29 23:59:59 UTC, a leap day.
        assert_eq!(kid_at(at(1_709_251_199)), "k20240229T235959Z");
        assert_eq!(kid_at(at(1_748_779_200)), "k20250601T120000Z");
    }

    #[test]
    fn reads_back_what_it_writes() {
        for secs in [0, 59, 86_399, 951_782_400, 1_709_251_199, 4_102_444_800] {
            let kid = kid_at(at(secs));
            assert_eq!(time_of(&kid), Some(at(secs)), "{kid}");
        }
    }

    #[test]
    fn fits_the_keyring_kid_rules() {
        let kid = kid_at(SystemTime::now());
        assert!(kid.len() <= reconcile_core::keyring::MAX_KID_LEN);
        assert!(kid.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn other_ids_have_no_time() {
        for kid in [
            "k1",
            "prod-2025",
            "k20250601",
            "k20250601T120000",
            "k20251301T000000Z",
            "k20250231T000000Z",
            "k20250601T246000Z",
            "k2025060xT120000Z",
        ] {
            assert_eq!(time_of(kid), None, "{kid}");
        }
    }
}
