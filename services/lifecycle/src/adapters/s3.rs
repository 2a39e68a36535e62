//! The bucket: what a key holds, copies onto itself in another class, and
//! restores.

use async_trait::async_trait;
use aws_sdk_s3::{
    Client,
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    types::{
        CompletedMultipartUpload, CompletedPart, GlacierJobParameters, MetadataDirective,
        RestoreRequest, ServerSideEncryption, StorageClass, Tag, Tier,
    },
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use stowage_shared::aws;

use crate::{
    domain::{policy::ArchiveClass, projection::Encryption},
    ports::{Bucket, CopyError, KeyPage, ObjectHead, RestoreStart},
};

/// What a tag key or value keeps unencoded in the `x-amz-tagging` header
/// (a URL query string): the unreserved characters.
const TAG_PART: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What a copy source keeps unencoded: the unreserved characters and the
/// path's slashes.
const COPY_SOURCE: &AsciiSet = &TAG_PART.remove(b'/');

/// Tags as the `x-amz-tagging` header of a PutObject or
/// CreateMultipartUpload spells them: `key=value` pairs, each part
/// percent-encoded, joined by `&`.
fn tagging_header(tags: &[Tag]) -> String {
    tags.iter()
        .map(|tag| {
            format!(
                "{}={}",
                utf8_percent_encode(tag.key(), TAG_PART),
                utf8_percent_encode(tag.value(), TAG_PART)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// [`Bucket`] on one S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Bucket {
    client: Client,
    bucket: String,
}

fn encryption_of(
    sse: Option<&ServerSideEncryption>,
    kms_key: Option<&str>,
    customer: Option<&str>,
) -> Encryption {
    if customer.is_some() {
        return Encryption::CustomerKey;
    }
    match sse {
        None => Encryption::Unknown,
        Some(ServerSideEncryption::Aes256) => Encryption::S3Managed,
        Some(other) => Encryption::Kms {
            algorithm: other.as_str().to_string(),
            key_id: kms_key.map(str::to_string),
        },
    }
}

/// The encryption S3 reports for the object of `head`.
fn held_encryption(head: &aws_sdk_s3::operation::head_object::HeadObjectOutput) -> Encryption {
    encryption_of(
        head.server_side_encryption(),
        head.ssekms_key_id(),
        head.sse_customer_algorithm(),
    )
}

/// The encryption a copy must give the object: the one `known`, or when it
/// is not known, what S3 reports it `held` in. An object encrypted with a
/// customer's key cannot be copied without that key.
fn to_keep(known: &Encryption, held: Encryption) -> Result<Encryption, CopyError> {
    let encryption = match known {
        Encryption::Unknown => held,
        known => known.clone(),
    };
    if encryption == Encryption::CustomerKey {
        return Err(CopyError::Other(anyhow::anyhow!(
            "the object is encrypted with a customer-provided key, which a copy would need"
        )));
    }
    Ok(encryption)
}

/// True when S3 refused a copy because its condition failed or the source
/// is gone.
fn changed<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    error
        .as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| matches!(code, "PreconditionFailed" | "NoSuchKey" | "NotFound"))
}

/// A copy that failed for another reason than the object changing: `what`
/// names the call and key.
fn copy_failed<E: std::error::Error + Send + Sync + 'static>(what: &str, error: E) -> CopyError {
    CopyError::Other(anyhow::anyhow!("{what}: {}", DisplayErrorContext(error)))
}

/// What a failed step of a copy means: the object changed under it, S3
/// holds it archived (a copy of it needs a restore first), or the copy
/// failed for another reason (`what` names the call and key).
fn copy_error<E, R>(what: &str, error: SdkError<E, R>) -> CopyError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if changed(&error) {
        CopyError::Changed
    } else if error
        .as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "InvalidObjectState")
    {
        CopyError::Archived
    } else {
        copy_failed(what, error)
    }
}

fn quoted(etag: &str) -> String {
    format!("\"{}\"", etag.trim_matches('"'))
}

impl S3Bucket {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    fn copy_source(&self, key: &str) -> String {
        format!("{}/{}", self.bucket, utf8_percent_encode(key, COPY_SOURCE))
    }

    /// `HeadObject` of the object a copy is about, conditional on its
    /// entity tag.
    async fn head_to_copy(
        &self,
        key: &str,
        etag: &str,
    ) -> Result<aws_sdk_s3::operation::head_object::HeadObjectOutput, CopyError> {
        self.client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .if_match(quoted(etag))
            .send()
            .await
            .map_err(|e| {
                if changed(&e) || e.raw_response().is_some_and(|r| r.status().as_u16() == 412) {
                    CopyError::Changed
                } else {
                    copy_failed(&format!("HeadObject {key}"), e)
                }
            })
    }

    async fn copy_in_parts(
        &self,
        key: &str,
        etag: &str,
        class: ArchiveClass,
        encryption: &Encryption,
        parts: &[(u64, u64)],
    ) -> Result<String, CopyError> {
        // Create takes what CopyObject would carry over by itself.
        let head = self.head_to_copy(key, etag).await?;
        let encryption = &to_keep(encryption, held_encryption(&head))?;
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .storage_class(StorageClass::from(class.as_str()))
            .set_content_type(head.content_type().map(str::to_string))
            .set_content_disposition(head.content_disposition().map(str::to_string))
            .set_content_encoding(head.content_encoding().map(str::to_string))
            .set_content_language(head.content_language().map(str::to_string))
            .set_cache_control(head.cache_control().map(str::to_string))
            .set_metadata(head.metadata().cloned());
        create = match encryption {
            Encryption::S3Managed => create.server_side_encryption(ServerSideEncryption::Aes256),
            Encryption::Kms { algorithm, key_id } => create
                .server_side_encryption(ServerSideEncryption::from(algorithm.as_str()))
                .set_ssekms_key_id(key_id.clone()),
            Encryption::Unknown | Encryption::CustomerKey => create,
        };
        // CopyObject copies tags by itself; a multipart upload is given them.
        if head.tag_count().is_some_and(|count| count > 0) {
            let tags = self
                .client
                .get_object_tagging()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| copy_failed(&format!("GetObjectTagging {key}"), e))?;
            create = create.tagging(tagging_header(tags.tag_set()));
        }
        let upload = create
            .send()
            .await
            .map_err(|e| copy_failed(&format!("CreateMultipartUpload {key}"), e))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let result = self
            .copy_parts_and_complete(key, etag, &upload_id, parts)
            .await;
        if result.is_err() {
            // Abandoned parts are billed until aborted.
            if let Err(error) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::warn!(%key, %upload_id, error = %DisplayErrorContext(error), "multipart copy not aborted");
            }
        }
        result
    }

    async fn copy_parts_and_complete(
        &self,
        key: &str,
        etag: &str,
        upload_id: &str,
        parts: &[(u64, u64)],
    ) -> Result<String, CopyError> {
        let mut completed = Vec::with_capacity(parts.len());
        for (index, (first, last)) in parts.iter().enumerate() {
            let number = index as i32 + 1;
            let part = self
                .client
                .upload_part_copy()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .copy_source(self.copy_source(key))
                .copy_source_if_match(quoted(etag))
                .copy_source_range(format!("bytes={first}-{last}"))
                .send()
                .await
                .map_err(|e| copy_error(&format!("UploadPartCopy {key} part {number}"), e))?;
            completed.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(
                        part.copy_part_result()
                            .and_then(|r| r.e_tag())
                            .map(str::to_string),
                    )
                    .build(),
            );
        }
        let done = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            // The parts were copied from the object as it was; an upload
            // since then must not be replaced by them.
            .if_match(quoted(etag))
            .send()
            .await
            .map_err(|e| copy_error(&format!("CompleteMultipartUpload {key}"), e))?;
        Ok(done
            .e_tag()
            .unwrap_or_default()
            .trim_matches('"')
            .to_string())
    }
}

#[async_trait]
impl Bucket for S3Bucket {
    async fn head(&self, key: &str) -> anyhow::Result<Option<ObjectHead>> {
        let head = aws::head_object(&self.client, &self.bucket, key).await?;
        Ok(head.map(|head| ObjectHead {
            size: head
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            etag: head.e_tag().map(|e| e.trim_matches('"').to_string()),
            storage_class: aws::storage_class(&head),
            encryption: held_encryption(&head),
            last_modified: head.last_modified().map(|t| t.secs()),
        }))
    }

    async fn list(&self, prefix: &str, after: Option<String>) -> anyhow::Result<KeyPage> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_continuation_token(after)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "ListObjectsV2 {}/{prefix}: {}",
                    self.bucket,
                    DisplayErrorContext(e)
                )
            })?;
        Ok(KeyPage {
            keys: page
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string))
                .collect(),
            next: page
                .is_truncated()
                .unwrap_or(false)
                .then(|| page.next_continuation_token().map(str::to_string))
                .flatten(),
        })
    }

    async fn copy_to_class(
        &self,
        key: &str,
        etag: &str,
        class: ArchiveClass,
        encryption: &Encryption,
        parts: Option<&[(u64, u64)]>,
    ) -> Result<String, CopyError> {
        if let Some(parts) = parts {
            return self
                .copy_in_parts(key, etag, class, encryption, parts)
                .await;
        }
        // A copy without encryption named takes the bucket's default: an
        // object whose encryption the projection does not know is asked.
        let asked;
        let encryption = if *encryption == Encryption::Unknown {
            let head = self.head_to_copy(key, etag).await?;
            asked = to_keep(encryption, held_encryption(&head))?;
            &asked
        } else {
            encryption
        };
        let mut copy = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(key)
            .copy_source(self.copy_source(key))
            .copy_source_if_match(quoted(etag))
            .storage_class(StorageClass::from(class.as_str()))
            // Content type, metadata and tags come along with the copy.
            .metadata_directive(MetadataDirective::Copy);
        copy = match encryption {
            Encryption::S3Managed => copy.server_side_encryption(ServerSideEncryption::Aes256),
            Encryption::Kms { algorithm, key_id } => copy
                .server_side_encryption(ServerSideEncryption::from(algorithm.as_str()))
                .set_ssekms_key_id(key_id.clone()),
            Encryption::Unknown | Encryption::CustomerKey => copy,
        };
        match copy.send().await {
            Ok(output) => Ok(output
                .copy_object_result()
                .and_then(|r| r.e_tag())
                .unwrap_or(etag)
                .trim_matches('"')
                .to_string()),
            Err(error) => Err(copy_error(&format!("CopyObject {key}"), error)),
        }
    }

    async fn restore(
        &self,
        key: &str,
        storage_class: &str,
        days: u32,
        tier: &str,
    ) -> anyhow::Result<RestoreStart> {
        let request = restore_request(storage_class, days, tier)?;
        match self
            .client
            .restore_object()
            .bucket(&self.bucket)
            .key(key)
            .restore_request(request)
            .send()
            .await
        {
            Ok(_) => Ok(RestoreStart::Started),
            Err(error) => match error.as_service_error().and_then(|e| e.code()) {
                Some("RestoreAlreadyInProgress") => Ok(RestoreStart::InProgress),
                Some("ObjectAlreadyInActiveTierError" | "InvalidObjectState") => {
                    Ok(RestoreStart::NotArchived)
                }
                Some("NoSuchKey" | "NotFound") => Ok(RestoreStart::NotFound),
                _ => Err(anyhow::anyhow!(
                    "RestoreObject {key}: {}",
                    DisplayErrorContext(error)
                )),
            },
        }
    }
}

/// The `RestoreObject` request for an object of `storage_class`, as S3
/// takes it: an Intelligent-Tiering object leaves its archive tier for good,
/// so it is restored without days; Deep Archive (and Intelligent-Tiering's,
/// which the class does not tell from its Archive tier) has no Expedited
/// retrieval, so it is restored at Standard instead.
fn restore_request(
    storage_class: &str,
    days: u32,
    tier: &str,
) -> Result<RestoreRequest, aws_sdk_s3::error::BuildError> {
    let tier = match (storage_class, tier) {
        ("DEEP_ARCHIVE" | "INTELLIGENT_TIERING", "Expedited") => "Standard",
        (_, tier) => tier,
    };
    let days =
        (storage_class != "INTELLIGENT_TIERING").then(|| i32::try_from(days).unwrap_or(i32::MAX));
    Ok(RestoreRequest::builder()
        .set_days(days)
        .glacier_job_parameters(
            GlacierJobParameters::builder()
                .tier(Tier::from(tier))
                .build()?,
        )
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restores_ask_for_what_the_class_allows() {
        let asked = |class, tier| {
            let request = restore_request(class, 7, tier).unwrap();
            let tier = request
                .glacier_job_parameters()
                .map(|p| p.tier().as_str().to_string());
            (request.days(), tier.unwrap())
        };
        assert_eq!(asked("GLACIER", "Expedited"), (Some(7), "Expedited".into()));
        assert_eq!(asked("GLACIER", "Bulk"), (Some(7), "Bulk".into()));
        assert_eq!(
            asked("DEEP_ARCHIVE", "Expedited"),
            (Some(7), "Standard".into())
        );
        assert_eq!(asked("DEEP_ARCHIVE", "Bulk"), (Some(7), "Bulk".into()));
        assert_eq!(
            asked("INTELLIGENT_TIERING", "Standard"),
            (None, "Standard".into())
        );
        assert_eq!(
            asked("INTELLIGENT_TIERING", "Expedited"),
            (None, "Standard".into())
        );
    }

    #[test]
    fn a_copy_keeps_the_encryption_known_or_the_one_s3_reports() {
        let kms = Encryption::Kms {
            algorithm: "aws:kms".into(),
            key_id: Some("k".into()),
        };
        // Not known: what S3 reports, a KMS key rather than the bucket's
        // default.
        assert_eq!(to_keep(&Encryption::Unknown, kms.clone()).unwrap(), kms);
        assert_eq!(
            to_keep(&Encryption::Unknown, Encryption::Unknown).unwrap(),
            Encryption::Unknown
        );
        // Known: kept.
        assert_eq!(
            to_keep(&Encryption::S3Managed, kms.clone()).unwrap(),
            Encryption::S3Managed
        );
        // A customer's key cannot be copied with.
        assert!(matches!(
            to_keep(&Encryption::Unknown, Encryption::CustomerKey),
            Err(CopyError::Other(_))
        ));
    }

    #[test]
    fn copy_sources_encode_everything_but_the_path() {
        let bucket = S3Bucket::new(
            Client::from_conf(
                aws_sdk_s3::Config::builder()
                    .behavior_version_latest()
                    .build(),
            ),
            "b",
        );
        assert_eq!(
            bucket.copy_source("users/a/x y+z%é.txt"),
            "b/users/a/x%20y%2Bz%25%C3%A9.txt"
        );
    }

    #[test]
    fn tags_are_spelled_as_a_query_string() {
        let tag = |key: &str, value: &str| Tag::builder().key(key).value(value).build().unwrap();
        assert_eq!(
            tagging_header(&[tag("project", "Trip 2026"), tag("owner:team", "a+b=c/d@é")]),
            "project=Trip%202026&owner%3Ateam=a%2Bb%3Dc%2Fd%40%C3%A9"
        );
        assert_eq!(tagging_header(&[]), "");
    }
}
