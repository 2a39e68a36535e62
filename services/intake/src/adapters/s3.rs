//! [`ObjectStore`] on the S3 bucket.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::{
    Client,
    error::DisplayErrorContext,
    presigning::PresigningConfig,
    primitives::{DateTime, DateTimeFormat},
    types::ArchiveStatus,
};
use stowage_shared::{aws, dynamo::classify, pricing::STANDARD};
use time::OffsetDateTime;

use crate::ports::{
    DownloadHeaders, ObjectHead, ObjectPage, ObjectStore, Readability, StoreError, StoredObject,
};

/// Storage classes whose objects must be restored before they can be read.
const ARCHIVE_CLASSES: [&str; 2] = ["GLACIER", "DEEP_ARCHIVE"];

/// The bucket holding every user's files.
#[derive(Debug, Clone)]
pub struct S3Objects {
    client: Client,
    bucket: String,
}

impl S3Objects {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }
}

fn timestamp(value: Option<&DateTime>) -> OffsetDateTime {
    value
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t.secs()).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn etag(value: Option<&str>) -> String {
    value.unwrap_or_default().trim_matches('"').to_string()
}

/// Reads S3's `x-amz-restore` header, e.g.
/// `ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"`.
pub fn readability(storage_class: &str, archived_tier: bool, restore: Option<&str>) -> Readability {
    let archived = ARCHIVE_CLASSES.contains(&storage_class) || archived_tier;
    match restore {
        _ if !archived => Readability::Online,
        None => Readability::Archived,
        Some(header) if header.contains("ongoing-request=\"true\"") => Readability::Restoring,
        Some(header) => {
            let until = header
                .split_once("expiry-date=\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .and_then(|(date, _)| DateTime::from_str(date, DateTimeFormat::HttpDate).ok())
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t.secs()).ok());
            Readability::Restored { until }
        }
    }
}

#[async_trait]
impl ObjectStore for S3Objects {
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ObjectPage, StoreError> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_string))
            .max_keys(i32::try_from(limit).unwrap_or(1000))
            .send()
            .await
            .map_err(|e| classify("ListObjectsV2", e))?;
        let objects = page
            .contents()
            .iter()
            .filter_map(|object| {
                Some(StoredObject {
                    key: object.key()?.to_string(),
                    size: object
                        .size()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(0),
                    last_modified: timestamp(object.last_modified()),
                    storage_class: object
                        .storage_class()
                        .map_or(STANDARD, |c| c.as_str())
                        .to_string(),
                    etag: etag(object.e_tag()),
                })
            })
            .collect();
        Ok(ObjectPage {
            objects,
            truncated: page.is_truncated().unwrap_or(false),
        })
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectHead>, StoreError> {
        let head = match aws::head(&self.client, &self.bucket, key).await {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(None),
            Err(aws::HeadError::Head(error)) => return Err(classify("HeadObject", error)),
            Err(aws::HeadError::List(error)) => return Err(classify("ListObjectsV2", error)),
        };
        let storage_class = head
            .storage_class()
            .map_or(STANDARD, |c| c.as_str())
            .to_string();
        let archived_tier = matches!(
            head.archive_status(),
            Some(ArchiveStatus::ArchiveAccess | ArchiveStatus::DeepArchiveAccess)
        );
        Ok(Some(ObjectHead {
            readability: readability(&storage_class, archived_tier, head.restore()),
            content_type: head.content_type().map(str::to_string),
            object: StoredObject {
                key: key.to_string(),
                size: head
                    .content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                last_modified: timestamp(head.last_modified()),
                storage_class,
                etag: etag(head.e_tag()),
            },
        }))
    }

    async fn download_url(
        &self,
        key: &str,
        headers: &DownloadHeaders,
        ttl: Duration,
    ) -> Result<String, StoreError> {
        let presigning = PresigningConfig::expires_in(ttl)
            .map_err(|e| StoreError::Other(anyhow::anyhow!("presigning {key}: {e}")))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_disposition(&headers.disposition)
            .response_content_type(&headers.content_type)
            .presigned(presigning)
            .await
            .map_err(|e| {
                StoreError::Other(anyhow::anyhow!(
                    "presigning GetObject {key}: {}",
                    DisplayErrorContext(e)
                ))
            })?;
        Ok(request.uri().to_string())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify("DeleteObject", e))?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix("users/")
            .max_keys(1)
            .send()
            .await
            .map_err(|e| classify("ListObjectsV2", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_archive_classes_need_a_restore() {
        assert_eq!(readability("STANDARD", false, None), Readability::Online);
        assert_eq!(readability("GLACIER_IR", false, None), Readability::Online);
        assert_eq!(readability("GLACIER", false, None), Readability::Archived);
        assert_eq!(
            readability("DEEP_ARCHIVE", false, None),
            Readability::Archived
        );
        assert_eq!(
            readability("INTELLIGENT_TIERING", true, None),
            Readability::Archived
        );
    }

    #[test]
    fn the_restore_header_tells_progress_and_expiry() {
        assert_eq!(
            readability("GLACIER", false, Some("ongoing-request=\"true\"")),
            Readability::Restoring
        );
        let restored = readability(
            "DEEP_ARCHIVE",
            false,
            Some("ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\""),
        );
        assert_eq!(
            restored,
            Readability::Restored {
                until: Some(time::macros::datetime!(2012-12-21 00:00:00 UTC))
            }
        );
        assert!(restored.can_read());
        assert!(!Readability::Archived.can_read());
    }
}
