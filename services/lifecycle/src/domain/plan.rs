//! What a sweep does with one object the index says is due, and why.

use stowage_shared::pricing::PriceTable;

use super::{
    DAY,
    cost::{DAYS_PER_MONTH, Estimate, estimate},
    policy::{ArchiveClass, Policy},
    projection::{Encryption, ObjectRecord, Verdict},
};

/// The verdict of a transition whose copy failed.
pub const FAILED: &str = "failed";

/// S3's smallest part (all but the last) and most parts of a multipart copy.
pub const MIN_PART_SIZE: u64 = 5 << 20;
const MAX_PARTS: u64 = 10_000;

/// How objects are copied: in one `CopyObject` up to the threshold (S3
/// copies at most 5 GiB at once), in parts above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyPlan {
    pub multipart_threshold: u64,
    pub part_size: u64,
}

impl CopyPlan {
    /// The byte ranges (first and last byte, inclusive) of a multipart copy
    /// of `size` bytes, or `None` when one `CopyObject` does. Parts are at
    /// least 5 MiB and grow when 10,000 would not cover the object.
    pub fn parts(&self, size: u64) -> Option<Vec<(u64, u64)>> {
        if size <= self.multipart_threshold || size == 0 {
            return None;
        }
        let part = self
            .part_size
            .max(MIN_PART_SIZE)
            .max(size.div_ceil(MAX_PARTS));
        Some(
            (0..size)
                .step_by(part as usize)
                .map(|start| (start, (start + part).min(size) - 1))
                .collect(),
        )
    }

    /// S3 requests a copy of `size` bytes takes: one, or parts plus the
    /// create and complete calls.
    pub fn requests(&self, size: u64) -> u64 {
        self.parts(size).map_or(1, |p| p.len() as u64 + 2)
    }
}

/// What to do with a due object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Copy it to the target class.
    Tier,
    /// Leave it, and look again at `next_due` (or never, when `None`).
    Skip,
    /// Not due under the policy in force (read meanwhile, or the user's
    /// days were raised): look again at `next_due`.
    Postpone,
}

/// A sweep's decision on one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub action: Action,
    /// A stable name for counting: `cold`, `too_small`, `costs_more`,
    /// `customer_key`, `not_candidate` or `not_due`.
    pub reason_code: &'static str,
    /// The reason in words, with the figures behind it.
    pub reason: String,
    pub target: ArchiveClass,
    /// The cost model's figures, when it was asked.
    pub estimate: Option<Estimate>,
    /// When to look at the object again; `None` takes it out of the index.
    pub next_due: Option<i64>,
}

/// Decides what to do at `now` with `record`, which the index says is due.
pub fn decide(
    record: &ObjectRecord,
    policy: &Policy,
    prices: &PriceTable,
    copy: &CopyPlan,
    now: i64,
    recheck_days: u32,
) -> Decision {
    let target = policy.target;
    let recheck = Some(now + i64::from(recheck_days.max(1)) * DAY);
    let decision = |action, reason_code, reason: String, estimate, next_due| Decision {
        action,
        reason_code,
        reason,
        target,
        estimate,
        next_due,
    };
    if !record.is_candidate() {
        return decision(
            Action::Skip,
            "not_candidate",
            format!("{} objects are not tiered", record.storage_class),
            None,
            None,
        );
    }
    let idle_days = (now - record.cold_since()).max(0) / DAY;
    match record.due_at(policy.cold_after_days) {
        Some(due) if due > now => {
            return decision(
                Action::Postpone,
                "not_due",
                format!("idle for {idle_days} of {} days", policy.cold_after_days),
                None,
                Some(due),
            );
        }
        _ => {}
    }
    if record.encryption == Encryption::CustomerKey {
        return decision(
            Action::Skip,
            "customer_key",
            "encrypted with a customer-provided key (SSE-C), which a copy needs".into(),
            None,
            recheck,
        );
    }
    if record.size < policy.min_size {
        return decision(
            Action::Skip,
            "too_small",
            format!(
                "{} bytes is below the {} byte minimum",
                record.size, policy.min_size
            ),
            None,
            recheck,
        );
    }
    let e = estimate(
        prices,
        record.size,
        &record.storage_class,
        target.as_str(),
        copy.requests(record.size),
    );
    if !e.pays_off() {
        return decision(
            Action::Skip,
            "costs_more",
            format!(
                "saves ${:.8} over the {}-day minimum of {target} (overhead counted), less than the ${:.6} transition",
                (e.monthly_saving * f64::from(e.horizon_days) / DAYS_PER_MONTH).max(0.0),
                e.horizon_days,
                e.transition_cost
            ),
            Some(e),
            recheck,
        );
    }
    let payback_days = (e.transition_cost / (e.monthly_saving / DAYS_PER_MONTH)).ceil();
    decision(
        Action::Tier,
        "cold",
        format!(
            "idle for {idle_days} days; saves ${:.6} a month, the ${:.6} transition paid back in {payback_days} days",
            e.monthly_saving, e.transition_cost
        ),
        Some(e),
        None,
    )
}

/// When to try again, after a copy that failed at `now`, the transition of
/// an object whose last verdict was `previous`: a day later after a first
/// failure, and twice as long as the last wait after each failure in a row
/// since, but never later than `recheck_days` (what a skip waits). A copy
/// that keeps failing (S3 refuses it, the key is denied to the service)
/// thus costs a request now and then instead of one at every sweep, and a
/// failure that passes costs a day's wait.
pub fn retry_at(previous: Option<&Verdict>, now: i64, recheck_days: u32) -> i64 {
    let longest = i64::from(recheck_days.max(1)) * DAY;
    let wait = match previous {
        Some(Verdict {
            outcome,
            at,
            recheck_at: Some(retry),
            ..
        }) if outcome == FAILED => retry.saturating_sub(*at).saturating_mul(2),
        _ => DAY,
    };
    now.saturating_add(wait.clamp(DAY.min(longest), longest))
}

#[cfg(test)]
mod tests {
    use stowage_events::sequencer::Sequencer;

    use super::*;
    use crate::domain::projection::{Restore, STANDARD};

    const COPY: CopyPlan = CopyPlan {
        multipart_threshold: 5 << 30,
        part_size: 512 << 20,
    };

    fn record(size: u64, created_at: i64) -> ObjectRecord {
        ObjectRecord {
            live: true,
            size,
            storage_class: STANDARD.into(),
            etag: Some("e".into()),
            encryption: Encryption::S3Managed,
            created_at,
            last_access: None,
            restore: Restore::None,
            sequencer: Sequencer::lowest(),
            applied: vec![],
            verdict: None,
        }
    }

    fn policy(min_size: u64) -> Policy {
        Policy {
            cold_after_days: 90,
            target: ArchiveClass::Glacier,
            min_size,
        }
    }

    #[test]
    fn a_cold_large_object_is_tiered() {
        let d = decide(
            &record(1 << 30, 0),
            &policy(0),
            &PriceTable::default(),
            &COPY,
            100 * DAY,
            30,
        );
        assert_eq!((d.action, d.reason_code), (Action::Tier, "cold"));
        assert!(
            d.reason
                .starts_with("idle for 100 days; saves $0.019400 a month"),
            "{}",
            d.reason
        );
        assert_eq!(d.next_due, None);
    }

    #[test]
    fn small_and_unprofitable_objects_are_skipped_until_their_recheck() {
        let prices = PriceTable::default();
        let d = decide(
            &record(1000, 0),
            &policy(4096),
            &prices,
            &COPY,
            100 * DAY,
            30,
        );
        assert_eq!((d.action, d.reason_code), (Action::Skip, "too_small"));
        assert_eq!(d.reason, "1000 bytes is below the 4096 byte minimum");
        assert_eq!(d.next_due, Some(130 * DAY));
        let d = decide(
            &record(100 << 10, 0),
            &policy(0),
            &prices,
            &COPY,
            100 * DAY,
            30,
        );
        assert_eq!((d.action, d.reason_code), (Action::Skip, "costs_more"));
        assert!(
            d.reason.contains("90-day minimum of GLACIER"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn an_object_read_since_it_was_indexed_is_postponed() {
        let mut r = record(1 << 30, 0);
        r.last_access = Some(50 * DAY);
        let d = decide(&r, &policy(0), &PriceTable::default(), &COPY, 100 * DAY, 30);
        assert_eq!((d.action, d.next_due), (Action::Postpone, Some(140 * DAY)));
        assert_eq!(d.reason, "idle for 50 of 90 days");
    }

    #[test]
    fn customer_keys_and_other_classes_are_left_alone() {
        let mut r = record(1 << 30, 0);
        r.encryption = Encryption::CustomerKey;
        let d = decide(&r, &policy(0), &PriceTable::default(), &COPY, 100 * DAY, 30);
        assert_eq!(d.reason_code, "customer_key");
        r.storage_class = "GLACIER".into();
        let d = decide(&r, &policy(0), &PriceTable::default(), &COPY, 100 * DAY, 30);
        assert_eq!((d.reason_code, d.next_due), ("not_candidate", None));
    }

    #[test]
    fn failed_copies_wait_longer_after_each_failure_in_a_row() {
        let failed = |at: i64, retry: i64| Verdict {
            outcome: FAILED.into(),
            reason: "AccessDenied".into(),
            at,
            recheck_at: Some(retry),
        };
        assert_eq!(retry_at(None, 100 * DAY, 30), 101 * DAY);
        let first = failed(100 * DAY, 101 * DAY);
        assert_eq!(retry_at(Some(&first), 101 * DAY, 30), 103 * DAY);
        let second = failed(101 * DAY, 103 * DAY);
        assert_eq!(retry_at(Some(&second), 103 * DAY, 30), 107 * DAY);
        // Never longer than a skip waits.
        let long = failed(100 * DAY, 120 * DAY);
        assert_eq!(retry_at(Some(&long), 120 * DAY, 30), 150 * DAY);
        // Another verdict before it: the first failure in a row.
        let skipped = Verdict {
            outcome: "skipped".into(),
            ..failed(0, 30 * DAY)
        };
        assert_eq!(retry_at(Some(&skipped), 100 * DAY, 30), 101 * DAY);
    }

    #[test]
    fn copies_above_the_threshold_go_in_parts() {
        assert_eq!(COPY.parts(5 << 30), None);
        assert_eq!(COPY.requests(5 << 30), 1);
        let parts = COPY.parts((5 << 30) + 1).unwrap();
        assert_eq!(parts.len(), 11);
        assert_eq!(parts[0], (0, (512 << 20) - 1));
        assert_eq!(parts[10], (10 * (512 << 20), 5 << 30));
        assert_eq!(COPY.requests((5 << 30) + 1), 13);
        // Parts never fall below 5 MiB, and never exceed 10,000.
        let small = CopyPlan {
            multipart_threshold: 0,
            part_size: 1,
        };
        assert_eq!(
            small.parts(12 << 20).unwrap(),
            vec![
                (0, (5 << 20) - 1),
                (5 << 20, (10 << 20) - 1),
                (10 << 20, (12 << 20) - 1)
            ]
        );
        assert!(small.parts(5 << 40).unwrap().len() <= 10_000);
    }
}
