//! `stowctl tier`: what the next sweep would do (`plan`), doing it (`run`),
//! recomputing a user's due dates after their policy changed (`reindex`),
//! and bringing objects the service never heard of into its projection
//! (`backfill`). The sweep is the lifecycle service's own
//! ([`stowage_lifecycle::sweep::Sweeper`]), configured by the same
//! `STOWAGE_*` variables.

use stowage_lifecycle::sweep::{BackfillReport, SweepReport, TierPlan};

/// A byte count the way people read it.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn dollars(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |v| format!("${v:.6}"))
}

/// What a backfill did, in a sentence.
pub fn backfill_summary(report: &BackfillReport) -> String {
    format!(
        "Looked at {} object(s): {} added to the lifecycle projection, {} known already, {} deleted meanwhile.",
        report.listed, report.added, report.known, report.gone
    )
}

/// The plan as an operator reads it: one row per due object, then totals.
pub fn plan_table(plan: &TierPlan) -> String {
    if plan.objects.is_empty() {
        return format!("Nothing is due at {}.", plan.at);
    }
    let mut table = comfy_table::Table::new();
    table.set_header([
        "user",
        "key",
        "size",
        "class",
        "action",
        "saving/month",
        "reason",
    ]);
    for o in &plan.objects {
        table.add_row([
            o.user.clone(),
            o.key.clone(),
            bytes(o.size),
            format!("{} -> {}", o.storage_class, o.target),
            o.action.to_string(),
            dollars(o.monthly_saving_usd),
            o.reason.clone(),
        ]);
    }
    format!(
        "{table}\nAt {}: {} of {} due object(s) to tier, {}, saving about ${:.6} a month.",
        plan.at,
        plan.to_tier,
        plan.objects.len(),
        bytes(plan.bytes_to_tier),
        plan.monthly_saving_usd
    )
}

/// What a sweep did, one row per object, then totals.
pub fn report_table(report: &SweepReport) -> String {
    if report.objects.is_empty() {
        return format!("Nothing was due at {}.", report.at);
    }
    let mut table = comfy_table::Table::new();
    table.set_header([
        "user",
        "key",
        "size",
        "class",
        "outcome",
        "saving/month",
        "reason",
    ]);
    for o in &report.objects {
        let p = &o.planned;
        table.add_row([
            p.user.clone(),
            p.key.clone(),
            bytes(p.size),
            format!("{} -> {}", p.storage_class, p.target),
            o.outcome.to_string(),
            dollars(p.monthly_saving_usd),
            o.error.clone().unwrap_or_else(|| p.reason.clone()),
        ]);
    }
    format!(
        "{table}\nTiered {} object(s), {}, saving about ${:.6} a month; {} skipped, {} postponed, {} changed since planned, {} failed.",
        report.tiered,
        bytes(report.tiered_bytes),
        report.monthly_saving_usd,
        report.skipped,
        report.postponed,
        report.changed,
        report.failed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(6 << 30), "6.0 GiB");
    }
}
