//! The lifecycle service's projection of one object: size, class, entity
//! tag, encryption, when it was created and last read, its restore state and
//! the last sweep's verdict, built from S3's events and intake's
//! `ObjectAccessed.v1` / `RestoreRequested.v1`.
//!
//! Delivery is at least once and out of order. S3's events carry a
//! sequencer: one below the row's is stale, one already applied at the same
//! sequencer is a duplicate, and a deleted object keeps a tombstone so a
//! late `Object Created` cannot bring it back (the ledger's rules). Reads
//! carry no sequencer: the last access only ever moves forward, so a late or
//! repeated `ObjectAccessed` changes nothing. Objects found in the bucket by
//! a backfill carry none either: they fill in keys no S3 event has reached,
//! and any S3 event of the key outranks them. S3 reports a change of storage
//! class without a sequencer too: it moves the live object with its entity
//! tag to the class S3 holds it in now, and waits for that object's creation
//! when the row is not of it yet.

use std::cmp::Ordering;

use stowage_events::{TraceContext, sequencer::Sequencer};

use super::DAY;

/// The only class objects are tiered from.
pub const STANDARD: &str = "STANDARD";

/// The verdict of a transition made.
pub const TIERED: &str = "tiered";

/// How an object is encrypted at rest, which a copy must keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// Not known (the object was first seen through a read): a copy gets
    /// the bucket's default encryption.
    Unknown,
    /// SSE-S3 (`AES256`).
    S3Managed,
    /// SSE-KMS or DSSE-KMS, with the key when S3 named it.
    Kms {
        algorithm: String,
        key_id: Option<String>,
    },
    /// SSE-C: a copy needs the customer's key, which Stowage never holds.
    CustomerKey,
}

/// Where a restore of an archived object stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restore {
    None,
    /// `RestoreObject` was called at `at` (unix seconds) for `days`, in
    /// the trace `trace` (of the request's span, when it was traced).
    Requested {
        at: i64,
        days: u32,
        trace: TraceContext,
    },
    /// A restored copy is readable until `until` (unix seconds), when known;
    /// it was asked for at `requested_at`, when known, in the trace `trace`.
    Restored {
        until: Option<i64>,
        requested_at: Option<i64>,
        trace: TraceContext,
    },
}

impl Restore {
    /// When the last restore was asked for, if known.
    pub fn requested_at(&self) -> Option<i64> {
        match self {
            Self::None => None,
            Self::Requested { at, .. } => Some(*at),
            Self::Restored { requested_at, .. } => *requested_at,
        }
    }

    /// The trace the last restore was asked for in: its completion is
    /// announced in it.
    pub fn trace(&self) -> Option<&TraceContext> {
        match self {
            Self::None => None,
            Self::Requested { trace, .. } | Self::Restored { trace, .. } => Some(trace),
        }
    }
}

/// The last sweep's verdict on an object, kept until S3 reports a new
/// version of it (the sweep's own copy is not one: a tiered object keeps
/// the verdict that moved it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `tiered`, `skipped` or `failed` (a transition whose copy failed, or
    /// that S3 refused because it holds the object archived already).
    pub outcome: String,
    /// Why, in words an operator reads.
    pub reason: String,
    /// Unix seconds of the decision.
    pub at: i64,
    /// When a skipped object is looked at again (unix seconds).
    pub recheck_at: Option<i64>,
}

/// What the service knows of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRecord {
    /// False for a tombstone.
    pub live: bool,
    pub size: u64,
    pub storage_class: String,
    /// Entity tag without quotes.
    pub etag: Option<String>,
    pub encryption: Encryption,
    /// Unix seconds of the newest `Object Created` (a copy counts: it is
    /// the object's last modification).
    pub created_at: i64,
    /// Unix seconds of the newest read.
    pub last_access: Option<i64>,
    pub restore: Restore,
    /// The sequencer of the last applied S3 event; the lowest for a row
    /// known only from a read.
    pub sequencer: Sequencer,
    /// Fingerprints of the S3 events applied at `sequencer`.
    pub applied: Vec<String>,
    pub verdict: Option<Verdict>,
}

impl ObjectRecord {
    /// A live object created at `at`, known from no S3 event yet (the
    /// lowest sequencer), never read, restored or decided on.
    pub(crate) fn new_object(
        size: u64,
        storage_class: &str,
        etag: Option<&str>,
        encryption: &Encryption,
        at: i64,
    ) -> Self {
        Self {
            live: true,
            size,
            storage_class: storage_class.to_string(),
            etag: etag.map(str::to_string),
            encryption: encryption.clone(),
            created_at: at,
            last_access: None,
            restore: Restore::None,
            sequencer: Sequencer::lowest(),
            applied: Vec::new(),
            verdict: None,
        }
    }

    /// When the object went cold: its last read, or its creation.
    pub fn cold_since(&self) -> i64 {
        self.last_access
            .map_or(self.created_at, |a| a.max(self.created_at))
    }

    /// Whether a sweep may consider the object at all.
    pub fn is_candidate(&self) -> bool {
        self.live && self.storage_class == STANDARD
    }

    /// When a sweep should look at the object under a policy of `days`
    /// without access: never unless it is a live Standard object; otherwise
    /// `days` after it went cold, or at its recheck after a skip if later.
    pub fn due_at(&self, days: u32) -> Option<i64> {
        if !self.is_candidate() {
            return None;
        }
        let natural = self.cold_since() + i64::from(days) * DAY;
        let recheck = self.verdict.as_ref().and_then(|v| v.recheck_at);
        Some(recheck.map_or(natural, |r| r.max(natural)))
    }
}

/// What one event says about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// `Object Created`: a new object or a new version of one.
    Created {
        sequencer: Sequencer,
        at: i64,
        size: u64,
        etag: Option<String>,
        storage_class: String,
        encryption: Encryption,
    },
    /// `Object Storage Class Changed`, in the class S3 holds the object in
    /// now. S3 gives it no sequencer; one that has one is ordered by it.
    ClassChanged {
        sequencer: Option<Sequencer>,
        at: i64,
        size: Option<u64>,
        etag: Option<String>,
        storage_class: String,
    },
    /// `Object Deleted`.
    Deleted { sequencer: Sequencer },
    /// `ObjectAccessed.v1`: a user was handed a download at `at`.
    Accessed {
        at: i64,
        size: u64,
        etag: Option<String>,
        storage_class: String,
    },
    /// A backfill found the object in the bucket, last modified at `at`.
    Listed {
        at: i64,
        size: u64,
        etag: Option<String>,
        storage_class: String,
        encryption: Encryption,
    },
    /// `RestoreRequested.v1`, once `RestoreObject` was called, in the
    /// trace of the span that called it.
    RestoreRequested {
        at: i64,
        days: u32,
        trace: TraceContext,
    },
    /// `Object Restore Completed`.
    RestoreCompleted { until: Option<i64> },
}

impl Observation {
    fn sequenced(&self) -> Option<(&Sequencer, String)> {
        match self {
            Self::Created {
                sequencer,
                size,
                etag,
                storage_class,
                ..
            } => Some((
                sequencer,
                created_fingerprint(etag.as_deref(), *size, storage_class),
            )),
            Self::ClassChanged {
                sequencer: Some(sequencer),
                etag,
                storage_class,
                ..
            } => Some((
                sequencer,
                format!("class:{}:{storage_class}", etag.as_deref().unwrap_or("")),
            )),
            Self::Deleted { sequencer } => Some((sequencer, "deleted".to_string())),
            _ => None,
        }
    }
}

/// What to do with an observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Write this row.
    Apply(Box<ObjectRecord>),
    /// The S3 event was applied already.
    Duplicate,
    /// A later S3 event of the key was applied already.
    Stale,
    /// Nothing to write: an older read, a repeat, or a restore of an object
    /// the service does not know.
    Unchanged,
    /// A change of class without a sequencer, of an object whose own
    /// `Object Created` is not applied yet: it can apply only after it.
    Early,
}

/// Decides how `observation` changes the row `current`.
pub fn apply(current: Option<&ObjectRecord>, observation: &Observation) -> Change {
    if let Some((sequencer, fingerprint)) = observation.sequenced() {
        let mut applied = vec![fingerprint.clone()];
        if let Some(row) = current {
            match sequencer.cmp(&row.sequencer) {
                Ordering::Less => return Change::Stale,
                Ordering::Equal if row.applied.contains(&fingerprint) => {
                    return Change::Duplicate;
                }
                Ordering::Equal => applied = [row.applied.clone(), applied].concat(),
                Ordering::Greater => {}
            }
        }
        let last_access = current.and_then(|r| r.last_access);
        let row = match observation {
            Observation::Created {
                at,
                size,
                etag,
                storage_class,
                encryption,
                ..
            } => ObjectRecord {
                last_access,
                sequencer: sequencer.clone(),
                applied,
                // The sweep's own copy, announced by S3 after the sweep
                // recorded it: the object it tiered, with its verdict.
                verdict: current
                    .filter(|row| {
                        row.live
                            && row.etag.is_some()
                            && row.etag == *etag
                            && row.storage_class == *storage_class
                    })
                    .and_then(|row| row.verdict.clone())
                    .filter(|verdict| verdict.outcome == TIERED),
                // The object's own creation, come after the row was made
                // from S3's answer (a restore of it asked for first): the
                // restore asked for stays.
                restore: current
                    .filter(|row| {
                        row.live
                            && row.sequencer == Sequencer::lowest()
                            && row.etag.is_some()
                            && row.etag == *etag
                    })
                    .map_or(Restore::None, |row| row.restore.clone()),
                ..ObjectRecord::new_object(*size, storage_class, etag.as_deref(), encryption, *at)
            },
            Observation::ClassChanged {
                at,
                size,
                etag,
                storage_class,
                ..
            } => {
                let base = current.filter(|r| r.live);
                ObjectRecord {
                    live: true,
                    size: size.or(base.map(|r| r.size)).unwrap_or(0),
                    storage_class: storage_class.clone(),
                    etag: etag.clone().or_else(|| base.and_then(|r| r.etag.clone())),
                    encryption: base.map_or(Encryption::Unknown, |r| r.encryption.clone()),
                    created_at: base.map_or(*at, |r| r.created_at),
                    last_access,
                    restore: base.map_or(Restore::None, |r| r.restore.clone()),
                    sequencer: sequencer.clone(),
                    applied,
                    verdict: base.and_then(|r| r.verdict.clone()),
                }
            }
            _ => ObjectRecord {
                live: false,
                size: 0,
                storage_class: current.map_or(STANDARD.to_string(), |r| r.storage_class.clone()),
                etag: None,
                encryption: Encryption::Unknown,
                created_at: current.map_or(0, |r| r.created_at),
                last_access,
                restore: Restore::None,
                sequencer: sequencer.clone(),
                applied,
                verdict: None,
            },
        };
        return Change::Apply(Box::new(row));
    }
    match (observation, current) {
        (
            Observation::Accessed {
                at,
                size,
                etag,
                storage_class,
            },
            None,
        ) => Change::Apply(Box::new(ObjectRecord {
            // Known only from the read until S3's event arrives; any S3
            // event of the key outranks this row.
            last_access: Some(*at),
            ..ObjectRecord::new_object(
                *size,
                storage_class,
                etag.as_deref(),
                &Encryption::Unknown,
                *at,
            )
        })),
        (
            Observation::Listed {
                at,
                size,
                etag,
                storage_class,
                encryption,
            },
            current,
        ) => {
            // Only over nothing, or over a row known from reads alone.
            if current.is_some_and(|row| !row.applied.is_empty() || !row.live) {
                return Change::Unchanged;
            }
            let row = ObjectRecord {
                last_access: current.and_then(|r| r.last_access),
                restore: current.map_or(Restore::None, |r| r.restore.clone()),
                verdict: current.and_then(|r| r.verdict.clone()),
                ..ObjectRecord::new_object(*size, storage_class, etag.as_deref(), encryption, *at)
            };
            if current == Some(&row) {
                return Change::Unchanged;
            }
            Change::Apply(Box::new(row))
        }
        (Observation::Accessed { at, .. }, Some(row)) => {
            if row.last_access.is_some_and(|last| last >= *at) {
                return Change::Unchanged;
            }
            Change::Apply(Box::new(ObjectRecord {
                last_access: Some(*at),
                ..row.clone()
            }))
        }
        (Observation::RestoreRequested { at, days, trace }, Some(row)) if row.live => {
            let restore = Restore::Requested {
                at: *at,
                days: *days,
                trace: trace.clone(),
            };
            if row.restore == restore {
                return Change::Unchanged;
            }
            Change::Apply(Box::new(ObjectRecord {
                restore,
                ..row.clone()
            }))
        }
        (Observation::RestoreCompleted { until }, Some(row)) if row.live => {
            let restore = Restore::Restored {
                until: *until,
                requested_at: row.restore.requested_at(),
                trace: row.restore.trace().cloned().unwrap_or_default(),
            };
            if row.restore == restore {
                return Change::Unchanged;
            }
            Change::Apply(Box::new(ObjectRecord {
                restore,
                ..row.clone()
            }))
        }
        (
            Observation::ClassChanged {
                sequencer: None,
                etag,
                storage_class,
                ..
            },
            current,
        ) => {
            let same = |tag: &str| {
                etag.as_deref()
                    .is_some_and(|etag| tag.trim_matches('"') == etag.trim_matches('"'))
            };
            let Some(row) = current.filter(|r| r.live && r.etag.as_deref().is_some_and(same))
            else {
                return Change::Early;
            };
            if &row.storage_class == storage_class {
                return Change::Duplicate;
            }
            // The object's own `Object Created` delivered again reads its
            // class from S3, the new one: it is still the event applied.
            let mut applied = row.applied.clone();
            let created_again = created_fingerprint(row.etag.as_deref(), row.size, storage_class);
            if !row.applied.is_empty() && !applied.contains(&created_again) {
                applied.push(created_again);
            }
            Change::Apply(Box::new(ObjectRecord {
                storage_class: storage_class.clone(),
                applied,
                ..row.clone()
            }))
        }
        _ => Change::Unchanged,
    }
}

/// How an `Object Created` is told from other events at its sequencer.
fn created_fingerprint(etag: Option<&str>, size: u64, storage_class: &str) -> String {
    format!("created:{}:{size}:{storage_class}", etag.unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seq(s: &str) -> Sequencer {
        Sequencer::parse(s).unwrap()
    }

    fn created(s: &str, at: i64, size: u64) -> Observation {
        Observation::Created {
            sequencer: seq(s),
            at,
            size,
            etag: Some(format!("e{size}")),
            storage_class: STANDARD.into(),
            encryption: Encryption::S3Managed,
        }
    }

    fn accessed(at: i64) -> Observation {
        Observation::Accessed {
            at,
            size: 10,
            etag: Some("e10".into()),
            storage_class: STANDARD.into(),
        }
    }

    fn fold(events: &[Observation]) -> Option<ObjectRecord> {
        events
            .iter()
            .fold(None, |row, e| match apply(row.as_ref(), e) {
                Change::Apply(next) => Some(*next),
                _ => row,
            })
    }

    #[test]
    fn a_late_create_cannot_undo_a_delete() {
        let row = fold(&[
            created("0A", 100, 10),
            Observation::Deleted {
                sequencer: seq("0C"),
            },
        ])
        .unwrap();
        assert!(!row.live);
        assert_eq!(apply(Some(&row), &created("0B", 150, 10)), Change::Stale);
        assert_eq!(row.due_at(90), None, "tombstones are never due");
    }

    #[test]
    fn repeats_are_duplicates_and_different_events_at_one_sequencer_apply() {
        let row = fold(&[created("0A", 100, 10)]).unwrap();
        assert_eq!(
            apply(Some(&row), &created("0A", 100, 10)),
            Change::Duplicate
        );
        let Change::Apply(next) = apply(Some(&row), &created("0A", 120, 20)) else {
            panic!("a different event at the same sequencer applies");
        };
        assert_eq!(next.size, 20);
    }

    fn listed(at: i64, size: u64) -> Observation {
        Observation::Listed {
            at,
            size,
            etag: Some(format!("e{size}")),
            storage_class: STANDARD.into(),
            encryption: Encryption::Kms {
                algorithm: "aws:kms".into(),
                key_id: Some("k".into()),
            },
        }
    }

    #[test]
    fn a_listed_object_fills_an_unknown_key_and_any_s3_event_outranks_it() {
        let row = fold(&[listed(1_000, 30)]).unwrap();
        assert!(row.live);
        assert_eq!((row.size, row.created_at), (30, 1_000));
        assert_eq!(row.due_at(90), Some(1_000 + 90 * DAY));
        assert_eq!(row.sequencer, Sequencer::lowest());
        assert_eq!(apply(Some(&row), &listed(1_000, 30)), Change::Unchanged);
        // An S3 event of the key, even an old one, applies over it...
        let Change::Apply(created) = apply(Some(&row), &created("01", 500, 20)) else {
            panic!("an S3 event outranks a listing");
        };
        assert_eq!(created.size, 20);
        let Change::Apply(deleted) = apply(
            Some(&row),
            &Observation::Deleted {
                sequencer: seq("01"),
            },
        ) else {
            panic!("a delete outranks a listing");
        };
        assert!(!deleted.live);
        // ...and a listing never changes a row S3's events made.
        assert_eq!(apply(Some(&created), &listed(2_000, 40)), Change::Unchanged);
        assert_eq!(apply(Some(&deleted), &listed(2_000, 40)), Change::Unchanged);
    }

    #[test]
    fn a_listing_completes_a_row_known_from_reads_and_keeps_the_last_read() {
        let read = fold(&[accessed(5_000)]).unwrap();
        assert_eq!(read.encryption, Encryption::Unknown);
        let Change::Apply(row) = apply(Some(&read), &listed(1_000, 10)) else {
            panic!("a listing completes a read-only row");
        };
        assert_eq!(row.created_at, 1_000);
        assert_eq!(row.last_access, Some(5_000));
        assert!(matches!(row.encryption, Encryption::Kms { .. }));
        assert_eq!(row.due_at(30), Some(5_000 + 30 * DAY));
    }

    #[test]
    fn due_dates_follow_the_latest_of_creation_and_read() {
        let row = fold(&[created("0A", 1_000, 10)]).unwrap();
        assert_eq!(row.due_at(90), Some(1_000 + 90 * DAY));
        let row = fold(&[created("0A", 1_000, 10), accessed(5_000)]).unwrap();
        assert_eq!(row.due_at(30), Some(5_000 + 30 * DAY));
        let mut glacier = row.clone();
        glacier.storage_class = "GLACIER".into();
        assert_eq!(glacier.due_at(30), None);
    }

    #[test]
    fn a_skip_postpones_the_due_date_to_its_recheck() {
        let mut row = fold(&[created("0A", 0, 10)]).unwrap();
        row.verdict = Some(Verdict {
            outcome: "skipped".into(),
            reason: "too small".into(),
            at: 90 * DAY,
            recheck_at: Some(120 * DAY),
        });
        assert_eq!(row.due_at(90), Some(120 * DAY));
        // A new version of the object is judged afresh.
        let Change::Apply(next) = apply(Some(&row), &created("0B", 100 * DAY, 10)) else {
            panic!("applies");
        };
        assert_eq!(next.due_at(90), Some(190 * DAY));
    }

    #[test]
    fn the_copy_a_sweep_made_keeps_its_verdict_and_a_new_upload_does_not() {
        let before = fold(&[created("0A", 0, 10)]).unwrap();
        // The sweep recorded its copy: the class and entity tag it made.
        let tiered = ObjectRecord {
            storage_class: "GLACIER".into(),
            etag: Some("copy".into()),
            verdict: Some(Verdict {
                outcome: TIERED.into(),
                reason: "idle for 100 days".into(),
                at: 100 * DAY,
                recheck_at: None,
            }),
            ..before
        };
        let copy = |storage_class: &str| Observation::Created {
            sequencer: seq("0B"),
            at: 100 * DAY,
            size: 10,
            etag: Some("copy".into()),
            storage_class: storage_class.into(),
            encryption: Encryption::S3Managed,
        };
        let Change::Apply(row) = apply(Some(&tiered), &copy("GLACIER")) else {
            panic!("the copy's event applies");
        };
        assert_eq!(row.verdict, tiered.verdict, "the copy keeps its verdict");
        assert_eq!(
            (row.storage_class.as_str(), row.due_at(90)),
            ("GLACIER", None)
        );
        // The same bytes uploaded again (Standard) are a new object.
        let Change::Apply(row) = apply(Some(&tiered), &copy(STANDARD)) else {
            panic!("an upload applies");
        };
        assert_eq!(row.verdict, None);
        // A skip is not kept over a new version either.
        let skipped = ObjectRecord {
            verdict: Some(Verdict {
                outcome: "skipped".into(),
                ..tiered.verdict.clone().unwrap()
            }),
            ..tiered
        };
        let Change::Apply(row) = apply(Some(&skipped), &copy("GLACIER")) else {
            panic!("applies");
        };
        assert_eq!(row.verdict, None);
    }

    #[test]
    fn a_read_before_the_create_is_kept() {
        let row = fold(&[accessed(5_000), created("0A", 1_000, 10)]).unwrap();
        assert_eq!((row.created_at, row.last_access), (1_000, Some(5_000)));
        assert_eq!(row.encryption, Encryption::S3Managed);
    }

    #[test]
    fn a_restore_asked_for_before_the_object_s_creation_arrived_stays() {
        let requested = Observation::RestoreRequested {
            at: 5,
            days: 2,
            trace: TraceContext::default(),
        };
        // Known from S3's answer, then its creation arrives.
        let row = fold(&[listed(1, 10), requested.clone(), created("0A", 1, 10)]).unwrap();
        assert_eq!(row.sequencer, seq("0A"));
        assert_eq!(row.restore.requested_at(), Some(5));
        // Another object's creation (another entity tag) starts afresh, as
        // does a new version after the first known from an event.
        let row = fold(&[listed(1, 10), requested.clone(), created("0A", 1, 11)]).unwrap();
        assert_eq!(row.restore, Restore::None);
        let row = fold(&[created("0A", 1, 10), requested, created("0B", 2, 10)]).unwrap();
        assert_eq!(row.restore, Restore::None);
    }

    #[test]
    fn restores_are_recorded_on_known_objects_only() {
        assert_eq!(
            apply(None, &Observation::RestoreCompleted { until: Some(9) }),
            Change::Unchanged
        );
        let trace = TraceContext {
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            tracestate: None,
        };
        let row = fold(&[
            created("0A", 0, 10),
            Observation::RestoreRequested {
                at: 5,
                days: 2,
                trace: trace.clone(),
            },
        ])
        .unwrap();
        assert_eq!(
            row.restore,
            Restore::Requested {
                at: 5,
                days: 2,
                trace: trace.clone()
            }
        );
        let Change::Apply(done) = apply(
            Some(&row),
            &Observation::RestoreCompleted { until: Some(9) },
        ) else {
            panic!("applies");
        };
        assert_eq!(
            done.restore,
            Restore::Restored {
                until: Some(9),
                requested_at: Some(5),
                trace,
            }
        );
        assert_eq!(
            apply(
                Some(&done),
                &Observation::RestoreCompleted { until: Some(9) }
            ),
            Change::Unchanged
        );
    }

    proptest! {
        /// Whatever the order and repetition of reads, the last access is
        /// the latest of them.
        #[test]
        fn the_last_access_is_the_latest_read(reads in proptest::collection::vec(0i64..1_000_000, 1..20), dup in 0usize..20) {
            let mut events: Vec<Observation> = reads.iter().map(|&at| accessed(at)).collect();
            let again = events[dup % events.len()].clone();
            events.push(again);
            events.insert(reads.len() / 2, created("0A", 0, 10));
            let row = fold(&events).unwrap();
            prop_assert_eq!(row.last_access, reads.iter().copied().max());
            prop_assert!(row.live);
        }

        /// S3 events in any order, repeated, end in the state of the one
        /// with the greatest sequencer.
        #[test]
        fn any_order_of_s3_events_ends_in_the_latest(order in Just(vec![0usize, 1, 2, 3]).prop_shuffle(), dup in 0usize..4) {
            let history = [
                created("01", 10, 1),
                created("02", 20, 2),
                Observation::Deleted { sequencer: seq("03") },
                created("04", 40, 4),
            ];
            let mut events: Vec<Observation> = order.iter().map(|&i| history[i].clone()).collect();
            events.push(history[dup].clone());
            let row = fold(&events).unwrap();
            prop_assert!(row.live);
            prop_assert_eq!((row.size, row.created_at), (4, 40));
        }
    }
}
