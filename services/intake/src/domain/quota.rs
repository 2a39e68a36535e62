//! Quota accounting. An account holds what the ledger last reported as
//! committed and the reservations of outstanding grants; the rule is
//! `committed + live reservations <= quota`.
//!
//! A reservation is per object key. A POST policy can be used again and again
//! until it expires, and every use overwrites the same key, so the most the
//! key can add to the user's usage is the largest live grant's size minus what
//! the key already holds. The reservation holds exactly that: it starts at the
//! grant's size, and each `UsageChanged` for the key sets it to
//! `max_size - object size now`. It lapses when the grant has expired and the
//! settle window has passed.
//!
//! Callers persist an [`Account`] only if it has not changed since they read it
//! (a version check), so these rules hold under any interleaving.

use std::{collections::BTreeMap, sync::Arc};

/// One user's quota state as intake knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user's own quota, when an administrator set one.
    pub quota_override: Option<u64>,
    /// Bytes the ledger reported as stored, as of `revision`.
    pub used_bytes: u64,
    pub object_count: u64,
    /// `used_bytes` split by S3 storage class.
    pub by_storage_class: BTreeMap<String, u64>,
    /// The ledger's revision of `used_bytes`; older reports are ignored.
    pub revision: u64,
    /// Reservations by object key. Keys and reservations are shared between
    /// copies of an account: a grant copies the account it starts from, and
    /// changes one reservation.
    pub reservations: Reservations,
}

/// An account's reservations by object key.
pub type Reservations = BTreeMap<Arc<str>, Arc<Reservation>>;

/// Bytes held back for the outstanding grants of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Largest size any live grant for this key allows.
    pub max_size: u64,
    /// What the key may still add to usage: `max_size` minus the object's
    /// size as last reported.
    pub held: u64,
    /// Unix time after which the reservation no longer counts: the last
    /// grant's expiry plus the settle window.
    pub lapses_at: i64,
    /// Ledger revision that last set `held`.
    pub revision: u64,
    /// The grants this reservation covers, newest last.
    pub grants: Vec<String>,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The upload would take the user over quota.
    QuotaExceeded {
        used_bytes: u64,
        reserved_bytes: u64,
        quota_bytes: u64,
        requested: u64,
    },
    /// The user already has the maximum number of outstanding grants.
    TooManyGrants { limit: usize },
}

/// A reservation request for one grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRequest<'a> {
    pub grant_id: &'a str,
    pub key: &'a str,
    pub size: u64,
    /// Unix time the reservation lapses (grant expiry + settle window).
    pub lapses_at: i64,
}

impl Account {
    /// A user intake has not seen before.
    pub fn new() -> Self {
        Self {
            quota_override: None,
            used_bytes: 0,
            object_count: 0,
            by_storage_class: BTreeMap::new(),
            revision: 0,
            reservations: BTreeMap::new(),
        }
    }

    /// The quota in force, given the deployment's default.
    pub fn quota(&self, default_quota: u64) -> u64 {
        self.quota_override.unwrap_or(default_quota)
    }

    /// Bytes held by reservations that have not lapsed at `now`.
    pub fn reserved_bytes(&self, now: i64) -> u64 {
        self.reservations
            .values()
            .filter(|r| r.lapses_at > now)
            .map(|r| r.held)
            .sum()
    }

    /// Drops the reservations that lapsed before `now`.
    pub fn prune(&mut self, now: i64) {
        self.reservations.retain(|_, r| r.lapses_at > now);
    }

    /// Reserves room for a grant, or says why not. On refusal the account is
    /// left as it was apart from pruning lapsed reservations.
    pub fn reserve(
        &mut self,
        request: &ReservationRequest<'_>,
        now: i64,
        default_quota: u64,
        max_outstanding: usize,
    ) -> Result<(), Refusal> {
        self.prune(now);
        let outstanding: usize = self.reservations.values().map(|r| r.grants.len()).sum();
        if outstanding >= max_outstanding {
            return Err(Refusal::TooManyGrants {
                limit: max_outstanding,
            });
        }
        let quota = self.quota(default_quota);
        let reserved = self.reserved_bytes(now);
        let extra = match self.reservations.get(request.key) {
            Some(existing) => request.size.saturating_sub(existing.max_size),
            None => request.size,
        };
        let total = self
            .used_bytes
            .saturating_add(reserved)
            .saturating_add(extra);
        if total > quota {
            return Err(Refusal::QuotaExceeded {
                used_bytes: self.used_bytes,
                reserved_bytes: reserved,
                quota_bytes: quota,
                requested: request.size,
            });
        }
        let revision = self.revision;
        let entry = Arc::make_mut(self.reservations.entry(request.key.into()).or_insert_with(
            || {
                Arc::new(Reservation {
                    max_size: 0,
                    held: 0,
                    lapses_at: request.lapses_at,
                    revision,
                    grants: Vec::new(),
                })
            },
        ));
        entry.held += extra;
        entry.max_size = entry.max_size.max(request.size);
        entry.lapses_at = entry.lapses_at.max(request.lapses_at);
        entry.grants.push(request.grant_id.to_string());
        Ok(())
    }

    /// Applies the ledger's report that `key` changed at `revision`, leaving
    /// the user with `used_bytes` and `object_count`, and the key holding
    /// `object_size` bytes (`None` when deleted). Reports older than what was
    /// already applied change nothing. Returns true when anything changed.
    pub fn apply_usage(&mut self, report: &UsageReport<'_>) -> bool {
        let mut changed = false;
        if report.revision > self.revision {
            self.revision = report.revision;
            self.used_bytes = report.used_bytes;
            self.object_count = report.object_count;
            self.by_storage_class.clone_from(report.by_storage_class);
            changed = true;
        }
        if let Some(reservation) = self.reservations.get_mut(report.key)
            && report.revision > reservation.revision
        {
            let reservation = Arc::make_mut(reservation);
            reservation.held = reservation
                .max_size
                .saturating_sub(report.object_size.unwrap_or(0));
            reservation.revision = report.revision;
            changed = true;
        }
        changed
    }
}

impl Default for Account {
    fn default() -> Self {
        Self::new()
    }
}

/// The part of a `UsageChanged` event the quota rules read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport<'a> {
    pub revision: u64,
    pub used_bytes: u64,
    pub object_count: u64,
    pub by_storage_class: &'a BTreeMap<String, u64>,
    pub key: &'a str,
    pub object_size: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MB: u64 = 1_000_000;

    fn request<'a>(grant: &'a str, key: &'a str, size: u64) -> ReservationRequest<'a> {
        ReservationRequest {
            grant_id: grant,
            key,
            size,
            lapses_at: 1_000,
        }
    }

    #[test]
    fn grants_are_admitted_until_the_quota_is_reached() {
        let mut account = Account::new();
        let keys: Vec<String> = (0..11).map(|i| format!("k{i}")).collect();
        let admitted = keys
            .iter()
            .filter(|k| {
                account
                    .reserve(&request("g", k, 10 * MB), 0, 100 * MB, 100)
                    .is_ok()
            })
            .count();
        assert_eq!(admitted, 10);
        assert_eq!(account.reserved_bytes(0), 100 * MB);
    }

    #[test]
    fn a_refusal_reports_the_current_usage() {
        let mut account = Account {
            used_bytes: 95 * MB,
            ..Account::new()
        };
        let refusal = account
            .reserve(&request("g", "k", 10 * MB), 0, 100 * MB, 100)
            .unwrap_err();
        assert_eq!(
            refusal,
            Refusal::QuotaExceeded {
                used_bytes: 95 * MB,
                reserved_bytes: 0,
                quota_bytes: 100 * MB,
                requested: 10 * MB
            }
        );
        assert!(account.reservations.is_empty());
    }

    #[test]
    fn lapsed_reservations_free_their_bytes() {
        let mut account = Account::new();
        account
            .reserve(&request("g1", "a", 60 * MB), 0, 100 * MB, 100)
            .unwrap();
        assert!(
            account
                .reserve(&request("g2", "b", 60 * MB), 999, 100 * MB, 100)
                .is_err()
        );
        assert!(
            account
                .reserve(&request("g3", "b", 60 * MB), 1_000, 100 * MB, 100)
                .is_ok()
        );
    }

    #[test]
    fn outstanding_grants_are_capped() {
        let mut account = Account::new();
        for i in 0..3 {
            account
                .reserve(&request("g", &format!("k{i}"), 1), 0, 100, 3)
                .unwrap();
        }
        assert_eq!(
            account.reserve(&request("g", "k9", 1), 0, 100, 3),
            Err(Refusal::TooManyGrants { limit: 3 })
        );
    }

    #[test]
    fn a_reported_upload_turns_the_reservation_into_committed_bytes() {
        let mut account = Account::new();
        account
            .reserve(&request("g", "k", 10 * MB), 0, 100 * MB, 100)
            .unwrap();
        let applied = account.apply_usage(&UsageReport {
            revision: 1,
            used_bytes: 7 * MB,
            object_count: 1,
            by_storage_class: &BTreeMap::new(),
            key: "k",
            object_size: Some(7 * MB),
        });
        assert!(applied);
        assert_eq!(account.used_bytes, 7 * MB);
        // The policy may still be used to overwrite the key with up to 10 MB.
        assert_eq!(account.reserved_bytes(0), 3 * MB);
    }

    #[test]
    fn stale_reports_change_nothing() {
        let mut account = Account {
            used_bytes: 5,
            revision: 9,
            ..Account::new()
        };
        let before = account.clone();
        let report = UsageReport {
            revision: 9,
            used_bytes: 1,
            object_count: 0,
            by_storage_class: &BTreeMap::new(),
            key: "k",
            object_size: None,
        };
        assert!(!account.apply_usage(&report));
        assert_eq!(account, before);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Grant {
            key: u8,
            size: u64,
        },
        /// The ledger reports the key now holds `size` bytes (0 = deleted).
        Upload {
            key: u8,
            size: u64,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..4, 1u64..40).prop_map(|(key, size)| Step::Grant { key, size }),
            (0u8..4, 0u64..40).prop_map(|(key, size)| Step::Upload { key, size }),
        ]
    }

    proptest! {
        /// Whatever uploads the granted policies allow, in any order, the
        /// bytes stored never exceed the quota.
        #[test]
        fn committed_plus_reserved_never_exceeds_the_quota(steps in proptest::collection::vec(step(), 1..60)) {
            const QUOTA: u64 = 100;
            let mut account = Account::new();
            let mut stored: BTreeMap<u8, u64> = BTreeMap::new();
            let mut granted: BTreeMap<u8, u64> = BTreeMap::new();
            let mut revision = 0;
            for step in steps {
                match step {
                    Step::Grant { key, size } => {
                        let name = key.to_string();
                        if account.reserve(&request("g", &name, size), 0, QUOTA, 1_000).is_ok() {
                            let max = granted.entry(key).or_default();
                            *max = (*max).max(size);
                        }
                    }
                    Step::Upload { key, size } => {
                        // S3 only accepts what a live policy allows.
                        let Some(&max) = granted.get(&key) else { continue };
                        let size = size.min(max);
                        stored.insert(key, size);
                        revision += 1;
                        let used: u64 = stored.values().sum();
                        let name = key.to_string();
                        account.apply_usage(&UsageReport {
                            revision,
                            used_bytes: used,
                            object_count: stored.len() as u64,
                            by_storage_class: &BTreeMap::new(),
                            key: &name,
                            object_size: (size > 0).then_some(size),
                        });
                    }
                }
                let used: u64 = stored.values().sum();
                prop_assert!(used + account.reserved_bytes(0) <= QUOTA, "used {used} + reserved {} > {QUOTA}", account.reserved_bytes(0));
            }
        }
    }
}
