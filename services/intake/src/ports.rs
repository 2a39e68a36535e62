//! What the API needs from the outside world, one small trait per concern.
//! Handlers depend on these, never on an AWS type.

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::{keys::UserId, quota::Account};

/// A stored value with the version it was read at, for conditional writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    /// `None` when nothing is stored yet.
    pub version: Option<u64>,
}

/// The life of an upload grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantState {
    Initiated,
    Complete,
    Rejected,
}

impl GrantState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initiated => "INITIATED",
            Self::Complete => "COMPLETE",
            Self::Rejected => "REJECTED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "INITIATED" => Some(Self::Initiated),
            "COMPLETE" => Some(Self::Complete),
            "REJECTED" => Some(Self::Rejected),
            _ => None,
        }
    }
}

/// One upload grant as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub grant_id: String,
    pub user_id: String,
    pub key: String,
    pub max_size: u64,
    pub content_type: String,
    pub state: GrantState,
    /// Bytes S3 stored under the grant, once complete.
    pub size: Option<u64>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

pub use stowage_shared::store::StoreError;

/// Users' accounts (quota, committed bytes, reservations) and their grants.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Reads an account with a strongly consistent read.
    async fn load(&self, user: &UserId) -> Result<Versioned<Account>, StoreError>;

    /// The account as this process last read or wrote it, read from the store
    /// only when it has no copy. The copy may be behind the store (another
    /// process wrote since): a [`AccountStore::save`] against it then fails
    /// with [`StoreError::Conflict`], and a decision that could not have been
    /// taken on the stored account (a refusal) must be checked against
    /// [`AccountStore::load`].
    ///
    /// The copy is shared, not copied: callers change a clone of it.
    async fn load_recent(&self, user: &UserId) -> Result<Arc<Versioned<Account>>, StoreError> {
        self.load(user).await.map(Arc::new)
    }

    /// Replaces `before` with `after` if the stored account is still at
    /// `before`'s version, together with `grant` when given, atomically.
    /// [`StoreError::Conflict`] otherwise.
    async fn save(
        &self,
        user: &UserId,
        before: &Versioned<Account>,
        after: Account,
        grant: Option<&GrantRecord>,
    ) -> Result<(), StoreError>;

    /// Records a grant on its own (a refused one).
    async fn record_grant(&self, grant: &GrantRecord) -> Result<(), StoreError>;

    /// Reads one grant.
    async fn grant(&self, grant_id: &str) -> Result<Option<GrantRecord>, StoreError>;

    /// Marks `user`'s grant complete with the size S3 stored, if it is still
    /// initiated; anything else (another user's grant, a repeat) changes nothing.
    async fn complete_grant(
        &self,
        user: &UserId,
        grant_id: &str,
        size: u64,
    ) -> Result<(), StoreError>;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Whether an object can be read now, or must be restored first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readability {
    /// Readable straight away (every class but the archive ones).
    Online,
    /// In an archive class with no restored copy.
    Archived,
    /// A restore is under way.
    Restoring,
    /// A restored copy is readable until the given time.
    Restored { until: Option<OffsetDateTime> },
}

impl Readability {
    /// The state as the API names it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Online => "ONLINE",
            Self::Archived => "ARCHIVED",
            Self::Restoring => "RESTORING",
            Self::Restored { .. } => "RESTORED",
        }
    }

    pub fn can_read(&self) -> bool {
        matches!(self, Self::Online | Self::Restored { .. })
    }
}

/// One object as S3 lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Full key, `users/<id>/<path>`.
    pub key: String,
    pub size: u64,
    pub last_modified: OffsetDateTime,
    pub storage_class: String,
    /// Entity tag without quotes.
    pub etag: String,
}

/// One object with what its metadata says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    pub object: StoredObject,
    pub content_type: Option<String>,
    pub readability: Readability,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPage {
    pub objects: Vec<StoredObject>,
    /// More objects follow the last one.
    pub truncated: bool,
}

/// How a download is presented to the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadHeaders {
    /// `Content-Disposition` the response carries.
    pub disposition: String,
    /// `Content-Type` the response carries.
    pub content_type: String,
}

/// The bucket, as intake uses it: only ever with keys built from a caller's
/// own prefix.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Objects whose keys start with `prefix`, after `start_after` if given,
    /// in key order, at most `limit`.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ObjectPage, StoreError>;

    /// One object's metadata; `None` when there is no such object.
    async fn head(&self, key: &str) -> Result<Option<ObjectHead>, StoreError>;

    /// A presigned GET of `key`, valid for `ttl`.
    async fn download_url(
        &self,
        key: &str,
        headers: &DownloadHeaders,
        ttl: std::time::Duration,
    ) -> Result<String, StoreError>;

    /// Deletes `key`; deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Checks that the bucket answers.
    async fn ping(&self) -> Result<(), StoreError>;
}
