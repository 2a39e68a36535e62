//! JSON Schemas of every event, generated from the Rust types. The committed
//! copies under `events/schemas/` are what other teams read; a test fails when
//! they drift from the types.

use schemars::{JsonSchema, Schema, schema_for};

use crate::{
    ObjectAccessedV1, ObjectRestoredV1, ObjectTieredV1, RestoreRequestedV1, UploadGrantedV1,
    UsageChangedV1,
    s3::{ObjectEventDetail, RestoreCompletedDetail},
};

/// Every schema Stowage publishes, as `(file name, schema of the detail)`.
pub fn all() -> Vec<(&'static str, Schema)> {
    vec![
        ("UploadGranted.v1.json", schema::<UploadGrantedV1>()),
        ("UsageChanged.v1.json", schema::<UsageChangedV1>()),
        ("ObjectAccessed.v1.json", schema::<ObjectAccessedV1>()),
        ("RestoreRequested.v1.json", schema::<RestoreRequestedV1>()),
        ("ObjectTiered.v1.json", schema::<ObjectTieredV1>()),
        ("ObjectRestored.v1.json", schema::<ObjectRestoredV1>()),
        ("aws.s3.ObjectEvent.json", schema::<ObjectEventDetail>()),
        (
            "aws.s3.ObjectRestoreCompleted.json",
            schema::<RestoreCompletedDetail>(),
        ),
    ]
}

fn schema<T: JsonSchema>() -> Schema {
    schema_for!(T)
}

/// Renders a schema the way it is committed: pretty JSON with a final newline.
pub fn render(schema: &Schema) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}
