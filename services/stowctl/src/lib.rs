//! stowctl's operations, as functions that return what the commands print, so
//! that the end-to-end tests check the same tables and JSON an operator sees.
//! `main.rs` parses the command line and prints.
//!
//! # Layout
//! - [`accounts`]: a user's usage and quota (`usage`, `quota set`).
//! - [`queues`]: the consumers' queues and dead-letter queues (`queues`,
//!   `dlq peek`, `dlq redrive`).
//! - [`replay`]: events of a time window sent again from the bus's archive.
//! - [`errors`]: failed AWS calls explained.
//! - [`settings`]: which settings file is read, and missing settings.
//! - [`tier`]: the lifecycle service's sweeps (`tier plan`, `tier run`,
//!   `tier reindex`).

pub mod accounts;
pub mod errors;
pub mod queues;
pub mod replay;
pub mod settings;
pub mod tier;

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Parses a point in time: RFC 3339 (`2026-12-01T10:00:00Z`), `now`, or a
/// time relative to now such as `-90m`, `-1h`, `+90d` (`s`, `m`, `h`, `d`).
pub fn parse_time(value: &str) -> Result<OffsetDateTime, String> {
    parse_time_at(value, OffsetDateTime::now_utc())
}

fn parse_time_at(value: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    if value == "now" {
        return Ok(now);
    }
    let relative = match value.as_bytes().first() {
        Some(b'-') => Some(-1),
        Some(b'+') => Some(1),
        _ => None,
    };
    if let Some(sign) = relative {
        let amount = &value[1..];
        let shifted = [("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
            .into_iter()
            .find_map(|(unit, seconds)| Some((amount.strip_suffix(unit)?, seconds)))
            .and_then(|(count, seconds)| {
                let count = count.parse::<i64>().ok().filter(|c| *c >= 0)?;
                let seconds = count.checked_mul(seconds)?.checked_mul(sign)?;
                now.checked_add(time::Duration::seconds(seconds))
            });
        return shifted.ok_or_else(|| {
            format!(
                "{value:?} is not a time: use RFC 3339, `now` or e.g. `-1h`, `+90d` (units s, m, h, d)"
            )
        });
    }
    OffsetDateTime::parse(value, &Rfc3339)
        .map(|t| t.to_offset(time::UtcOffset::UTC))
        .map_err(|e| {
            format!("{value:?} is not an RFC 3339 time ({e}); or use `now` or e.g. `-1h`, `+90d`")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_now_or_a_time_ago() {
        let now = OffsetDateTime::parse("2026-12-01T10:00:00Z", &Rfc3339).unwrap();
        let at = |v| parse_time_at(v, now).map(|t| t.format(&Rfc3339).unwrap());
        assert_eq!(at("now").unwrap(), "2026-12-01T10:00:00Z");
        assert_eq!(at("-90m").unwrap(), "2026-12-01T08:30:00Z");
        assert_eq!(at("-1h").unwrap(), "2026-12-01T09:00:00Z");
        assert_eq!(at("-2d").unwrap(), "2026-11-29T10:00:00Z");
        assert_eq!(at("-30s").unwrap(), "2026-12-01T09:59:30Z");
        assert_eq!(at("+90d").unwrap(), "2027-03-01T10:00:00Z");
        assert_eq!(
            at("2026-11-30T23:00:00+01:00").unwrap(),
            "2026-11-30T22:00:00Z"
        );
        for bad in [
            "-1w",
            "-h",
            "+-1d",
            "yesterday",
            "2026-12-01",
            "-",
            "+",
            "",
            "-1é",
            "-9999999999d",
            "+106751991167301d",
            "+99999999999999999999d",
        ] {
            assert!(at(bad).is_err(), "{bad}");
        }
    }
}
