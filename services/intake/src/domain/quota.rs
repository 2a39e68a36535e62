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

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

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
    /// The ledger's revision of `used_bytes`; older reports change no total.
    pub revision: u64,
    /// Revisions below `revision` whose reports have not arrived yet and
    /// may still matter to a reservation (see [`Account::apply_usage`]).
    pub missing: BTreeSet<u64>,
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
    /// size at `revision`. It counts only while no report of a later
    /// revision is missing; until then the whole `max_size` does (see
    /// [`Account::held`]).
    pub held: u64,
    /// Unix time after which the reservation no longer counts: the last
    /// grant's expiry plus the settle window.
    pub lapses_at: i64,
    /// Ledger revision of the key's size that `held` leaves out.
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
    TooManyGrants {
        limit: usize,
        /// Seconds until enough of them lapse for this grant to fit.
        retry_after: u64,
    },
}

/// Missing revisions an account waits for before it gives up on them.
pub const MAX_MISSING: usize = 64;

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
            missing: BTreeSet::new(),
            reservations: BTreeMap::new(),
        }
    }

    /// The quota in force, given the deployment's default.
    pub fn quota(&self, default_quota: u64) -> u64 {
        self.quota_override.unwrap_or(default_quota)
    }

    /// What `reservation` holds back: `held`, unless a report of a revision
    /// after the key's size it knows is still missing, in which case the key
    /// may have shrunk since and its whole `max_size` counts.
    pub fn held(&self, reservation: &Reservation) -> u64 {
        match self.missing.last() {
            Some(&missing) if missing > reservation.revision => reservation.max_size,
            _ => reservation.held,
        }
    }

    /// Bytes held by reservations that have not lapsed at `now`.
    pub fn reserved_bytes(&self, now: i64) -> u64 {
        self.reservations
            .values()
            .filter(|r| r.lapses_at > now)
            .map(|r| self.held(r))
            .sum()
    }

    /// Whether `key`'s reservation was made for `grant_id`, among others.
    pub fn holds_grant(&self, key: &str, grant_id: &str) -> bool {
        self.reservations
            .get(key)
            .is_some_and(|r| r.grants.iter().any(|g| g == grant_id))
    }

    /// Drops the reservations that lapsed before `now`.
    pub fn prune(&mut self, now: i64) {
        self.reservations.retain(|_, r| r.lapses_at > now);
        self.forget_missing();
    }

    /// Seconds from `now` until `grants` outstanding grants have lapsed (a
    /// reservation's grants lapse together, with it), at least 1.
    fn room_at(&self, grants: usize, now: i64) -> u64 {
        let mut lapsing: Vec<(i64, usize)> = self
            .reservations
            .values()
            .map(|r| (r.lapses_at, r.grants.len()))
            .collect();
        lapsing.sort_unstable();
        let mut freed = 0;
        let lapses_at = lapsing
            .into_iter()
            .find(|&(_, count)| {
                freed += count;
                freed >= grants
            })
            .map_or(now, |(lapses_at, _)| lapses_at);
        u64::try_from(lapses_at.saturating_sub(now)).map_or(1, |wait| wait.max(1))
    }

    /// Forgets the missing revisions no reservation can learn from: those
    /// not after every reservation's own revision (a reservation made later
    /// starts at the account's revision).
    fn forget_missing(&mut self) {
        if self.missing.is_empty() {
            return;
        }
        let oldest = self.reservations.values().map(|r| r.revision).min();
        match oldest {
            Some(oldest) => {
                self.missing = self.missing.split_off(&oldest.saturating_add(1));
            }
            None => self.missing.clear(),
        }
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
                retry_after: self.room_at(outstanding + 1 - max_outstanding, now),
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
    /// `object_size` bytes (`None` when deleted). Returns true when anything
    /// changed.
    ///
    /// Totals come from the newest report only. A reservation leaves out
    /// what its key stores, and that must be the key's size at the revision
    /// of `used_bytes`: had the key shrunk in a report not seen yet,
    /// `used_bytes` would no longer count the bytes the reservation leaves
    /// out. The ledger counts one revision per change, so the revisions a
    /// report skips are kept as missing, and a reservation whose key's size
    /// is older than a missing revision holds its whole `max_size` (see
    /// [`Account::held`]) until the reports in between arrive. An older
    /// report fills in its revision and, unless a newer report of its key
    /// was applied, its key's size. A report announced again (`repeated`:
    /// the totals of the moment with another key's row) tells its key's
    /// size but fills in no revision, and leaves its own revision missing
    /// when it is the newest. Beyond
    /// [`MAX_MISSING`] revisions missing, they are given up on: every other
    /// reservation holds its whole size until its key is reported anew.
    pub fn apply_usage(&mut self, report: &UsageReport<'_>) -> bool {
        if report.revision <= self.revision {
            let filled = !report.repeated && self.missing.remove(&report.revision);
            let learned = self.learn_size(report);
            if filled {
                self.forget_missing();
            }
            return filled || learned;
        }
        let skipped = report.revision - self.revision - 1;
        if usize::try_from(skipped)
            .map_or(true, |s| s.saturating_add(self.missing.len()) > MAX_MISSING)
        {
            self.missing.clear();
            for (key, reservation) in &mut self.reservations {
                if **key != *report.key
                    && (reservation.held != reservation.max_size
                        || reservation.revision < report.revision)
                {
                    let reservation = Arc::make_mut(reservation);
                    reservation.held = reservation.max_size;
                    reservation.revision = report.revision;
                }
            }
        } else {
            self.missing.extend(self.revision + 1..report.revision);
            if report.repeated {
                // What changed at this revision is still to be reported.
                self.missing.insert(report.revision);
            }
        }
        self.revision = report.revision;
        self.used_bytes = report.used_bytes;
        self.object_count = report.object_count;
        self.by_storage_class.clone_from(report.by_storage_class);
        self.learn_size(report);
        self.forget_missing();
        true
    }

    /// Sets the reservation of the report's key from the size it reports,
    /// unless a report of the key at least as new was applied. True when it
    /// did.
    fn learn_size(&mut self, report: &UsageReport<'_>) -> bool {
        let Some(reservation) = self.reservations.get_mut(report.key) else {
            return false;
        };
        if report.revision <= reservation.revision {
            return false;
        }
        let reservation = Arc::make_mut(reservation);
        reservation.held = reservation
            .max_size
            .saturating_sub(report.object_size.unwrap_or(0));
        reservation.revision = report.revision;
        true
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
    /// Announced again: the change made at `revision` may have been
    /// another key's.
    pub repeated: bool,
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
            Err(Refusal::TooManyGrants {
                limit: 3,
                retry_after: 1_000
            })
        );
    }

    #[test]
    fn a_capped_grant_is_told_when_enough_grants_lapse() {
        let mut account = Account::new();
        let lapsing = [("a", 300), ("b", 100), ("a", 200), ("c", 500), ("d", 400)];
        for (key, lapses_at) in lapsing {
            let grant = ReservationRequest {
                lapses_at,
                ..request("g", key, 1)
            };
            account.reserve(&grant, 0, 100, 5).unwrap();
        }
        // Key b lapses at 100 with its one grant; a's two grants at 300.
        let at = |now, cap| match account
            .clone()
            .reserve(&request("g", "e", 1), now, 100, cap)
        {
            Err(Refusal::TooManyGrants { retry_after, .. }) => retry_after,
            other => panic!("{other:?}"),
        };
        assert_eq!(at(40, 5), 60, "one grant to lapse: b's");
        assert_eq!(at(40, 4), 260, "two: b's, then a's two together");
        assert_eq!(at(40, 3), 260, "three: b's and a's");
        assert_eq!(at(40, 2), 360, "four: then d's");
        // A reservation lapsing this very second is already gone; none
        // waits less than a second.
        assert_eq!(at(99, 5), 1);
        assert_eq!(at(100, 4), 200);
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
            repeated: false,
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
            repeated: false,
        };
        assert!(!account.apply_usage(&report));
        assert_eq!(account, before);
    }

    fn report<'a>(
        revision: u64,
        used_bytes: u64,
        key: &'a str,
        object_size: Option<u64>,
        classes: &'a BTreeMap<String, u64>,
    ) -> UsageReport<'a> {
        UsageReport {
            revision,
            used_bytes,
            object_count: 1,
            by_storage_class: classes,
            key,
            object_size,
            repeated: false,
        }
    }

    /// An account with a grant of `size` bytes for each key, quota 100.
    fn reserved(grants: &[(&str, u64)]) -> Account {
        let mut account = Account::new();
        for (key, size) in grants {
            account
                .reserve(&request("g", key, *size), 0, 100, 100)
                .unwrap();
        }
        account
    }

    #[test]
    fn a_late_report_of_a_key_does_not_lower_its_reservation() {
        let classes = BTreeMap::new();
        let mut account = reserved(&[("k", 50), ("l", 1)]);
        // The ledger saw k uploaded (1), then deleted (2), then l uploaded
        // (3); report 2 is still on its way when 3 arrives.
        assert!(account.apply_usage(&report(1, 50, "k", Some(50), &classes)));
        assert_eq!(account.reserved_bytes(0), 1);
        assert!(account.apply_usage(&report(3, 1, "l", Some(1), &classes)));
        // k may hold nothing now, and its policy can still add 50 bytes.
        assert_eq!((account.used_bytes, account.reserved_bytes(0)), (1, 50));
        assert_eq!(
            account.reserve(&request("g3", "m", 50), 0, 100, 100),
            Err(Refusal::QuotaExceeded {
                used_bytes: 1,
                reserved_bytes: 50,
                quota_bytes: 100,
                requested: 50
            })
        );
        // Report 2 arrives last: it gives k's size after report 1, and no
        // total (those of report 3 are newer).
        assert!(account.apply_usage(&report(2, 0, "k", None, &classes)));
        assert!(account.missing.is_empty());
        assert_eq!((account.used_bytes, account.reserved_bytes(0)), (1, 50));
        // Delivered again, it changes nothing.
        let before = account.clone();
        assert!(!account.apply_usage(&report(2, 0, "k", None, &classes)));
        assert_eq!(account, before);
        // The next report of k itself gives its size again.
        assert!(account.apply_usage(&report(4, 31, "k", Some(30), &classes)));
        assert_eq!(account.reserved_bytes(0), 20);
    }

    #[test]
    fn a_revision_announced_again_with_another_key_hides_no_report() {
        let classes = BTreeMap::new();
        let mut account = reserved(&[("j", 50)]);
        account.apply_usage(&report(1, 50, "j", Some(50), &classes));
        account.apply_usage(&report(2, 60, "k", Some(10), &classes));
        // j was deleted at 3; k's event came again, and the ledger announced
        // the totals of the moment, at 3, with k's row, before j's report.
        account.apply_usage(&UsageReport {
            repeated: true,
            ..report(3, 10, "k", Some(10), &classes)
        });
        // Until j's report comes, j may have shrunk.
        assert_eq!((account.used_bytes, account.reserved_bytes(0)), (10, 50));
        assert!(account.apply_usage(&report(3, 10, "j", None, &classes)));
        assert_eq!((account.used_bytes, account.reserved_bytes(0)), (10, 50));
    }

    #[test]
    fn reservations_are_exact_again_once_the_missing_reports_arrive() {
        let classes = BTreeMap::new();
        let mut account = reserved(&[("k", 50), ("l", 10)]);
        // k uploaded with 40 bytes (1), then l with 5 (2); 2 arrives first.
        account.apply_usage(&report(2, 45, "l", Some(5), &classes));
        assert_eq!((account.used_bytes, account.reserved_bytes(0)), (45, 55));
        account.apply_usage(&report(1, 40, "k", Some(40), &classes));
        assert_eq!((account.used_bytes, account.reserved_bytes(0)), (45, 15));
        assert!(account.missing.is_empty());
    }

    #[test]
    fn too_many_missing_reports_are_given_up_on() {
        let classes = BTreeMap::new();
        let mut account = reserved(&[("k", 50), ("l", 10)]);
        account.apply_usage(&report(1, 40, "k", Some(40), &classes));
        assert_eq!(account.reserved_bytes(0), 20);
        let far = 2 + MAX_MISSING as u64 + 1;
        account.apply_usage(&report(far, 45, "l", Some(5), &classes));
        assert!(account.missing.is_empty());
        // k may have shrunk in the reports given up on.
        assert_eq!((account.used_bytes, account.reserved_bytes(0)), (45, 55));
        let before = account.clone();
        assert!(!account.apply_usage(&report(2, 0, "k", None, &classes)));
        assert_eq!(account, before);
    }

    #[test]
    fn a_report_from_the_far_future_gives_up_at_once() {
        let classes = BTreeMap::new();
        let mut account = reserved(&[("k", 50)]);
        account.apply_usage(&report(3, 0, "x", None, &classes));
        assert_eq!(account.missing, BTreeSet::from([1, 2]));
        assert!(account.apply_usage(&report(u64::MAX, 0, "x", None, &classes)));
        assert!(account.missing.is_empty());
        assert_eq!(account.reserved_bytes(0), 50);
    }

    #[test]
    fn missing_reports_no_reservation_can_learn_from_are_forgotten() {
        let classes = BTreeMap::new();
        let mut account = Account::new();
        account.apply_usage(&report(3, 10, "x", Some(10), &classes));
        assert!(account.missing.is_empty());
        account
            .reserve(&request("g1", "k", 50), 0, 100, 100)
            .unwrap();
        account.apply_usage(&report(6, 20, "y", Some(10), &classes));
        assert_eq!(account.missing, BTreeSet::from([4, 5]));
        // The reservation lapses: nothing is left to learn from 4 and 5.
        account.prune(1_000);
        assert!(account.missing.is_empty());
    }

    #[test]
    fn reports_in_order_keep_every_reservation_exact() {
        let classes = BTreeMap::new();
        let mut account = reserved(&[("k", 50), ("l", 10)]);
        account.apply_usage(&report(1, 40, "k", Some(40), &classes));
        account.apply_usage(&report(2, 45, "l", Some(5), &classes));
        // k's 40 bytes and l's 5 are counted; their policies may add 10 and 5.
        assert_eq!((account.used_bytes, account.reserved_bytes(0)), (45, 15));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Grant {
            key: u8,
            size: u64,
        },
        /// The ledger applies an upload: the key now holds `size` bytes
        /// (0 = deleted), and its report is on its way to intake.
        Upload {
            key: u8,
            size: u64,
        },
        /// One of the reports on their way arrives, whichever `pick` names.
        Deliver {
            pick: usize,
        },
        /// The ledger handles the key's last event again and announces the
        /// totals of the moment, at the current revision, with the key's row.
        Reannounce {
            key: u8,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..4, 1u64..40).prop_map(|(key, size)| Step::Grant { key, size }),
            (0u8..4, 0u64..40).prop_map(|(key, size)| Step::Upload { key, size }),
            any::<usize>().prop_map(|pick| Step::Deliver { pick }),
            (0u8..4).prop_map(|key| Step::Reannounce { key }),
        ]
    }

    /// A report as the ledger sends it.
    #[derive(Debug)]
    struct Sent {
        revision: u64,
        used: u64,
        count: u64,
        key: String,
        size: u64,
        repeated: bool,
    }

    impl Sent {
        fn report<'a>(&'a self, classes: &'a BTreeMap<String, u64>) -> UsageReport<'a> {
            UsageReport {
                revision: self.revision,
                used_bytes: self.used,
                object_count: self.count,
                by_storage_class: classes,
                key: &self.key,
                object_size: (self.size > 0).then_some(self.size),
                repeated: self.repeated,
            }
        }
    }

    proptest! {
        /// Whatever uploads the granted policies allow, and in whatever
        /// order the ledger's reports arrive, the most the user can store
        /// (every granted key filled to its largest grant) stays within
        /// the quota.
        #[test]
        fn granted_policies_can_never_take_the_user_over_quota(steps in proptest::collection::vec(step(), 1..80)) {
            const QUOTA: u64 = 100;
            let classes = BTreeMap::new();
            let mut account = Account::new();
            let mut stored: BTreeMap<u8, u64> = BTreeMap::new();
            let mut granted: BTreeMap<u8, u64> = BTreeMap::new();
            let mut on_the_way: Vec<Sent> = Vec::new();
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
                        if size == 0 {
                            stored.remove(&key);
                        } else {
                            stored.insert(key, size);
                        }
                        revision += 1;
                        on_the_way.push(Sent {
                            revision,
                            used: stored.values().sum(),
                            count: stored.len() as u64,
                            key: key.to_string(),
                            size,
                            repeated: false,
                        });
                    }
                    Step::Reannounce { key } => {
                        if revision == 0 || !granted.contains_key(&key) {
                            continue;
                        }
                        on_the_way.push(Sent {
                            revision,
                            used: stored.values().sum(),
                            count: stored.len() as u64,
                            key: key.to_string(),
                            size: stored.get(&key).copied().unwrap_or(0),
                            repeated: true,
                        });
                    }
                    Step::Deliver { pick } => {
                        if on_the_way.is_empty() {
                            continue;
                        }
                        let sent = on_the_way.remove(pick % on_the_way.len());
                        account.apply_usage(&sent.report(&classes));
                    }
                }
                let most: u64 = granted.values().sum();
                prop_assert!(most <= QUOTA, "granted keys can take {most} > {QUOTA}");
            }
            // Once every report has arrived, in whatever order, the account
            // is exact again: what is stored plus what the policies may add.
            for sent in on_the_way.drain(..).rev() {
                account.apply_usage(&sent.report(&classes));
            }
            let most: u64 = granted.values().sum();
            prop_assert_eq!(account.used_bytes, stored.values().sum::<u64>());
            prop_assert_eq!(account.used_bytes + account.reserved_bytes(0), most);
        }
    }
}
