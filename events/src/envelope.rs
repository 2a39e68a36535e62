//! The EventBridge envelope: what an SQS consumer finds in a message body when
//! an EventBridge rule targets its queue.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use time::OffsetDateTime;

/// An EventBridge event with a typed `detail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope<D> {
    /// Envelope format version, `"0"` on AWS.
    #[serde(default)]
    pub version: String,
    /// EventBridge's id of this delivery; S3 events have no other id.
    pub id: String,
    /// What happened, e.g. `Object Created` or `UsageChanged.v1`.
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    /// Who published it, e.g. `aws.s3` or `stowage.ledger`.
    pub source: String,
    #[serde(default)]
    pub account: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub time: OffsetDateTime,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub resources: Vec<String>,
    pub detail: D,
}

/// An envelope whose `detail` is not decoded yet: consumers read `source` and
/// `detail-type` first, then decode the detail into the type they subscribe to.
pub type RawEnvelope = Envelope<serde_json::Value>;

/// Why a message body could not be turned into an event.
#[derive(Debug)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

impl RawEnvelope {
    /// Parses an SQS message body.
    pub fn parse(body: &str) -> Result<Self, DecodeError> {
        serde_json::from_str(body)
            .map_err(|e| DecodeError(format!("not an EventBridge event: {e}")))
    }

    /// Decodes the detail into `D`, keeping the envelope.
    pub fn decode<D: DeserializeOwned>(self) -> Result<Envelope<D>, DecodeError> {
        let detail = serde_json::from_value(self.detail).map_err(|e| {
            DecodeError(format!(
                "{} from {} has an invalid detail: {e}",
                self.detail_type, self.source
            ))
        })?;
        Ok(Envelope {
            version: self.version,
            id: self.id,
            detail_type: self.detail_type,
            source: self.source,
            account: self.account,
            time: self.time,
            region: self.region,
            resources: self.resources,
            detail,
        })
    }
}
