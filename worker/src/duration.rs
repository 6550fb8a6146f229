//! Durations in settings: `30s`, `200ms`, `15m`, `1h`, or combinations such as `1m 30s`.
//!
//! Both functions fit clap's `value_parser`.

use std::time::Duration;

/// Why a duration setting was refused.
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    /// The text is not a number followed by a unit.
    #[error("invalid duration {text:?}: {reason} (expected e.g. 30s, 200ms, 15m, 1h)")]
    Invalid { text: String, reason: String },
    /// The text parsed to zero where a wait or a lifetime needs a positive value.
    #[error("duration {0:?} must be greater than zero")]
    Zero(String),
}

/// Parses a duration with a unit; a bare number is refused, since its unit would be a guess.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(text.trim()).map_err(|err| DurationError::Invalid {
        text: text.to_string(),
        reason: err.to_string(),
    })
}

/// Like [`parse`], and refuses zero: for intervals, timeouts and lease lifetimes.
pub fn parse_positive(text: &str) -> Result<Duration, DurationError> {
    let duration = parse(text)?;
    if duration.is_zero() {
        return Err(DurationError::Zero(text.to_string()));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_units_settings_use() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse(" 1m 30s ").unwrap(), Duration::from_secs(90));
    }

    #[test]
    fn refuses_text_without_a_unit_or_number() {
        for text in ["", "30", "s", "ten seconds", "-5s", "1.5.s"] {
            assert!(parse(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn parse_positive_refuses_zero() {
        assert!(matches!(parse_positive("0s"), Err(DurationError::Zero(_))));
        assert_eq!(parse_positive("1ms").unwrap(), Duration::from_millis(1));
    }
}
