//! S3 storage prices per storage class, in US dollars per GB-month (GB =
//! 2^30 bytes, as AWS bills), for cost estimates. The defaults are the
//! published us-east-1 prices (first 50 TB tier); a deployment overrides any
//! of them with `CLASS=price` pairs.

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

/// Storage prices by class.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    per_gb_month: BTreeMap<String, f64>,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self {
            per_gb_month: US_EAST_1
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
        for pair in overrides
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (class, price) = pair
                .split_once('=')
                .ok_or_else(|| BadPrice(format!("expected CLASS=price, got {pair:?}")))?;
            let class = class.trim();
            let valid_class = !class.is_empty()
                && class
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !valid_class {
                return Err(BadPrice(format!(
                    "storage class {class:?} must be an S3 class name such as GLACIER_IR"
                )));
            }
            let price: f64 = price
                .trim()
                .parse()
                .ok()
                .filter(|p: &f64| p.is_finite() && *p >= 0.0)
                .ok_or_else(|| {
                    BadPrice(format!("price of {class} must be a non-negative number"))
                })?;
            table.per_gb_month.insert(class.to_string(), price);
        }
        Ok(table)
    }
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
    fn bad_overrides_are_refused() {
        for bad in [
            "STANDARD",
            "STANDARD=-1",
            "STANDARD=abc",
            "standard=1",
            "=1",
            "X=NaN",
        ] {
            assert!(bad.parse::<PriceTable>().is_err(), "{bad}");
        }
    }
}
