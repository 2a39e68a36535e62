//! The cost model: whether moving one object to an archive class pays off.
//!
//! A transition is worth it when the storage it saves over the target
//! class's minimum storage duration (the least the object will be billed
//! for there, however soon it is read back, deleted or overwritten) exceeds
//! what the transition requests cost. The storage after the move counts the
//! class's minimum billable size and its per-object archive overhead. A month
//! is 30 days here, so 90 days are 3 months.

use stowage_shared::pricing::{
    PriceTable, STANDARD, archive_overhead, min_billable_bytes, min_storage_days,
};

/// Days in the month the estimates use.
pub const DAYS_PER_MONTH: f64 = 30.0;

/// What one transition costs and saves, in US dollars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Storage a month where the object is now.
    pub monthly_before: f64,
    /// Storage a month in the target class, overhead included.
    pub monthly_after: f64,
    /// `monthly_before - monthly_after`; negative when the move costs more.
    pub monthly_saving: f64,
    /// The transition requests.
    pub transition_cost: f64,
    /// The target class's minimum storage duration.
    pub horizon_days: u32,
    /// Saving over the horizon minus the transition: positive when the
    /// move pays off.
    pub net_over_horizon: f64,
}

impl Estimate {
    /// True when the move saves more than it costs within the horizon.
    pub fn pays_off(&self) -> bool {
        self.net_over_horizon > 0.0
    }
}

/// Estimates moving `size` bytes from `from` to `to` with `requests`
/// transition requests (one for a copy, parts plus two for a multipart copy).
pub fn estimate(prices: &PriceTable, size: u64, from: &str, to: &str, requests: u64) -> Estimate {
    let monthly_before = prices.monthly(from, size.max(min_billable_bytes(from)));
    let overhead = archive_overhead(to);
    let monthly_after = prices.monthly(to, size.max(min_billable_bytes(to)) + overhead.class_bytes)
        + prices.monthly(STANDARD, overhead.standard_bytes);
    let monthly_saving = monthly_before - monthly_after;
    let transition_cost = prices.transition(to, requests);
    let horizon_days = min_storage_days(to).max(1);
    let net_over_horizon =
        monthly_saving * f64::from(horizon_days) / DAYS_PER_MONTH - transition_cost;
    Estimate {
        monthly_before,
        monthly_after,
        monthly_saving,
        transition_cost,
        horizon_days,
        net_over_horizon,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const KIB: u64 = 1 << 10;

    fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < 1e-15,
            "{actual} is not {expected}"
        );
    }

    #[test]
    fn one_gib_to_glacier() {
        let e = estimate(&PriceTable::default(), GIB, "STANDARD", "GLACIER", 1);
        // Before: 1 GiB at 0.023.
        close(e.monthly_before, 0.023);
        // After: (1 GiB + 32 KiB) at 0.0036 plus 8 KiB at 0.023:
        // 0.0036 + 32768/2^30 * 0.0036 + 8192/2^30 * 0.023
        // = 0.0036 + 0.00000010986328125 + 0.00000017547607421875.
        close(e.monthly_after, 0.003_600_285_339_355_5);
        close(e.monthly_saving, 0.019_399_714_660_644_5);
        // One request at 0.03 per 1,000.
        close(e.transition_cost, 0.000_03);
        assert_eq!(e.horizon_days, 90);
        // Three months of saving less the request.
        close(e.net_over_horizon, 0.019_399_714_660_644_5 * 3.0 - 0.000_03);
        assert!(e.pays_off());
    }

    #[test]
    fn a_small_object_costs_more_in_glacier_than_it_saves() {
        // 100 KiB: before 102400/2^30 * 0.023 = 0.000002193450927734375;
        // after (102400 + 32768)/2^30 * 0.0036 + 8192/2^30 * 0.023
        // = 0.00000045318603515625 + 0.00000017547607421875
        // = 0.000000628662109375; saving 0.000001564788818359375 a month,
        // 0.000004694366455078125 over 3 months, less than the 0.00003 request.
        let e = estimate(&PriceTable::default(), 100 * KIB, "STANDARD", "GLACIER", 1);
        close(e.monthly_before, 0.000_002_193_450_927_734_4);
        close(e.monthly_after, 0.000_000_628_662_109_375);
        close(e.monthly_saving, 0.000_001_564_788_818_359_375);
        close(e.net_over_horizon, 0.000_004_694_366_455_078_125 - 0.000_03);
        assert!(!e.pays_off());
    }

    #[test]
    fn glacier_breaks_even_near_556_kib_of_standard() {
        // saving(S) * 3 = 0.00003 where saving(S) = S/2^30 * (0.023 - 0.0036)
        // - (32768 * 0.0036 + 8192 * 0.023)/2^30, i.e.
        // S = (0.00001 * 2^30 + 306.3808) / 0.0194 = 569_268 bytes.
        let prices = PriceTable::default();
        assert!(!estimate(&prices, 569_000, "STANDARD", "GLACIER", 1).pays_off());
        assert!(estimate(&prices, 569_500, "STANDARD", "GLACIER", 1).pays_off());
    }

    #[test]
    fn glacier_ir_bills_at_least_128_kib_and_has_no_overhead() {
        // 64 KiB: before 65536/2^30 * 0.023 = 0.00000140380859375; after
        // 131072/2^30 * 0.004 = 0.00000048828125; saving 0.00000091552734375
        // a month, 0.00000274658203125 over 3 months < 0.00002.
        let e = estimate(
            &PriceTable::default(),
            64 * KIB,
            "STANDARD",
            "GLACIER_IR",
            1,
        );
        close(e.monthly_after, 0.000_000_488_281_25);
        close(e.monthly_saving, 0.000_000_915_527_343_75);
        close(e.transition_cost, 0.000_02);
        assert!(!e.pays_off());
        // 10 MiB: saving 10/1024 * (0.023 - 0.004) = 0.0001855... a month.
        let e = estimate(
            &PriceTable::default(),
            10 << 20,
            "STANDARD",
            "GLACIER_IR",
            1,
        );
        close(e.monthly_saving, 10.0 / 1024.0 * 0.019);
        assert!(e.pays_off());
    }

    #[test]
    fn deep_archive_counts_six_months_and_every_multipart_request() {
        // 6 GiB in 12 parts of 512 MiB: 14 requests at 0.05 per 1,000.
        let e = estimate(
            &PriceTable::default(),
            6 * GIB,
            "STANDARD",
            "DEEP_ARCHIVE",
            14,
        );
        close(e.transition_cost, 0.0007);
        assert_eq!(e.horizon_days, 180);
        // (6 GiB + 32 KiB) at 0.00099 plus 8 KiB at 0.023.
        let after = 6.0 * 0.00099 + 32768.0 / GIB as f64 * 0.00099 + 8192.0 / GIB as f64 * 0.023;
        close(e.monthly_after, after);
        close(e.net_over_horizon, (6.0 * 0.023 - after) * 6.0 - 0.0007);
    }

    #[test]
    fn a_configured_price_table_changes_the_verdict() {
        // With Glacier priced like Standard nothing is saved.
        let prices: PriceTable = "GLACIER=0.023".parse().unwrap();
        assert!(!estimate(&prices, GIB, "STANDARD", "GLACIER", 1).pays_off());
    }
}
