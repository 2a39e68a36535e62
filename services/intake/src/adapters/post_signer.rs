//! Signs upload policies with SigV4, as S3's browser-based POST uploads
//! require. The SDK cannot build POST policies, so the policy is built by
//! [`crate::domain::policy`] and signed here with `aws-sigv4`'s signing key.

use std::{
    sync::{Arc, Mutex},
    time::SystemTime,
};

use aws_credential_types::{
    Credentials,
    provider::{ProvideCredentials, SharedCredentialsProvider},
};
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use time::{Date, OffsetDateTime, macros::format_description};
use tokio::sync::RwLock;

use crate::domain::policy::{SigningFields, UploadPolicy};

/// A signed upload: POST `fields` plus the file, as multipart/form-data, to `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUpload {
    pub url: String,
    /// Form fields in order; the file goes after them.
    pub fields: Vec<(String, String)>,
}

/// Signs upload policies for one bucket with the service's own credentials.
#[derive(Debug, Clone)]
pub struct PostSigner {
    credentials: SharedCredentialsProvider,
    cached: Arc<RwLock<Option<Credentials>>>,
    /// The signing key of the day's policies, derived once a day (and
    /// again when the credentials change) instead of once a policy.
    key: Arc<Mutex<Option<SigningKey>>>,
    region: String,
    url: String,
}

/// A SigV4 signing key for S3 in the signer's region: what a secret
/// signs with on one day.
struct SigningKey {
    credentials: Credentials,
    day: Date,
    key: [u8; 32],
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("day", &self.day)
            .finish_non_exhaustive()
    }
}

/// Credentials closer than this to expiry are refreshed before signing, so a
/// grant never outlives the credentials that signed it by surprise.
const REFRESH_BEFORE_EXPIRY: std::time::Duration = std::time::Duration::from_secs(20 * 60);

impl PostSigner {
    /// `url` is where browsers POST the form: the bucket's endpoint.
    pub fn new(
        credentials: SharedCredentialsProvider,
        region: impl Into<String>,
        url: impl Into<String>,
    ) -> Self {
        Self {
            credentials,
            cached: Arc::default(),
            key: Arc::default(),
            region: region.into(),
            url: url.into(),
        }
    }

    /// The credentials the next policies are signed with, fetched again
    /// when close to expiry. Fails when none can be had.
    pub async fn credentials(&self) -> anyhow::Result<Credentials> {
        let fresh = |c: &Credentials| {
            c.expiry()
                .is_none_or(|expiry| expiry > SystemTime::now() + REFRESH_BEFORE_EXPIRY)
        };
        if let Some(credentials) = self.cached.read().await.as_ref().filter(|c| fresh(c)) {
            return Ok(credentials.clone());
        }
        let mut cached = self.cached.write().await;
        if let Some(credentials) = cached.as_ref().filter(|c| fresh(c)) {
            return Ok(credentials.clone());
        }
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| anyhow::anyhow!("no AWS credentials to sign uploads with: {e}"))?;
        *cached = Some(credentials.clone());
        Ok(credentials)
    }

    /// Signs `policy` at `now`.
    pub async fn sign(
        &self,
        policy: &UploadPolicy,
        now: OffsetDateTime,
    ) -> anyhow::Result<SignedUpload> {
        Ok(self.sign_with(&self.credentials().await?, policy, now))
    }

    /// Signs `policy` at `now` with `credentials` from
    /// [`PostSigner::credentials`]; cannot fail.
    pub fn sign_with(
        &self,
        credentials: &Credentials,
        policy: &UploadPolicy,
        now: OffsetDateTime,
    ) -> SignedUpload {
        let now = now.to_offset(time::UtcOffset::UTC);
        let key = self.day_key(credentials, now);
        signed_upload(credentials, key, &self.region, &self.url, policy, now)
    }

    /// The signing key of `credentials` on `now`'s day (UTC): the kept one,
    /// or a new one kept in its place.
    fn day_key(&self, credentials: &Credentials, now: OffsetDateTime) -> [u8; 32] {
        let mut kept = self.key.lock().unwrap_or_else(|e| e.into_inner());
        match kept.as_ref() {
            Some(kept) if kept.day == now.date() && kept.credentials == *credentials => kept.key,
            _ => {
                let key = signing_key(credentials.secret_access_key(), now, &self.region);
                *kept = Some(SigningKey {
                    credentials: credentials.clone(),
                    day: now.date(),
                    key,
                });
                key
            }
        }
    }
}

/// The form of `policy`, signed at `now` (UTC) with `key`, the signing key
/// of `credentials` on that day.
fn signed_upload(
    credentials: &Credentials,
    key: [u8; 32],
    region: &str,
    url: &str,
    policy: &UploadPolicy,
    now: OffsetDateTime,
) -> SignedUpload {
    let date = now
        .format(format_description!("[year][month][day]"))
        .unwrap_or_default();
    let amz_date = now
        .format(format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    let credential = format!(
        "{}/{date}/{region}/s3/aws4_request",
        credentials.access_key_id()
    );
    let signing = SigningFields {
        credential: &credential,
        amz_date: &amz_date,
        security_token: credentials.session_token(),
    };
    let encoded = BASE64.encode(policy.document(&signing));
    let signature = aws_sigv4::sign::v4::calculate_signature(key, encoded.as_bytes());
    let mut fields: Vec<(String, String)> = policy
        .form_fields(&signing)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    fields.push(("policy".to_string(), encoded));
    fields.push(("x-amz-signature".to_string(), signature));
    SignedUpload {
        url: url.to_string(),
        fields,
    }
}

/// The SigV4 signing key of `secret` for S3 in `region` on `at`'s day (UTC).
fn signing_key(secret: &str, at: OffsetDateTime, region: &str) -> [u8; 32] {
    let key = aws_sigv4::sign::v4::generate_signing_key(secret, SystemTime::from(at), region, "s3");
    let mut bytes = [0; 32];
    bytes.copy_from_slice(key.as_ref());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// Signs `policy` with `credentials`, deriving the signing key afresh:
    /// what a signer that keeps its key must agree with.
    fn sign_with(
        credentials: &Credentials,
        region: &str,
        url: &str,
        policy: &UploadPolicy,
        now: OffsetDateTime,
    ) -> SignedUpload {
        let now = now.to_offset(time::UtcOffset::UTC);
        let key = signing_key(credentials.secret_access_key(), now, region);
        signed_upload(credentials, key, region, url, policy, now)
    }

    /// The SigV4 signature of a base64-encoded policy.
    fn sign_policy(secret: &str, at: OffsetDateTime, region: &str, encoded_policy: &str) -> String {
        aws_sigv4::sign::v4::calculate_signature(
            signing_key(secret, at, region),
            encoded_policy.as_bytes(),
        )
    }

    /// AWS's published example of a browser-based upload with SigV4
    /// ("Example: Browser-Based Upload using HTTP POST", 2015-12-29).
    #[test]
    fn signs_the_published_aws_example_as_aws_does() {
        let policy = "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3QiOiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRhLXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRlLWVuY3J5cHRpb24iOiAiQUVTMjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoNCiAgICB7IngtYW16LWNyZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAiMjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9";
        let signature = sign_policy(
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            datetime!(2015-12-29 00:00:00 UTC),
            "us-east-1",
            policy,
        );
        assert_eq!(
            signature,
            "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e"
        );
    }

    #[test]
    fn the_form_carries_the_signed_policy_and_the_credential_scope() {
        let credentials = Credentials::new("AKID", "secret", Some("session".into()), None, "test");
        let policy = UploadPolicy {
            bucket: "b".into(),
            key: "users/alice/x.png".into(),
            content_type: "image/png".into(),
            max_size: 10,
            expires_at: datetime!(2026-11-23 10:15:00 UTC),
        };
        let signed = sign_with(
            &credentials,
            "eu-west-1",
            "https://b.s3.eu-west-1.amazonaws.com",
            &policy,
            datetime!(2026-11-23 10:00:00 UTC),
        );
        let field = |name: &str| {
            signed
                .fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            field("x-amz-credential"),
            Some("AKID/20261123/eu-west-1/s3/aws4_request")
        );
        assert_eq!(field("x-amz-date"), Some("20261123T100000Z"));
        assert_eq!(field("x-amz-security-token"), Some("session"));
        let encoded = field("policy").unwrap();
        let document = String::from_utf8(BASE64.decode(encoded).unwrap()).unwrap();
        assert!(document.contains("\"x-amz-security-token\":\"session\""));
        assert_eq!(
            field("x-amz-signature").unwrap(),
            sign_policy(
                "secret",
                datetime!(2026-11-23 10:00:00 UTC),
                "eu-west-1",
                encoded
            )
        );
    }

    /// A signer keeps the day's signing key; each signature it makes must
    /// still be the one its day and credentials give.
    #[test]
    fn a_kept_signing_key_serves_only_its_day_and_credentials() {
        let first = Credentials::new("AKID1", "secret-one", None, None, "test");
        let rotated = Credentials::new("AKID2", "secret-two", Some("token".into()), None, "test");
        let signer = PostSigner::new(
            SharedCredentialsProvider::new(first.clone()),
            "eu-west-1",
            "https://b.s3.eu-west-1.amazonaws.com",
        );
        let policy = |expires_at| UploadPolicy {
            bucket: "b".into(),
            key: "users/alice/x.png".into(),
            content_type: "image/png".into(),
            max_size: 10,
            expires_at,
        };
        let moments = [
            (&first, datetime!(2026-11-23 23:59:58 UTC)),
            (&first, datetime!(2026-11-23 23:59:59 UTC)),
            // The next day, in another offset than UTC.
            (&first, datetime!(2026-11-24 01:00:00 +01:00)),
            (&first, datetime!(2026-11-24 12:00:00 UTC)),
            (&rotated, datetime!(2026-11-24 12:00:01 UTC)),
            (&first, datetime!(2026-11-24 12:00:02 UTC)),
        ];
        for (credentials, now) in moments {
            let policy = policy(now + std::time::Duration::from_secs(900));
            assert_eq!(
                signer.sign_with(credentials, &policy, now),
                sign_with(
                    credentials,
                    "eu-west-1",
                    "https://b.s3.eu-west-1.amazonaws.com",
                    &policy,
                    now
                ),
                "signed by {} at {now}",
                credentials.access_key_id()
            );
        }
    }
}
