//! The contract between the Stowage services: every event they exchange, as
//! versioned serde types, and S3's own EventBridge events as they arrive.
//!
//! Services share nothing else. Within a major version changes are additive
//! (new optional fields) and unknown fields are ignored; a breaking change is a
//! new type with the next major version, published beside the old one.
//!
//! # Layout
//! - [`envelope`]: the EventBridge envelope that wraps every event on a queue.
//! - [`stowage`]: our own events (`UploadGranted.v1`, `UsageChanged.v1`,
//!   `ObjectAccessed.v1`, `RestoreRequested.v1`, `ObjectTiered.v1`,
//!   `ObjectRestored.v1`).
//! - [`s3`]: S3's object events (`Object Created`, `Object Deleted`,
//!   `Object Storage Class Changed`, `Object Restore Completed`).
//! - [`sequencer`]: the order of S3 events of one key.
//! - [`keys`]: how S3 events spell keys, and who owns a key.
//! - [`schema`]: JSON Schema generation for everything above.

pub mod envelope;
pub mod keys;
pub mod s3;
pub mod schema;
pub mod sequencer;
pub mod stowage;

pub use envelope::{Envelope, RawEnvelope};
pub use stowage::{
    EventMeta, ObjectAccessedV1, ObjectRestoredV1, ObjectTieredV1, RestoreRequestedV1,
    StowageEvent, TraceContext, UploadGrantedV1, UsageChangedV1,
};
