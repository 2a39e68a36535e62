//! What the lifecycle service needs from the outside world, one small trait
//! per concern.

use async_trait::async_trait;
use futures::stream::BoxStream;
use stowage_events::{ObjectRestoredV1, ObjectTieredV1};

pub use stowage_shared::store::StoreError;

use crate::domain::{
    policy::{ArchiveClass, IndexedDays},
    projection::{Encryption, ObjectRecord, Observation, Verdict},
};

/// A projection row as read, with the version a conditional write checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub record: ObjectRecord,
    pub version: u64,
}

/// The projection rows, one per key.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Reads `key`'s row, strongly consistent.
    async fn get(&self, user: &str, key: &str) -> Result<Option<Versioned>, StoreError>;

    /// Writes `key`'s row, due at `due_at` (`None`: not in the due index),
    /// only if its version is still `before` (`None`: no row yet).
    async fn put(
        &self,
        user: &str,
        key: &str,
        record: &ObjectRecord,
        due_at: Option<i64>,
        before: Option<u64>,
    ) -> Result<(), StoreError>;

    /// Claims the rows of a sweep's copies: writes each row of `due` as it
    /// was read, at the next version and due at `due_at`, if it is still at
    /// the version read. Answers for each row, in order: claimed, or
    /// [`StoreError::Conflict`] when the row changed or another sweep
    /// claimed it first. One write per row unless the store can do better.
    async fn claim(&self, due: &[&DueObject], due_at: i64) -> Vec<Result<(), StoreError>> {
        claim_each(self, due, due_at).await
    }

    /// Every row of `user` with its key and the date it is indexed at, for
    /// re-indexing after a policy change.
    async fn rows(&self, user: &str) -> Result<Vec<(String, Versioned, Option<i64>)>, StoreError>;

    /// The days the due index's dates were last brought in line with, and
    /// the version a conditional write checks; `None` before the first time.
    async fn indexed_days(&self) -> Result<Option<(IndexedDays, u64)>, StoreError>;

    /// Records `days` as what the dates follow, only if the stored version
    /// is still `before` (`None`: nothing stored).
    async fn set_indexed_days(
        &self,
        days: &IndexedDays,
        before: Option<u64>,
    ) -> Result<(), StoreError>;
}

/// An object the due index returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueObject {
    pub user: String,
    pub key: String,
    pub due_at: i64,
    pub row: Versioned,
}

/// What a sweep writes back for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The object is in `storage_class` now (the sweep's copy put it there,
    /// or S3 was found holding it there): the row takes the class, the
    /// entity tag `etag` and `verdict`, and leaves the index, if it is
    /// still at `version`, the row the copy was decided on (with
    /// `from_etag`, the entity tag the copy was conditional on), or if it
    /// already says what the copy made (the copy's own `Object Created` was
    /// applied first: only the verdict is new). A row written otherwise
    /// since (an upload of the same bytes has the same entity tag) keeps
    /// what it says.
    Tiered {
        user: String,
        key: String,
        version: u64,
        from_etag: String,
        storage_class: String,
        etag: String,
        verdict: Verdict,
    },
    /// The object stays: the row records why (unless `verdict` is `None`)
    /// and is due again at `due_at` (or leaves the index), if it is still
    /// at `version`.
    Kept {
        user: String,
        key: String,
        version: u64,
        due_at: Option<i64>,
        verdict: Option<Verdict>,
    },
}

/// The sparse index of objects by the date they become due.
#[async_trait]
pub trait DueIndex: Send + Sync + 'static {
    /// Every indexed object due at or before `until` (unix seconds). Its
    /// cost grows with the number returned, not with the table.
    async fn due(&self, until: i64) -> Result<Vec<DueObject>, StoreError>;

    /// Every indexed row, whatever its date, a page at a time, shard after
    /// shard.
    fn indexed(&self) -> BoxStream<'_, Result<Vec<DueObject>, StoreError>>;

    /// Writes the sweep's outcomes, many to a request. A settlement whose
    /// condition fails is dropped: the row changed meanwhile and the event
    /// that changed it is the truth.
    async fn settle(&self, settlements: &[Settlement]) -> Result<(), StoreError>;
}

/// What S3 holds at a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    pub etag: Option<String>,
    pub storage_class: String,
    pub encryption: Encryption,
    /// Unix seconds.
    pub last_modified: Option<i64>,
}

impl ObjectHead {
    /// What this HEAD tells of the object, to give it a row: modified at
    /// `last_modified` (`now` when S3 did not say).
    pub fn observed(self, now: i64) -> Observation {
        Observation::Listed {
            at: self.last_modified.unwrap_or(now),
            size: self.size,
            etag: self.etag,
            storage_class: self.storage_class,
            encryption: self.encryption,
        }
    }
}

/// One page of a bucket listing: keys, and where the next page starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    pub next: Option<String>,
}

/// Why a copy did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The object is no longer the version the copy was conditional on
    /// (overwritten or deleted).
    #[error("the object changed since it was planned")]
    Changed,
    /// The copy found the object changed, and S3 holds this at its key now
    /// (`None`: nothing).
    #[error("the object changed since it was planned")]
    Replaced(Option<ObjectHead>),
    /// S3 holds the object in an archive class already (`InvalidObjectState`):
    /// it cannot be copied without a restore.
    #[error("S3 holds the object in an archive class (InvalidObjectState)")]
    Archived,
    /// The sweep could not claim the object's row (the write failed): it
    /// was not copied, and stays due for the next sweep.
    #[error("the row was not claimed: {0:#}")]
    NotClaimed(anyhow::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What a restore request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreStart {
    /// S3 accepted it (or extended a restored copy).
    Started,
    /// A restore of the object is already under way.
    InProgress,
    /// The object is not in an archive class.
    NotArchived,
    /// No such object.
    NotFound,
}

/// The bucket's objects, as the lifecycle service changes them.
#[async_trait]
pub trait Bucket: Send + Sync + 'static {
    /// What S3 holds at `key`, if anything.
    async fn head(&self, key: &str) -> anyhow::Result<Option<ObjectHead>>;

    /// Up to 1,000 keys under `prefix` in key order, from where `after`
    /// (a previous page's `next`) left off.
    async fn list(&self, prefix: &str, after: Option<String>) -> anyhow::Result<KeyPage>;

    /// Copies `key` onto itself in `class`, keeping its content type,
    /// metadata and encryption, only if its entity tag is still `etag`;
    /// in parts (first and last byte of each) when `parts` is given.
    /// Returns the new entity tag.
    async fn copy_to_class(
        &self,
        key: &str,
        etag: &str,
        class: ArchiveClass,
        encryption: &Encryption,
        parts: Option<&[(u64, u64)]>,
    ) -> Result<String, CopyError>;

    /// Starts restoring archived `key`, stored in `storage_class`, for
    /// `days` at `tier` (`Standard`, `Bulk` or `Expedited`), as far as the
    /// class allows them.
    async fn restore(
        &self,
        key: &str,
        storage_class: &str,
        days: u32,
        tier: &str,
    ) -> anyhow::Result<RestoreStart>;
}

/// Publishes the lifecycle service's events.
#[async_trait]
pub trait LifecyclePublisher: Send + Sync + 'static {
    async fn tiered(&self, events: &[ObjectTieredV1]) -> anyhow::Result<()>;
    async fn restored(&self, event: &ObjectRestoredV1) -> anyhow::Result<()>;
}

/// [`Projection::claim`] as one conditional write per row, for stores that
/// cannot do better.
pub async fn claim_each<P: Projection + ?Sized>(
    projection: &P,
    due: &[&DueObject],
    due_at: i64,
) -> Vec<Result<(), StoreError>> {
    let mut claimed = Vec::with_capacity(due.len());
    for row in due {
        claimed.push(
            projection
                .put(
                    &row.user,
                    &row.key,
                    &row.row.record,
                    Some(due_at),
                    Some(row.row.version),
                )
                .await,
        );
    }
    claimed
}
