//! The S3 POST policy of an upload grant: what S3 will accept in one browser
//! form upload. Building the document is pure; signing it lives with the
//! credentials in `adapters::post_signer`.

use serde::{Serialize, Serializer, ser::SerializeMap, ser::SerializeSeq};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// The conditions of one upload grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPolicy {
    pub bucket: String,
    /// Exact key the form must name.
    pub key: String,
    /// Exact `Content-Type` the form must carry.
    pub content_type: String,
    /// Largest accepted file, in bytes (`content-length-range` upper bound).
    pub max_size: u64,
    pub expires_at: OffsetDateTime,
}

/// The SigV4 fields that the policy itself must list as conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningFields<'a> {
    /// `<access key>/<yyyymmdd>/<region>/s3/aws4_request`.
    pub credential: &'a str,
    /// `yyyymmddThhmmssZ`.
    pub amz_date: &'a str,
    /// Session token of temporary credentials.
    pub security_token: Option<&'a str>,
}

/// A policy document as S3 reads it.
#[derive(Serialize)]
struct Document<'a> {
    expiration: String,
    conditions: Vec<Condition<'a>>,
}

/// One condition of a policy.
enum Condition<'a> {
    /// `{"name": "value"}`: the form field must have exactly this value.
    Exact(&'static str, &'a str),
    /// `["content-length-range", 0, max]`: the file is at most `max` bytes.
    SizeAtMost(u64),
}

impl Serialize for Condition<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            Self::Exact(name, value) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry(name, value)?;
                map.end()
            }
            Self::SizeAtMost(max) => {
                let mut seq = serializer.serialize_seq(Some(3))?;
                seq.serialize_element("content-length-range")?;
                seq.serialize_element(&0)?;
                seq.serialize_element(&max)?;
                seq.end()
            }
        }
    }
}

/// Server-side encryption every upload must request.
pub const SERVER_SIDE_ENCRYPTION: &str = "AES256";
/// The only algorithm S3 accepts for SigV4 POST policies.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

impl UploadPolicy {
    /// The policy JSON document.
    pub fn document(&self, signing: &SigningFields<'_>) -> String {
        let expiration = self
            .expires_at
            .replace_nanosecond(0)
            .unwrap_or(self.expires_at)
            .format(&Rfc3339)
            .unwrap_or_default();
        let mut conditions = vec![
            Condition::Exact("bucket", &self.bucket),
            Condition::Exact("key", &self.key),
            Condition::Exact("Content-Type", &self.content_type),
            Condition::SizeAtMost(self.max_size),
            Condition::Exact("x-amz-server-side-encryption", SERVER_SIDE_ENCRYPTION),
            Condition::Exact("x-amz-credential", signing.credential),
            Condition::Exact("x-amz-algorithm", ALGORITHM),
            Condition::Exact("x-amz-date", signing.amz_date),
        ];
        if let Some(token) = signing.security_token {
            conditions.push(Condition::Exact("x-amz-security-token", token));
        }
        let document = Document {
            expiration,
            conditions,
        };
        // Serialising strings and integers into a `String` cannot fail.
        serde_json::to_string(&document).unwrap_or_default()
    }

    /// The form fields a browser sends besides `policy`, `x-amz-signature` and
    /// the file itself, in the order they should appear.
    pub fn form_fields(&self, signing: &SigningFields<'_>) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("key", self.key.clone()),
            ("Content-Type", self.content_type.clone()),
            (
                "x-amz-server-side-encryption",
                SERVER_SIDE_ENCRYPTION.to_string(),
            ),
            ("x-amz-credential", signing.credential.to_string()),
            ("x-amz-algorithm", ALGORITHM.to_string()),
            ("x-amz-date", signing.amz_date.to_string()),
        ];
        if let Some(token) = signing.security_token {
            fields.push(("x-amz-security-token", token.to_string()));
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use time::macros::datetime;

    #[test]
    fn the_document_binds_bucket_key_type_size_and_encryption() {
        let policy = UploadPolicy {
            bucket: "b".into(),
            key: "users/alice/a \"quoted\" name.jpg".into(),
            content_type: "image/jpeg".into(),
            max_size: 12345,
            expires_at: datetime!(2026-11-23 10:15:00.5 UTC),
        };
        let signing = SigningFields {
            credential: "AKID/20261123/us-east-1/s3/aws4_request",
            amz_date: "20261123T100000Z",
            security_token: Some("tok"),
        };
        let doc: Value = serde_json::from_str(&policy.document(&signing)).unwrap();
        assert_eq!(doc["expiration"], "2026-11-23T10:15:00Z");
        let conditions = doc["conditions"].as_array().unwrap();
        assert!(conditions.contains(&json!({"key": "users/alice/a \"quoted\" name.jpg"})));
        assert!(conditions.contains(&json!({"bucket": "b"})));
        assert!(conditions.contains(&json!({"Content-Type": "image/jpeg"})));
        assert!(conditions.contains(&json!(["content-length-range", 0, 12345])));
        assert!(conditions.contains(&json!({"x-amz-server-side-encryption": "AES256"})));
        assert!(conditions.contains(&json!({"x-amz-security-token": "tok"})));
        // Every field the form sends is covered by a condition.
        for (name, value) in policy.form_fields(&signing) {
            assert!(
                conditions.contains(&json!({ name: value }))
                    || conditions.contains(&json!({ name.to_lowercase(): value })),
                "{name} is not bound by the policy"
            );
        }
    }
}
