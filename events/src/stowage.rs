//! Stowage's own events. `source` is `stowage.<service>`, `detail-type` is
//! `<Name>.v<major>`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use time::OffsetDateTime;
use uuid::Uuid;

/// What every Stowage event type declares about itself.
pub trait StowageEvent: Serialize + DeserializeOwned + JsonSchema {
    /// The event's name without version, e.g. `UsageChanged`.
    const NAME: &'static str;
    /// The major version; a consumer subscribes to exactly one.
    const MAJOR: u32;
    /// The producing service's source, `stowage.<service>`.
    const SOURCE: &'static str;

    /// The EventBridge `detail-type`, e.g. `UsageChanged.v1`.
    fn detail_type() -> String {
        format!("{}.v{}", Self::NAME, Self::MAJOR)
    }
}

/// The fields every Stowage event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventMeta {
    /// Unique per event; consumers use it as the idempotency key.
    pub event_id: Uuid,
    /// When the producer decided the event happened (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub occurred_at: OffsetDateTime,
    /// The user the event is about.
    pub user_id: String,
    /// The producer's trace, so the consumer continues it.
    #[serde(default)]
    pub trace: TraceContext,
}

impl EventMeta {
    /// Metadata for a new event about `user_id`, happening now.
    pub fn new(user_id: impl Into<String>, trace: TraceContext) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            occurred_at: OffsetDateTime::now_utc(),
            user_id: user_id.into(),
            trace,
        }
    }
}

/// W3C trace context of the span that produced an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TraceContext {
    /// W3C `traceparent`; absent when the producer was not tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// W3C `tracestate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// Intake signed an upload grant: the user may POST one object of at most
/// `max_size` bytes to `key` until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UploadGrantedV1 {
    #[serde(flatten)]
    pub meta: EventMeta,
    pub grant_id: Uuid,
    /// Full object key, `users/<user_id>/<path>`.
    pub key: String,
    /// Upper bound of `content-length-range` in the signed policy.
    pub max_size: u64,
    pub content_type: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub expires_at: OffsetDateTime,
}

impl StowageEvent for UploadGrantedV1 {
    const NAME: &'static str = "UploadGranted";
    const MAJOR: u32 = 1;
    const SOURCE: &'static str = "stowage.intake";
}

/// What happened to the object that changed a user's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ObjectChange {
    /// The object was created or overwritten.
    Created,
    /// The object was deleted.
    Deleted,
}

/// The ledger applied an S3 event: the user's totals after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UsageChangedV1 {
    #[serde(flatten)]
    pub meta: EventMeta,
    /// Grows by at least one with every change of this user's usage; a
    /// consumer ignores a revision it has already passed.
    pub revision: u64,
    /// Bytes S3 holds for the user after this change.
    pub used_bytes: u64,
    pub object_count: u64,
    /// `used_bytes` split by S3 storage class.
    #[serde(default)]
    pub by_storage_class: BTreeMap<String, u64>,
    /// The object key whose event caused this change.
    pub key: String,
    pub change: ObjectChange,
    /// The object's size after the change; absent when it was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_size: Option<u64>,
    /// The object's storage class after the change; absent when deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// The upload grant the object was uploaded under, when the ledger knows
    /// it; never with `reclassified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<Uuid>,
    /// When S3 stored the object (its event's time); absent when deleted or
    /// `reclassified`. A consumer looking for the grant of an upload the
    /// ledger could not name looks among the grants issued before it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub uploaded_at: Option<OffsetDateTime>,
    /// Announced again (an event the ledger had applied came again after
    /// other changes of the user, or an operator's reconciliation): the
    /// totals at `revision` with `key`'s row as it is, while the change made
    /// at `revision` may have been another key's. An event that comes again
    /// while the totals are still those its change made is announced as
    /// that change, not as a repeat.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeated: bool,
    /// Set when nothing was uploaded: the object already stored moved to
    /// another storage class (lifecycle copied it onto itself, or S3 changed
    /// its class). No grant came with the change, and none is complete by
    /// it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reclassified: bool,
    /// Set when a user upload broke the rules: it arrived without a grant, or
    /// larger than its grant. The object is counted all the same. Told again
    /// when the change is announced again as itself; never with `repeated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violation: Option<UploadViolation>,
}

/// How an upload broke the rules of its grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UploadViolation {
    /// No live grant covered the key.
    NoGrant,
    /// The object is larger than its grant allowed.
    ExceedsGrant,
}

impl UploadViolation {
    /// Every violation.
    pub const ALL: [Self; 2] = [Self::NoGrant, Self::ExceedsGrant];

    /// Its name, as events spell it: `no_grant`, `exceeds_grant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoGrant => "no_grant",
            Self::ExceedsGrant => "exceeds_grant",
        }
    }

    /// The violation [`Self::as_str`] names `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == name)
    }
}

impl StowageEvent for UsageChangedV1 {
    const NAME: &'static str = "UsageChanged";
    const MAJOR: u32 = 1;
    const SOURCE: &'static str = "stowage.ledger";
}

/// A user read an object: intake handed out a download URL for it. The
/// lifecycle service uses these to keep recently read objects warm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ObjectAccessedV1 {
    #[serde(flatten)]
    pub meta: EventMeta,
    /// Full object key, `users/<user_id>/<path>`.
    pub key: String,
    /// The object's size when it was read.
    pub size: u64,
    /// The object's storage class when it was read.
    pub storage_class: String,
    /// The object's entity tag (without quotes) when it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

impl StowageEvent for ObjectAccessedV1 {
    const NAME: &'static str = "ObjectAccessed";
    const MAJOR: u32 = 1;
    const SOURCE: &'static str = "stowage.intake";
}

/// A user asked for an archived object to be restored for `days` days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RestoreRequestedV1 {
    #[serde(flatten)]
    pub meta: EventMeta,
    /// Full object key, `users/<user_id>/<path>`.
    pub key: String,
    /// How long the restored copy stays readable.
    pub days: u32,
    /// The object's storage class when the restore was requested.
    pub storage_class: String,
}

impl StowageEvent for RestoreRequestedV1 {
    const NAME: &'static str = "RestoreRequested";
    const MAJOR: u32 = 1;
    const SOURCE: &'static str = "stowage.intake";
}

/// The lifecycle service moved a cold object to an archive class by copying
/// it onto itself. S3's own `Object Created` for the copy follows; this event
/// says why it happened and what it is expected to save.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ObjectTieredV1 {
    #[serde(flatten)]
    pub meta: EventMeta,
    /// Full object key, `users/<user_id>/<path>`.
    pub key: String,
    /// Bytes moved.
    pub size: u64,
    /// The class the object left, e.g. `STANDARD`.
    pub from_storage_class: String,
    /// The class the object is in now: `GLACIER_IR`, `GLACIER` or
    /// `DEEP_ARCHIVE`.
    pub to_storage_class: String,
    /// The entity tag (without quotes) the copy was conditional on.
    pub source_etag: String,
    /// The entity tag of the copy; differs from `source_etag` after a
    /// multipart copy.
    pub etag: String,
    /// Estimated storage cost saved per month, in US dollars, counting the
    /// archive overhead.
    pub monthly_saving_usd: f64,
    /// What the transition requests cost, in US dollars.
    pub transition_cost_usd: f64,
    /// Whether the object was copied in parts (objects above the
    /// multipart threshold).
    pub multipart: bool,
}

impl StowageEvent for ObjectTieredV1 {
    const NAME: &'static str = "ObjectTiered";
    const MAJOR: u32 = 1;
    const SOURCE: &'static str = "stowage.lifecycle";
}

/// S3 finished restoring an archived object: a temporary copy can be read
/// until `expires_at`, while the object stays in its archive class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ObjectRestoredV1 {
    #[serde(flatten)]
    pub meta: EventMeta,
    /// Full object key, `users/<user_id>/<path>`.
    pub key: String,
    /// The archive class the object stays in.
    pub storage_class: String,
    /// When the restored copy expires, when S3 said.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub expires_at: Option<OffsetDateTime>,
    /// The object's entity tag (without quotes), when S3 said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

impl StowageEvent for ObjectRestoredV1 {
    const NAME: &'static str = "ObjectRestored";
    const MAJOR: u32 = 1;
    const SOURCE: &'static str = "stowage.lifecycle";
}
