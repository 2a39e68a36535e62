//! Asks S3 what a key holds, to resolve keys an event spells ambiguously.

use async_trait::async_trait;
use aws_sdk_s3::{Client, error::DisplayErrorContext};
use stowage_shared::aws;

use crate::{
    domain::usage::DEFAULT_STORAGE_CLASS,
    ports::{BucketLister, ListedObject, ObjectHead, ObjectProbe},
};

/// [`ObjectProbe`] on one bucket.
#[derive(Debug, Clone)]
pub struct S3Bucket {
    client: Client,
    bucket: String,
}

impl S3Bucket {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }
}

#[async_trait]
impl ObjectProbe for S3Bucket {
    async fn head(&self, key: &str) -> anyhow::Result<Option<ObjectHead>> {
        let head = aws::head_object(&self.client, &self.bucket, key).await?;
        Ok(head.map(|head| ObjectHead {
            size: head
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            etag: head.e_tag().map(|e| e.trim_matches('"').to_string()),
            storage_class: aws::storage_class(&head),
        }))
    }
}

#[async_trait]
impl BucketLister for S3Bucket {
    async fn list(&self, prefix: &str) -> anyhow::Result<Vec<ListedObject>> {
        let mut objects = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                anyhow::anyhow!("ListObjectsV2 {prefix}: {}", DisplayErrorContext(e))
            })?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                objects.push(ListedObject {
                    key: key.to_string(),
                    size: object
                        .size()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(0),
                    etag: object.e_tag().map(|e| e.trim_matches('"').to_string()),
                    storage_class: object
                        .storage_class()
                        .map_or(DEFAULT_STORAGE_CLASS, |c| c.as_str())
                        .to_string(),
                });
            }
        }
        Ok(objects)
    }

    async fn users(&self) -> anyhow::Result<Vec<String>> {
        let mut users = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix("users/")
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page
                .map_err(|e| anyhow::anyhow!("ListObjectsV2 users/: {}", DisplayErrorContext(e)))?;
            for prefix in page.common_prefixes() {
                if let Some(user) = prefix
                    .prefix()
                    .and_then(|p| p.strip_prefix("users/"))
                    .and_then(|p| p.strip_suffix('/'))
                {
                    users.push(user.to_string());
                }
            }
        }
        Ok(users)
    }
}
