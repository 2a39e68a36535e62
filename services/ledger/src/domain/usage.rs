//! How one S3 event changes the ledger: the object's row and its owner's
//! totals change together, or not at all.
//!
//! Each object row remembers the sequencer it last applied and the distinct
//! events applied at that sequencer. An event with a smaller sequencer is
//! stale; one already applied at the same sequencer is a duplicate. On AWS an
//! equal sequencer always means the same event again; the emulators give
//! every event of a key one sequencer, so a different event at the same
//! sequencer applies as S3 holds the key ([`decide_holding`]), or in arrival
//! order when that is not known. A deleted object keeps its row as a
//! tombstone, so a late `Object Created` cannot bring it back.
//!
//! S3 reports a change of storage class without a sequencer. Such a change
//! is read as "the object with this entity tag is now in this class", which
//! the caller has just read from S3: it applies to the live row of that
//! object and to nothing else, so it needs no place in the key's order.

use std::collections::BTreeMap;

use stowage_events::stowage::UploadViolation;

use super::sequencer::Sequencer;

/// The storage class of objects whose events do not say otherwise.
pub const DEFAULT_STORAGE_CLASS: &str = "STANDARD";

/// What an S3 event did to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created {
        size: u64,
        etag: Option<String>,
        storage_class: String,
    },
    /// The object moved to another storage class in place. S3 reports the
    /// size with it; without one, the live row's size is kept.
    ClassChanged {
        size: Option<u64>,
        etag: Option<String>,
        storage_class: String,
    },
    Deleted,
}

/// One S3 event, reduced to what the ledger needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    pub change: Change,
    /// `None` only for a [`Change::ClassChanged`] of the object with that
    /// entity tag, in the class S3 holds it in now.
    pub sequencer: Option<Sequencer>,
}

impl ObjectEvent {
    /// Identifies the event among others at the same sequencer.
    pub fn fingerprint(&self) -> String {
        match &self.change {
            Change::Created {
                size,
                etag,
                storage_class,
            } => {
                format!(
                    "created:{}:{size}:{storage_class}",
                    etag.as_deref().unwrap_or("")
                )
            }
            Change::ClassChanged {
                size,
                etag,
                storage_class,
            } => format!(
                "class:{}:{}:{storage_class}",
                etag.as_deref().unwrap_or(""),
                size.map(|s| s.to_string()).unwrap_or_default()
            ),
            Change::Deleted => "deleted".to_string(),
        }
    }
}

/// The ledger's row of one object (or tombstone of a deleted one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRow {
    /// False for a tombstone.
    pub live: bool,
    pub size: u64,
    pub storage_class: String,
    pub etag: Option<String>,
    /// The sequencer of the last applied event.
    pub sequencer: Sequencer,
    /// Fingerprints of the events applied at `sequencer`.
    pub applied: Vec<String>,
    /// The live object came by a move to another storage class of the one
    /// already stored (a copy onto itself, or S3 changing its class), not by
    /// an upload.
    pub reclassified: bool,
    /// The owner's usage revision its last change made (0 when not known):
    /// while the totals are still at it, announcing them again tells
    /// exactly what that change's announcement told.
    pub revision: u64,
    /// How the upload that brought the live object broke its grant, as its
    /// change announced; `None` for any other change.
    pub violation: Option<UploadViolation>,
}

/// One user's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub used_bytes: u64,
    pub object_count: u64,
    pub by_storage_class: BTreeMap<String, u64>,
    /// Grows by one with every applied event.
    pub revision: u64,
}

impl Usage {
    fn add(&mut self, size: u64, class: &str) {
        self.used_bytes += size;
        self.object_count += 1;
        *self.by_storage_class.entry(class.to_string()).or_default() += size;
    }

    fn remove(&mut self, size: u64, class: &str) {
        self.used_bytes = self.used_bytes.saturating_sub(size);
        self.object_count = self.object_count.saturating_sub(1);
        if let Some(bytes) = self.by_storage_class.get_mut(class) {
            *bytes = bytes.saturating_sub(size);
            if *bytes == 0 {
                self.by_storage_class.remove(class);
            }
        }
    }
}

/// What to do with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Already applied.
    Duplicate,
    /// A later event of the key was applied already.
    Stale,
    /// A change of class without a sequencer, of an object whose own
    /// `Object Created` is not applied yet: it can apply only after it.
    Early,
    /// Write these together.
    Apply { object: ObjectRow, usage: Usage },
}

/// Decides how `event` changes a key's row `current` and its owner's `usage`.
pub fn decide(current: Option<&ObjectRow>, usage: &Usage, event: &ObjectEvent) -> Decision {
    decide_holding(current, usage, event, None)
}

/// [`decide`], knowing what S3 holds at the key when that is asked: `held`
/// is `Some` of the entity tag of the object there (`None`: nothing). An
/// event at the row's sequencer that is not one applied already (which only
/// the emulators send: they give every event of a key one sequencer) then
/// applies only if it agrees with S3: an upload S3 holds, a delete of the
/// counted object S3 no longer holds. Without it, such events apply in the
/// order they arrive.
pub fn decide_holding(
    current: Option<&ObjectRow>,
    usage: &Usage,
    event: &ObjectEvent,
    held: Option<Option<&str>>,
) -> Decision {
    let Some(sequencer) = &event.sequencer else {
        return reclassify(current, usage, &event.change);
    };
    let fingerprint = event.fingerprint();
    let mut applied = vec![fingerprint.clone()];
    if let Some(row) = current {
        match sequencer.cmp(&row.sequencer) {
            std::cmp::Ordering::Less => return Decision::Stale,
            std::cmp::Ordering::Equal if row.applied.contains(&fingerprint) => {
                return Decision::Duplicate;
            }
            std::cmp::Ordering::Equal => {
                if let Some(held) = held
                    && !agrees(row, &event.change, held)
                {
                    return Decision::Stale;
                }
                applied = [row.applied.clone(), applied].concat();
            }
            std::cmp::Ordering::Greater => {}
        }
    }
    let live = current.filter(|r| r.live);
    let change = match &event.change {
        Change::ClassChanged {
            size,
            etag,
            storage_class,
        } => match (size, live) {
            (Some(size), _) => Change::Created {
                size: *size,
                etag: etag.clone(),
                storage_class: storage_class.clone(),
            },
            (None, Some(row)) => Change::Created {
                size: row.size,
                etag: row.etag.clone(),
                storage_class: storage_class.clone(),
            },
            // Nothing known to move: the object's own events will say more.
            (None, None) => return Decision::Stale,
        },
        other => other.clone(),
    };
    let mut usage = usage.clone();
    if let Some(row) = live {
        usage.remove(row.size, &row.storage_class);
    }
    let object = match &change {
        Change::Created {
            size,
            etag,
            storage_class,
        } => {
            usage.add(*size, storage_class);
            ObjectRow {
                live: true,
                size: *size,
                storage_class: storage_class.clone(),
                etag: etag.clone(),
                sequencer: sequencer.clone(),
                applied,
                reclassified: false,
                revision: 0,
                violation: None,
            }
        }
        Change::ClassChanged { .. } | Change::Deleted => ObjectRow {
            live: false,
            size: 0,
            storage_class: current.map_or(DEFAULT_STORAGE_CLASS.to_string(), |r| {
                r.storage_class.clone()
            }),
            etag: None,
            sequencer: sequencer.clone(),
            applied,
            reclassified: false,
            revision: 0,
            violation: None,
        },
    };
    usage.revision += 1;
    Decision::Apply { object, usage }
}

/// Whether a change at the sequencer of `row` agrees with S3 holding an
/// object with entity tag `held` (or nothing) at the key.
fn agrees(row: &ObjectRow, change: &Change, held: Option<&str>) -> bool {
    match change {
        Change::Created { etag, .. } | Change::ClassChanged { etag, .. } => {
            etag.is_some() && unquoted(etag.as_deref()) == unquoted(held)
        }
        Change::Deleted => row.live && unquoted(row.etag.as_deref()) != unquoted(held),
    }
}

/// An entity tag without the quotes S3 puts around it in some places.
pub fn unquoted(etag: Option<&str>) -> Option<&str> {
    etag.map(|e| e.trim_matches('"'))
}

/// Moves the live object with the change's entity tag to the change's
/// class; a row of another object, or none, means that object's creation is
/// still to be applied. The row keeps its sequencer and the events applied
/// at it, so the key's later events apply on top as before.
fn reclassify(current: Option<&ObjectRow>, usage: &Usage, change: &Change) -> Decision {
    let Change::ClassChanged {
        etag: Some(etag),
        storage_class,
        ..
    } = change
    else {
        return Decision::Stale;
    };
    let Some(row) =
        current.filter(|r| r.live && unquoted(r.etag.as_deref()) == unquoted(Some(etag)))
    else {
        return Decision::Early;
    };
    if &row.storage_class == storage_class {
        return Decision::Duplicate;
    }
    let mut usage = usage.clone();
    usage.remove(row.size, &row.storage_class);
    usage.add(row.size, storage_class);
    usage.revision += 1;
    // The object's own `Object Created` delivered again reads its class from
    // S3, the new one: it is still the event applied already.
    let created_again = ObjectEvent {
        change: Change::Created {
            size: row.size,
            etag: row.etag.clone(),
            storage_class: storage_class.clone(),
        },
        sequencer: None,
    }
    .fingerprint();
    let mut applied = row.applied.clone();
    if !applied.contains(&created_again) {
        applied.push(created_again);
    }
    Decision::Apply {
        object: ObjectRow {
            storage_class: storage_class.clone(),
            applied,
            reclassified: true,
            ..row.clone()
        },
        usage,
    }
}

/// What S3 holds at a key, as a bucket listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub size: u64,
    pub storage_class: String,
    pub etag: Option<String>,
}

/// The fingerprint reconciliation leaves on the rows it corrects.
pub const RECONCILED: &str = "reconciled";

/// Corrects a key's row to what S3 holds, or `None` when they agree. The row
/// keeps its sequencer, so any event S3 sends later still applies on top; a
/// key without a row gets the lowest sequencer for the same reason.
pub fn reconcile(
    current: Option<&ObjectRow>,
    usage: &Usage,
    observed: Option<&Observed>,
) -> Option<(ObjectRow, Usage)> {
    let live = current.filter(|r| r.live);
    match (live, observed) {
        (Some(row), Some(seen))
            if row.size == seen.size && row.storage_class == seen.storage_class =>
        {
            return None;
        }
        (None, None) => return None,
        _ => {}
    }
    let mut usage = usage.clone();
    if let Some(row) = live {
        usage.remove(row.size, &row.storage_class);
    }
    let sequencer = current.map_or_else(Sequencer::lowest, |r| r.sequencer.clone());
    let mut applied = current.map(|r| r.applied.clone()).unwrap_or_default();
    if !applied.iter().any(|a| a == RECONCILED) {
        applied.push(RECONCILED.to_string());
    }
    let row = match observed {
        Some(seen) => {
            usage.add(seen.size, &seen.storage_class);
            ObjectRow {
                live: true,
                size: seen.size,
                storage_class: seen.storage_class.clone(),
                etag: seen.etag.clone(),
                sequencer,
                applied,
                // The object counted, found in another class (a copy in
                // parts has an entity tag of its own, and is not told).
                reclassified: live.is_some_and(|r| {
                    unquoted(r.etag.as_deref()).is_some()
                        && unquoted(r.etag.as_deref()) == unquoted(seen.etag.as_deref())
                }),
                revision: 0,
                violation: None,
            }
        }
        None => ObjectRow {
            live: false,
            size: 0,
            storage_class: live.map_or(DEFAULT_STORAGE_CLASS.to_string(), |r| {
                r.storage_class.clone()
            }),
            etag: None,
            sequencer,
            applied,
            reclassified: false,
            revision: 0,
            violation: None,
        },
    };
    usage.revision += 1;
    Some((row, usage))
}

/// A user's totals as their live rows add up.
pub fn totals<'a>(rows: impl IntoIterator<Item = &'a ObjectRow>, revision: u64) -> Usage {
    let mut usage = Usage {
        revision,
        ..Usage::default()
    };
    for row in rows.into_iter().filter(|r| r.live) {
        usage.add(row.size, &row.storage_class);
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(seq: &str, size: u64, etag: &str) -> ObjectEvent {
        ObjectEvent {
            change: Change::Created {
                size,
                etag: Some(etag.into()),
                storage_class: DEFAULT_STORAGE_CLASS.into(),
            },
            sequencer: Some(Sequencer::parse(seq).unwrap()),
        }
    }

    fn deleted(seq: &str) -> ObjectEvent {
        ObjectEvent {
            change: Change::Deleted,
            sequencer: Some(Sequencer::parse(seq).unwrap()),
        }
    }

    /// Applies events in order to one key, as the store would.
    fn run(events: &[ObjectEvent]) -> (Option<ObjectRow>, Usage, Vec<&'static str>) {
        let (mut row, mut usage, mut outcomes) = (None, Usage::default(), Vec::new());
        for event in events {
            match decide(row.as_ref(), &usage, event) {
                Decision::Duplicate => outcomes.push("duplicate"),
                Decision::Stale => outcomes.push("stale"),
                Decision::Early => outcomes.push("early"),
                Decision::Apply { object, usage: u } => {
                    row = Some(object);
                    usage = u;
                    outcomes.push("applied");
                }
            }
        }
        (row, usage, outcomes)
    }

    #[test]
    fn a_new_object_is_counted_once() {
        let (_, usage, outcomes) = run(&[created("01", 10, "a"), created("01", 10, "a")]);
        assert_eq!(
            (usage.used_bytes, usage.object_count, usage.revision),
            (10, 1, 1)
        );
        assert_eq!(outcomes, ["applied", "duplicate"]);
    }

    #[test]
    fn an_overwrite_changes_usage_by_the_difference() {
        let (_, usage, _) = run(&[created("01", 10, "a"), created("02", 4, "b")]);
        assert_eq!((usage.used_bytes, usage.object_count), (4, 1));
        assert_eq!(usage.by_storage_class.get("STANDARD"), Some(&4));
    }

    #[test]
    fn a_late_create_cannot_resurrect_a_deleted_object() {
        let (row, usage, outcomes) =
            run(&[created("01", 10, "a"), deleted("03"), created("02", 7, "c")]);
        assert_eq!((usage.used_bytes, usage.object_count), (0, 0));
        assert!(!row.unwrap().live);
        assert_eq!(outcomes, ["applied", "applied", "stale"]);
    }

    #[test]
    fn different_events_at_one_sequencer_apply_in_arrival_order() {
        // The emulators give a put and the delete right after it one sequencer.
        let (_, usage, outcomes) = run(&[
            created("05", 10, "a"),
            deleted("05"),
            created("05", 10, "a"),
        ]);
        assert_eq!((usage.used_bytes, usage.object_count), (0, 0));
        assert_eq!(outcomes, ["applied", "applied", "duplicate"]);
    }

    #[test]
    fn events_sharing_a_sequencer_apply_as_s3_holds_the_key() {
        // The emulators give every event of a key one sequencer; what S3
        // holds decides between them, whatever their order.
        let apply =
            |row: Option<ObjectRow>, usage: Usage, event: &ObjectEvent, held| match decide_holding(
                row.as_ref(),
                &usage,
                event,
                Some(held),
            ) {
                Decision::Apply { object, usage } => (Some(object), usage, "applied"),
                Decision::Stale => (row, usage, "stale"),
                other => panic!("{other:?}"),
            };
        // Uploaded twice: S3 holds the second.
        let (row, usage, first) =
            apply(None, Usage::default(), &created("05", 500, "b"), Some("b"));
        let (row, usage, second) = apply(row, usage, &created("05", 1000, "a"), Some("b"));
        assert_eq!((first, second), ("applied", "stale"));
        assert_eq!(
            (usage.used_bytes, row.unwrap().etag.as_deref()),
            (500, Some("b"))
        );
        // Uploaded, then deleted, delivered the other way round.
        let (row, usage, first) = apply(None, Usage::default(), &deleted("05"), None);
        let (row, usage, second) = apply(row, usage, &created("05", 10, "c"), None);
        assert_eq!((first, second), ("applied", "stale"));
        assert!(!row.unwrap().live);
        assert_eq!(usage.used_bytes, 0);
        // A delete of the counted object applies; one of an object S3 still
        // holds does not.
        let (row, usage, _) = apply(None, Usage::default(), &created("05", 10, "c"), Some("c"));
        let (_, _, kept) = apply(row.clone(), usage.clone(), &deleted("05"), Some("c"));
        let (_, gone, deleted_now) = apply(row, usage, &deleted("05"), None);
        assert_eq!(
            (kept, deleted_now, gone.used_bytes),
            ("stale", "applied", 0)
        );
    }

    #[test]
    fn a_storage_class_change_moves_bytes_without_changing_the_total() {
        let to_glacier = ObjectEvent {
            change: Change::ClassChanged {
                size: None,
                etag: None,
                storage_class: "GLACIER".into(),
            },
            sequencer: Some(Sequencer::parse("02").unwrap()),
        };
        let (row, usage, _) = run(&[created("01", 10, "a"), to_glacier]);
        assert_eq!((usage.used_bytes, usage.object_count), (10, 1));
        assert_eq!(usage.by_storage_class, [("GLACIER".to_string(), 10)].into());
        assert_eq!(row.unwrap().etag.as_deref(), Some("a"));
    }

    fn reclassed(etag: &str, class: &str) -> ObjectEvent {
        ObjectEvent {
            change: Change::ClassChanged {
                size: None,
                etag: Some(etag.into()),
                storage_class: class.into(),
            },
            sequencer: None,
        }
    }

    #[test]
    fn a_class_change_without_a_sequencer_moves_only_its_own_object() {
        let (row, usage, outcomes) = run(&[
            reclassed("a", "GLACIER"),
            created("01", 10, "a"),
            reclassed("b", "GLACIER"),
            reclassed("\"a\"", "GLACIER"),
            reclassed("a", "GLACIER"),
            created("02", 7, "c"),
            reclassed("a", "DEEP_ARCHIVE"),
        ]);
        assert_eq!(
            outcomes,
            [
                "early",
                "applied",
                "early",
                "applied",
                "duplicate",
                "applied",
                "early"
            ]
        );
        assert_eq!((usage.used_bytes, usage.object_count), (7, 1));
        assert_eq!(usage.by_storage_class, [("STANDARD".to_string(), 7)].into());
        assert_eq!(usage.revision, 3);
        let row = row.unwrap();
        assert_eq!(row.sequencer, Sequencer::parse("02").unwrap());
        assert_eq!(row.storage_class, "STANDARD");
    }

    #[test]
    fn an_upload_delivered_again_after_a_class_change_is_a_duplicate() {
        // A PutObject's class is read from S3, which by then reports the
        // class the object moved to.
        let mut again = created("05", 10, "a");
        if let Change::Created { storage_class, .. } = &mut again.change {
            *storage_class = "GLACIER".into();
        }
        let (row, usage, outcomes) = run(&[
            created("05", 10, "a"),
            reclassed("a", "GLACIER"),
            again.clone(),
            reclassed("a", "DEEP_ARCHIVE"),
            again,
        ]);
        assert_eq!(
            outcomes,
            ["applied", "applied", "duplicate", "applied", "duplicate"]
        );
        assert_eq!(usage.revision, 3);
        assert_eq!(row.unwrap().storage_class, "DEEP_ARCHIVE");
        assert_eq!(
            usage.by_storage_class,
            [("DEEP_ARCHIVE".to_string(), 10)].into()
        );
    }

    #[test]
    fn a_class_change_without_a_sequencer_keeps_the_row_in_the_keys_order() {
        let (row, usage, outcomes) = run(&[
            created("05", 10, "a"),
            reclassed("a", "GLACIER"),
            created("05", 10, "a"),
            created("04", 3, "z"),
            deleted("06"),
        ]);
        assert_eq!(
            outcomes,
            ["applied", "applied", "duplicate", "stale", "applied"]
        );
        assert_eq!((usage.used_bytes, usage.object_count), (0, 0));
        assert!(usage.by_storage_class.is_empty());
        assert!(!row.unwrap().live);
    }

    #[test]
    fn reconciliation_corrects_rows_and_totals_to_the_bucket() {
        let (row, usage, _) = run(&[created("05", 10, "a")]);
        let seen = Observed {
            size: 4,
            storage_class: "GLACIER".into(),
            etag: Some("b".into()),
        };
        let (fixed, fixed_usage) = reconcile(row.as_ref(), &usage, Some(&seen)).unwrap();
        assert_eq!((fixed_usage.used_bytes, fixed_usage.object_count), (4, 1));
        assert_eq!(fixed.sequencer, Sequencer::parse("05").unwrap());
        assert!(!fixed.reclassified, "another object than the one counted");
        assert!(reconcile(Some(&fixed), &fixed_usage, Some(&seen)).is_none());

        // The object counted, found in another class, was not uploaded.
        let moved = Observed {
            storage_class: "DEEP_ARCHIVE".into(),
            ..seen
        };
        let (moved, _) = reconcile(Some(&fixed), &fixed_usage, Some(&moved)).unwrap();
        assert!(moved.reclassified);

        let (gone, gone_usage) = reconcile(Some(&fixed), &fixed_usage, None).unwrap();
        assert!(!gone.live);
        assert_eq!((gone_usage.used_bytes, gone_usage.object_count), (0, 0));

        // A later event still applies on top of a reconciled row.
        let next = decide(Some(&gone), &gone_usage, &created("06", 3, "c"));
        assert!(matches!(next, Decision::Apply { usage, .. } if usage.used_bytes == 3));
    }

    #[test]
    fn deleting_an_unknown_object_leaves_a_tombstone_and_no_debt() {
        let (row, usage, _) = run(&[deleted("09"), created("08", 5, "x")]);
        assert_eq!(usage.used_bytes, 0);
        assert!(!row.unwrap().live);
    }
}
