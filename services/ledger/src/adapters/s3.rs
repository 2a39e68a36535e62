//! Asks S3 what a key holds, to resolve keys an event spells ambiguously.

use async_trait::async_trait;
use aws_sdk_s3::{Client, error::DisplayErrorContext};

use crate::{
    domain::usage::DEFAULT_STORAGE_CLASS,
    ports::{ObjectHead, ObjectProbe},
};

/// [`ObjectProbe`] on one bucket.
#[derive(Debug, Clone)]
pub struct S3Probe {
    client: Client,
    bucket: String,
}

impl S3Probe {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }
}

#[async_trait]
impl ObjectProbe for S3Probe {
    async fn head(&self, key: &str) -> anyhow::Result<Option<ObjectHead>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(Some(ObjectHead {
                size: head
                    .content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                etag: head.e_tag().map(|e| e.trim_matches('"').to_string()),
                // S3 leaves the header out for STANDARD.
                storage_class: head
                    .storage_class()
                    .map_or(DEFAULT_STORAGE_CLASS, |c| c.as_str())
                    .to_string(),
            })),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
            Err(error) => Err(anyhow::anyhow!(
                "HeadObject {key}: {}",
                DisplayErrorContext(error)
            )),
        }
    }
}
