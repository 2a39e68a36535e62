//! What the ledger needs from the outside world, one small trait per concern.

use async_trait::async_trait;

use crate::domain::usage::{ObjectRow, Usage};

/// A key's row and its owner's totals as read, with what a conditional write
/// needs to know that neither changed since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub object: Option<ObjectRow>,
    /// Version of the object row; `None` when there is none.
    pub object_version: Option<u64>,
    pub usage: Usage,
    /// False when the user has no usage row yet.
    pub usage_exists: bool,
    /// The newest upload grant for the key, if any.
    pub grant: Option<GrantNote>,
}

pub use stowage_shared::store::StoreError;

/// One user's rows written together: the objects that changed and the
/// totals after them, each conditioned on the version it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCommit {
    pub user: String,
    /// The totals' revision as read; `None` when the user had no usage row.
    pub usage_read: Option<u64>,
    pub usage: Usage,
    pub objects: Vec<ObjectCommit>,
}

/// One object row of a [`UserCommit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectCommit {
    pub key: String,
    /// The row's version as read; `None` when there was no row.
    pub version_read: Option<u64>,
    pub row: ObjectRow,
}

/// The longest key the ledger's rows can hold, in bytes: DynamoDB's sort
/// keys hold 1024, and a row's key starts with its kind (`GRANT#`).
pub const MAX_KEY_BYTES: usize = 1024 - "GRANT#".len();

/// The ledger's rows: objects, tombstones, usage totals.
#[async_trait]
pub trait LedgerStore: Send + Sync + 'static {
    /// Reads each `(user, key)`'s row, its owner's totals and its grant,
    /// strongly consistent; one snapshot per pair, in order. The reads are
    /// not one transaction: a commit's conditions catch anything that
    /// changed in between.
    async fn snapshots(&self, wanted: &[(&str, &str)]) -> Result<Vec<Snapshot>, StoreError>;

    /// Writes every object row and totals row of `commits` in one
    /// transaction, only if none changed since it was read. A user appears
    /// at most once, a key at most once.
    async fn commit_all(&self, commits: &[UserCommit]) -> Result<(), StoreError>;

    /// Remembers the newest upload grant for a key.
    async fn record_grant(&self, grant: &GrantNote) -> Result<(), StoreError>;

    /// Remembers the newest upload grant for each key of `grants`, in as few
    /// requests as the store allows; one outcome per grant, in order.
    async fn record_grants(&self, grants: &[GrantNote]) -> Vec<Result<(), StoreError>> {
        let mut outcomes = Vec::with_capacity(grants.len());
        for grant in grants {
            outcomes.push(self.record_grant(grant).await);
        }
        outcomes
    }

    /// Reads `key`'s row and `user`'s totals, strongly consistent.
    async fn snapshot(&self, user: &str, key: &str) -> Result<Snapshot, StoreError> {
        self.snapshots(&[(user, key)])
            .await?
            .pop()
            .ok_or_else(|| StoreError::Other(anyhow::anyhow!("no snapshot of {key}")))
    }

    /// Writes the object row and the totals in one transaction, only if
    /// neither changed since `before` was read.
    async fn commit(
        &self,
        user: &str,
        key: &str,
        before: &Snapshot,
        object: &ObjectRow,
        usage: &Usage,
    ) -> Result<(), StoreError> {
        self.commit_all(&[UserCommit {
            user: user.to_string(),
            usage_read: before.usage_exists.then_some(before.usage.revision),
            usage: usage.clone(),
            objects: vec![ObjectCommit {
                key: key.to_string(),
                version_read: before.object_version,
                row: object.clone(),
            }],
        }])
        .await
    }
}

/// What the ledger keeps of an `UploadGranted` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantNote {
    pub user_id: String,
    pub key: String,
    pub grant_id: String,
    pub max_size: u64,
    /// Unix time the grant was issued; 0 when not known.
    pub issued_at: i64,
    /// Unix time the grant expires.
    pub expires_at: i64,
    /// The trace the grant was issued in, which the upload's processing
    /// joins.
    pub trace: stowage_events::TraceContext,
}

/// What S3 holds at a key now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    pub etag: Option<String>,
    pub storage_class: String,
}

/// Asks S3 about a key, to resolve keys an event spells ambiguously.
#[async_trait]
pub trait ObjectProbe: Send + Sync + 'static {
    async fn head(&self, key: &str) -> anyhow::Result<Option<ObjectHead>>;
}

/// Publishes the ledger's `UsageChanged.v1` events.
#[async_trait]
pub trait UsagePublisher: Send + Sync + 'static {
    async fn publish(&self, event: &stowage_events::UsageChangedV1) -> anyhow::Result<()>;

    /// Publishes several events and reports each one's fate, in order.
    async fn publish_all(
        &self,
        events: &[stowage_events::UsageChangedV1],
    ) -> Vec<anyhow::Result<()>> {
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            results.push(self.publish(event).await);
        }
        results
    }
}

/// One object as S3 lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub storage_class: String,
}

/// Lists what the bucket holds, for reconciliation.
#[async_trait]
pub trait BucketLister: Send + Sync + 'static {
    /// Every object under `prefix`.
    async fn list(&self, prefix: &str) -> anyhow::Result<Vec<ListedObject>>;
    /// The user ids that have a folder in the bucket.
    async fn users(&self) -> anyhow::Result<Vec<String>>;
}

/// The ledger's rows of one user, for reconciliation.
#[async_trait]
pub trait LedgerRows: Send + Sync + 'static {
    /// Every object row (live or tombstone) of `user`, with its version.
    async fn objects(&self, user: &str) -> Result<Vec<(String, ObjectRow, u64)>, StoreError>;
    /// Every user with a usage row.
    async fn users(&self) -> Result<Vec<String>, StoreError>;
    /// Replaces `user`'s totals if they are still at `before`'s revision.
    async fn replace_usage(
        &self,
        user: &str,
        before: &Snapshot,
        usage: &Usage,
    ) -> Result<(), StoreError>;
}
