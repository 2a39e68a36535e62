//! S3 prices and billing rules per storage class, for cost estimates:
//! storage in US dollars per GB-month (GB = 2^30 bytes, as AWS bills), the
//! price of a transition request into a class (per 1,000 requests), the
//! minimum storage duration, the minimum billable object size and the
//! per-object archive overhead. The prices default to the published
//! us-east-1 ones (first 50 TB tier); a deployment overrides any of them with
//! `CLASS=price` pairs. The rules are AWS's and are not configurable.

use std::{collections::BTreeMap, fmt, str::FromStr};

/// Bytes in the GB that S3 bills by.
pub const BYTES_PER_GB: f64 = (1u64 << 30) as f64;

/// The storage class S3 reports when none is named.
pub const STANDARD: &str = "STANDARD";

/// Published us-east-1 storage prices, USD per GB-month.
const US_EAST_1: [(&str, f64); 9] = [
    ("STANDARD", 0.023),
    ("INTELLIGENT_TIERING", 0.023),
    ("STANDARD_IA", 0.0125),
    ("ONEZONE_IA", 0.01),
    ("GLACIER_IR", 0.004),
    ("GLACIER", 0.0036),
    ("DEEP_ARCHIVE", 0.00099),
    ("REDUCED_REDUNDANCY", 0.024),
    ("EXPRESS_ONEZONE", 0.11),
];

/// Published us-east-1 prices of lifecycle transition requests into a class,
/// USD per 1,000 requests. A copy onto itself with a new class is billed as
/// a PUT/COPY request of the destination class, at the same price.
const US_EAST_1_TRANSITIONS: [(&str, f64); 6] = [
    ("STANDARD_IA", 0.01),
    ("ONEZONE_IA", 0.01),
    ("INTELLIGENT_TIERING", 0.01),
    ("GLACIER_IR", 0.02),
    ("GLACIER", 0.03),
    ("DEEP_ARCHIVE", 0.05),
];

/// Every storage class S3 names, the ones a price may be given for.
const CLASSES: [&str; 12] = [
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "OUTPOSTS",
    "GLACIER_IR",
    "SNOW",
    "EXPRESS_ONEZONE",
    "FSX_OPENZFS",
];

/// Bytes in a KB as S3's billing rules count them.
const KB: u64 = 1024;

/// The extra bytes S3 bills for every object in an archive class: metadata
/// it keeps so the object can be listed and restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArchiveOverhead {
    /// Billed at the Standard rate (object name and metadata).
    pub standard_bytes: u64,
    /// Billed at the archive class's rate (index and related metadata).
    pub class_bytes: u64,
}

/// Days an object is billed for at least once it is in `class`, however
/// soon it is deleted, overwritten or moved: 30 for the infrequent-access
/// classes, 90 for Glacier Instant and Flexible Retrieval, 180 for Deep
/// Archive, none otherwise.
pub fn min_storage_days(class: &str) -> u32 {
    match class {
        "STANDARD_IA" | "ONEZONE_IA" => 30,
        "GLACIER_IR" | "GLACIER" => 90,
        "DEEP_ARCHIVE" => 180,
        _ => 0,
    }
}

/// The smallest size S3 bills an object of `class` for: 128 KB for the
/// infrequent-access classes and Glacier Instant Retrieval.
pub fn min_billable_bytes(class: &str) -> u64 {
    match class {
        "STANDARD_IA" | "ONEZONE_IA" | "GLACIER_IR" => 128 * KB,
        _ => 0,
    }
}

/// The overhead S3 bills for every object of `class`: 40 KB for Glacier
/// Flexible Retrieval and Deep Archive (8 KB at Standard rates, 32 KB at the
/// archive rate), nothing otherwise.
pub fn archive_overhead(class: &str) -> ArchiveOverhead {
    match class {
        "GLACIER" | "DEEP_ARCHIVE" => ArchiveOverhead {
            standard_bytes: 8 * KB,
            class_bytes: 32 * KB,
        },
        _ => ArchiveOverhead::default(),
    }
}

/// Storage and transition prices by class.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    per_gb_month: BTreeMap<String, f64>,
    transition_per_1000: BTreeMap<String, f64>,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self {
            per_gb_month: US_EAST_1
                .iter()
                .map(|(class, price)| (class.to_string(), *price))
                .collect(),
            transition_per_1000: US_EAST_1_TRANSITIONS
                .iter()
                .map(|(class, price)| (class.to_string(), *price))
                .collect(),
        }
    }
}

impl PriceTable {
    /// USD per GB-month for `class`; a class the table does not know is
    /// priced as Standard, which never under-estimates a warm object.
    pub fn per_gb_month(&self, class: &str) -> f64 {
        self.per_gb_month
            .get(class)
            .or_else(|| self.per_gb_month.get(STANDARD))
            .copied()
            .unwrap_or(0.0)
    }

    /// USD a month for `bytes` stored in `class`.
    pub fn monthly(&self, class: &str, bytes: u64) -> f64 {
        bytes as f64 / BYTES_PER_GB * self.per_gb_month(class)
    }

    /// USD per 1,000 transition requests into `class`; a class the table
    /// does not know is priced as Deep Archive, the dearest, so an unknown
    /// class never looks cheap to move to.
    pub fn transition_per_1000(&self, class: &str) -> f64 {
        self.transition_per_1000
            .get(class)
            .or_else(|| self.transition_per_1000.get("DEEP_ARCHIVE"))
            .copied()
            .unwrap_or(0.0)
    }

    /// USD for `requests` transition requests into `class`.
    pub fn transition(&self, class: &str, requests: u64) -> f64 {
        requests as f64 * self.transition_per_1000(class) / 1000.0
    }

    /// Replaces transition prices with `CLASS=usd_per_1000` pairs,
    /// comma-separated, e.g. `GLACIER=0.036`. An empty string changes nothing.
    pub fn override_transitions(&mut self, overrides: &str) -> Result<(), BadPrice> {
        for (class, price) in parse_pairs(overrides)? {
            self.transition_per_1000.insert(class, price);
        }
        Ok(())
    }

    /// USD a month for bytes split by storage class, rounded to a millionth
    /// of a dollar.
    pub fn monthly_total<'a>(&self, by_class: impl IntoIterator<Item = (&'a str, u64)>) -> f64 {
        // A fold from +0.0: `sum()` of nothing is -0.0, which reads oddly.
        let total = by_class.into_iter().fold(0.0, |total, (class, bytes)| {
            total + self.monthly(class, bytes)
        });
        (total * 1e6).round() / 1e6
    }
}

/// A price override that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadPrice(String);

impl FromStr for PriceTable {
    type Err = BadPrice;

    /// The defaults with `CLASS=price` overrides, comma-separated, e.g.
    /// `STANDARD=0.025,GLACIER=0.004`. An empty string is the defaults.
    fn from_str(overrides: &str) -> Result<Self, Self::Err> {
        let mut table = Self::default();
        for (class, price) in parse_pairs(overrides)? {
            table.per_gb_month.insert(class, price);
        }
        Ok(table)
    }
}

/// Parses comma-separated `CLASS=price` pairs.
fn parse_pairs(overrides: &str) -> Result<Vec<(String, f64)>, BadPrice> {
    let mut pairs = Vec::new();
    for pair in overrides
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (class, price) = pair
            .split_once('=')
            .ok_or_else(|| BadPrice(format!("expected CLASS=price, got {pair:?}")))?;
        let class = class.trim();
        if !CLASSES.contains(&class) {
            return Err(BadPrice(format!(
                "{class:?} is not an S3 storage class; one of {}",
                CLASSES.join(", ")
            )));
        }
        if pairs.iter().any(|(named, _)| named == class) {
            return Err(BadPrice(format!("{class} is priced twice")));
        }
        let price: f64 = price
            .trim()
            .parse()
            .ok()
            .filter(|p: &f64| p.is_finite() && *p >= 0.0)
            .ok_or_else(|| BadPrice(format!("price of {class} must be a non-negative number")))?;
        pairs.push((class.to_string(), price));
    }
    Ok(pairs)
}

impl fmt::Display for PriceTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs: Vec<String> = self
            .per_gb_month
            .iter()
            .map(|(class, price)| format!("{class}={price}"))
            .collect();
        f.write_str(&pairs.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_gb_a_month_costs_the_published_price() {
        let table = PriceTable::default();
        assert_eq!(table.monthly("STANDARD", 1 << 30), 0.023);
        assert_eq!(table.monthly("DEEP_ARCHIVE", 1 << 30), 0.00099);
        assert_eq!(table.monthly("SOMETHING_NEW", 1 << 30), 0.023);
    }

    #[test]
    fn totals_add_up_the_classes() {
        let table = PriceTable::default();
        let total = table.monthly_total([("STANDARD", 10u64 << 30), ("GLACIER", 100u64 << 30)]);
        assert_eq!(total, 0.59);
        let nothing = table.monthly_total([]);
        assert!(nothing == 0.0 && nothing.is_sign_positive(), "{nothing}");
    }

    #[test]
    fn overrides_replace_single_prices() {
        let table: PriceTable = "STANDARD=0.03, GLACIER_IR=0.005".parse().unwrap();
        assert_eq!(table.per_gb_month("STANDARD"), 0.03);
        assert_eq!(table.per_gb_month("GLACIER_IR"), 0.005);
        assert_eq!(table.per_gb_month("GLACIER"), 0.0036);
        assert_eq!("".parse::<PriceTable>().unwrap(), PriceTable::default());
        assert_eq!(table.to_string().parse::<PriceTable>().unwrap(), table);
    }

    #[test]
    fn transitions_cost_the_published_price_per_thousand() {
        let mut table = PriceTable::default();
        assert_eq!(table.transition("GLACIER", 1000), 0.03);
        assert_eq!(table.transition("DEEP_ARCHIVE", 2000), 0.1);
        assert_eq!(table.transition_per_1000("GLACIER_IR"), 0.02);
        assert_eq!(table.transition_per_1000("SOMETHING_NEW"), 0.05);
        table.override_transitions("GLACIER=0.036").unwrap();
        assert_eq!(table.transition_per_1000("GLACIER"), 0.036);
        assert_eq!(table.per_gb_month("GLACIER"), 0.0036, "storage unchanged");
        assert!(table.override_transitions("GLACIER=-1").is_err());
    }

    #[test]
    fn archive_rules_follow_the_class() {
        assert_eq!(
            (min_storage_days("GLACIER_IR"), min_storage_days("GLACIER")),
            (90, 90)
        );
        assert_eq!(min_storage_days("DEEP_ARCHIVE"), 180);
        assert_eq!(min_storage_days("STANDARD"), 0);
        assert_eq!(
            archive_overhead("GLACIER"),
            ArchiveOverhead {
                standard_bytes: 8192,
                class_bytes: 32768
            }
        );
        assert_eq!(archive_overhead("DEEP_ARCHIVE").class_bytes, 32768);
        assert_eq!(archive_overhead("GLACIER_IR"), ArchiveOverhead::default());
        assert_eq!(min_billable_bytes("GLACIER_IR"), 131072);
        assert_eq!(min_billable_bytes("GLACIER"), 0);
    }

    #[test]
    fn bad_overrides_are_refused() {
        for bad in [
            "STANDARD",
            "STANDARD=-1",
            "STANDARD=abc",
            "standard=1",
            "=1",
            "X=NaN",
            // A misspelt or unknown class would never be read: the default
            // price would stay in force unnoticed.
            "STANDRAD=0.03",
            "GLACIER_FLEXIBLE_RETRIEVAL=0.004",
            "STANDARD=0.03,STANDARD=0.02",
        ] {
            assert!(bad.parse::<PriceTable>().is_err(), "{bad}");
            assert!(
                PriceTable::default().override_transitions(bad).is_err(),
                "{bad}"
            );
        }
        assert!("OUTPOSTS=0.05".parse::<PriceTable>().is_ok());
    }
}
