//! The committed schemas and samples are the published contract: these tests
//! fail when the Rust types drift from them.

use std::path::{Path, PathBuf};

use stowage_events::{
    ObjectAccessedV1, ObjectRestoredV1, ObjectTieredV1, RawEnvelope, RestoreRequestedV1,
    StowageEvent, UploadGrantedV1, UsageChangedV1,
    s3::{self, ObjectEventDetail, RestoreCompletedDetail},
    schema,
    stowage::UploadViolation,
};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// Set `UPDATE_SCHEMAS=1` to rewrite the committed schemas after a deliberate
/// change of the types.
#[test]
fn committed_schemas_match_the_types() {
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut drifted = Vec::new();
    for (file, schema) in schema::all() {
        let path = dir("schemas").join(file);
        let generated = schema::render(&schema);
        if update {
            std::fs::write(&path, &generated).expect("write schema");
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != generated {
            drifted.push(file);
        }
    }
    assert!(
        drifted.is_empty(),
        "schemas differ from the types: {drifted:?}; run `UPDATE_SCHEMAS=1 cargo test -p stowage-events` and review the diff"
    );
}

#[test]
fn every_committed_schema_is_generated() {
    let generated: Vec<_> = schema::all()
        .into_iter()
        .map(|(f, _)| f.to_string())
        .collect();
    for entry in std::fs::read_dir(dir("schemas")).expect("schemas dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8");
        assert!(
            generated.contains(&name),
            "{name} is committed but no type generates it"
        );
    }
}

/// Decodes a sample by its `source` and `detail-type`, as a consumer would.
fn decode(envelope: RawEnvelope) -> Result<(), String> {
    let kind = (envelope.source.as_str(), envelope.detail_type.as_str());
    let result = match kind {
        (
            s3::SOURCE,
            s3::OBJECT_CREATED | s3::OBJECT_DELETED | s3::OBJECT_STORAGE_CLASS_CHANGED,
        ) => envelope.decode::<ObjectEventDetail>().map(drop),
        (s3::SOURCE, s3::OBJECT_RESTORE_COMPLETED) => {
            envelope.decode::<RestoreCompletedDetail>().map(drop)
        }
        (UploadGrantedV1::SOURCE, d) if d == UploadGrantedV1::detail_type() => {
            envelope.decode::<UploadGrantedV1>().map(drop)
        }
        (UsageChangedV1::SOURCE, d) if d == UsageChangedV1::detail_type() => {
            envelope.decode::<UsageChangedV1>().map(drop)
        }
        (ObjectAccessedV1::SOURCE, d) if d == ObjectAccessedV1::detail_type() => {
            envelope.decode::<ObjectAccessedV1>().map(drop)
        }
        (RestoreRequestedV1::SOURCE, d) if d == RestoreRequestedV1::detail_type() => {
            envelope.decode::<RestoreRequestedV1>().map(drop)
        }
        (ObjectTieredV1::SOURCE, d) if d == ObjectTieredV1::detail_type() => {
            envelope.decode::<ObjectTieredV1>().map(drop)
        }
        (ObjectRestoredV1::SOURCE, d) if d == ObjectRestoredV1::detail_type() => {
            envelope.decode::<ObjectRestoredV1>().map(drop)
        }
        other => return Err(format!("no type for {other:?}")),
    };
    result.map_err(|e| e.to_string())
}

#[test]
fn every_sample_still_parses() {
    let mut seen = 0;
    for entry in std::fs::read_dir(dir("samples")).expect("samples dir") {
        let path = entry.expect("entry").path();
        let body = std::fs::read_to_string(&path).expect("read sample");
        let envelope =
            RawEnvelope::parse(&body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        decode(envelope).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen += 1;
    }
    assert!(seen >= 10, "expected a sample of every event, found {seen}");
}

#[test]
fn unknown_fields_are_ignored_within_a_major_version() {
    let body =
        std::fs::read_to_string(dir("samples").join("UsageChanged.v1.json")).expect("sample");
    let mut value: serde_json::Value = serde_json::from_str(&body).expect("json");
    value["detail"]["added_in_a_later_minor"] = serde_json::json!({"anything": 1});
    let envelope: RawEnvelope = serde_json::from_value(value).expect("envelope");
    let event = envelope.decode::<UsageChangedV1>().expect("decodes");
    assert_eq!(event.detail.revision, 7);
}

#[test]
fn a_detail_missing_required_fields_is_refused() {
    let body =
        std::fs::read_to_string(dir("samples").join("UploadGranted.v1.json")).expect("sample");
    let mut value: serde_json::Value = serde_json::from_str(&body).expect("json");
    value["detail"]
        .as_object_mut()
        .expect("object")
        .remove("max_size");
    let envelope: RawEnvelope = serde_json::from_value(value).expect("envelope");
    let err = envelope
        .decode::<UploadGrantedV1>()
        .expect_err("must not decode");
    assert!(err.to_string().contains("max_size"), "{err}");
}

#[test]
fn violations_are_named_as_events_spell_them() {
    for violation in UploadViolation::ALL {
        let spelt = serde_json::to_value(violation).unwrap();
        assert_eq!(spelt, violation.as_str());
        assert_eq!(
            UploadViolation::from_name(violation.as_str()),
            Some(violation)
        );
    }
    assert_eq!(UploadViolation::from_name("NoGrant"), None);
}
