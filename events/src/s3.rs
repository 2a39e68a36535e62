//! S3's own EventBridge events (`source: aws.s3`), typed as far as Stowage
//! reads them. S3 sends them to the account's default bus when the bucket has
//! EventBridge notifications on.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `source` of every S3 event.
pub const SOURCE: &str = "aws.s3";
/// `detail-type` of a new or overwritten object.
pub const OBJECT_CREATED: &str = "Object Created";
/// `detail-type` of a deleted object (including lifecycle expiration).
pub const OBJECT_DELETED: &str = "Object Deleted";
/// `detail-type` of an object moved to another storage class in place
/// (lifecycle transitions).
pub const OBJECT_STORAGE_CLASS_CHANGED: &str = "Object Storage Class Changed";
/// `detail-type` of a finished restore of an archived object: a temporary
/// copy is readable until `restore-expiry-time`.
pub const OBJECT_RESTORE_COMPLETED: &str = "Object Restore Completed";

/// The detail of S3's `Object Created`, `Object Deleted` and
/// `Object Storage Class Changed` events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct ObjectEventDetail {
    #[serde(default)]
    pub version: String,
    pub bucket: Bucket,
    pub object: S3Object,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip_address: Option<String>,
    /// `PutObject`, `POST Object`, `CopyObject`, `CompleteMultipartUpload`,
    /// `DeleteObject` or `Lifecycle Expiration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// On deletes: `Permanently Deleted` or `Delete Marker Created`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_type: Option<String>,
    /// On storage class changes: the class the object moved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_storage_class: Option<String>,
}

/// The bucket an S3 event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Bucket {
    pub name: String,
}

/// The object an S3 event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct S3Object {
    /// The object key as the event carries it; see the ledger's key
    /// resolution for how it may be encoded.
    pub key: String,
    /// Object size in bytes; absent on deletes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// Hex string ordering the events of one key; see
    /// [`crate::sequencer::Sequencer`]. S3 gives one with every
    /// `Object Created` and `Object Deleted`, but not with
    /// `Object Storage Class Changed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequencer: Option<String>,
}

/// The detail of S3's `Object Restore Completed` event. Its object carries
/// no sequencer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct RestoreCompletedDetail {
    #[serde(default)]
    pub version: String,
    pub bucket: Bucket,
    pub object: RestoredObject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// When the restored copy expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_expiry_time: Option<String>,
    /// The archive class the object stays in, e.g. `GLACIER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_storage_class: Option<String>,
}

/// The object of an `Object Restore Completed` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct RestoredObject {
    /// The object key, encoded as in [`S3Object::key`].
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}
