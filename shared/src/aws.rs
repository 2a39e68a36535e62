//! AWS SDK configuration. Every client reads the SDK's standard environment
//! (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL` and its per-service
//! variants), so the same binaries run against AWS or an emulator.

use aws_config::{
    BehaviorVersion, SdkConfig, stalled_stream_protection::StalledStreamProtectionConfig,
};
use aws_sdk_sqs::{
    config::{
        ConfigBag, Intercept, RuntimeComponents, interceptors::BeforeTransmitInterceptorContextMut,
    },
    error::BoxError,
};

/// Loads the shared SDK configuration from the environment.
///
/// Stalled-stream protection is off: every call the services make is a small
/// request whose whole response arrives at once, and the protection's timers
/// keep waking up during SQS long polls and emulator round trips, which cost
/// more CPU than the work of an event itself.
pub async fn load() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .load()
        .await
}

/// Asks plain-HTTP endpoints to keep the connection open.
///
/// HTTP/1.1 connections are persistent unless a side says otherwise, but
/// LocalStack's gateway answers `Connection: close` to every request that
/// does not ask for `keep-alive` explicitly, so without this header every
/// request opens a new TCP connection. HTTPS requests (AWS itself) are left
/// alone: they may travel over HTTP/2, where the header is not allowed.
/// (moto's server closes after every answer whatever the request asks.)
///
/// The interceptor types are the SDK's common ones, which every service
/// crate re-exports; they are named here through `aws_sdk_sqs`.
#[derive(Debug)]
struct KeepAlive;

impl Intercept for KeepAlive {
    fn name(&self) -> &'static str {
        "KeepAlive"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        if asks_keep_alive(request.uri()) {
            request.headers_mut().insert("connection", "keep-alive");
        }
        Ok(())
    }
}

fn asks_keep_alive(uri: &str) -> bool {
    uri.get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
}

/// An S3 client. `path_style` addresses buckets as `endpoint/bucket` instead of
/// `bucket.endpoint`, which endpoints without wildcard DNS need.
pub fn s3(config: &SdkConfig, path_style: bool) -> aws_sdk_s3::Client {
    let s3_config = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(path_style)
        .interceptor(KeepAlive)
        .build();
    aws_sdk_s3::Client::from_conf(s3_config)
}

/// Why [`head`] could not say what the bucket holds at a key.
#[derive(Debug)]
pub enum HeadError {
    Head(
        aws_sdk_s3::error::SdkError<
            aws_sdk_s3::operation::head_object::HeadObjectError,
            aws_sdk_s3::config::http::HttpResponse,
        >,
    ),
    /// The listing that tells a missing key from a refused one failed.
    List(
        aws_sdk_s3::error::SdkError<
            aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error,
            aws_sdk_s3::config::http::HttpResponse,
        >,
    ),
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Head(error) => write!(
                f,
                "HeadObject: {}",
                aws_sdk_s3::error::DisplayErrorContext(error)
            ),
            Self::List(error) => write!(
                f,
                "ListObjectsV2: {}",
                aws_sdk_s3::error::DisplayErrorContext(error)
            ),
        }
    }
}

impl std::error::Error for HeadError {}

/// `HeadObject` of `key`, `None` when the bucket holds no such object.
///
/// S3 answers a missing key with 403 instead of 404 unless the caller may
/// list it, and a permission to list only under a prefix may not count for
/// a `HeadObject`: after a 403, a listing of exactly this key tells a
/// missing object from a refusal.
pub async fn head(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>, HeadError> {
    match client.head_object().bucket(bucket).key(key).send().await {
        Ok(head) => Ok(Some(head)),
        Err(error) if error.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
        Err(error) if error.raw_response().map(|r| r.status().as_u16()) == Some(403) => {
            let page = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(key)
                .max_keys(1)
                .send()
                .await
                .map_err(HeadError::List)?;
            // The first key listed under `key` as a prefix is `key` itself
            // when there is one.
            if page.contents().first().and_then(|o| o.key()) == Some(key) {
                Err(HeadError::Head(error))
            } else {
                Ok(None)
            }
        }
        Err(error) => Err(HeadError::Head(error)),
    }
}

/// [`head`], with its error for logs.
pub async fn head_object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> anyhow::Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>> {
    head(client, bucket, key)
        .await
        .map_err(|error| anyhow::anyhow!("{key}: {error}"))
}

/// The storage class a `HeadObject` answer names; S3 leaves the header out
/// for STANDARD.
pub fn storage_class(head: &aws_sdk_s3::operation::head_object::HeadObjectOutput) -> String {
    head.storage_class()
        .map_or(crate::pricing::STANDARD, |c| c.as_str())
        .to_string()
}

/// An SQS client.
pub fn sqs(config: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(config)
            .interceptor(KeepAlive)
            .build(),
    )
}

/// An EventBridge client.
pub fn eventbridge(config: &SdkConfig) -> aws_sdk_eventbridge::Client {
    aws_sdk_eventbridge::Client::from_conf(
        aws_sdk_eventbridge::config::Builder::from(config)
            .interceptor(KeepAlive)
            .build(),
    )
}

/// A DynamoDB client.
pub fn dynamodb(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(config)
            .interceptor(KeepAlive)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use std::io;

    use aws_sdk_sqs::config::{Credentials, Region, SharedCredentialsProvider};

    use super::*;

    #[test]
    fn only_plain_http_asks_to_keep_the_connection() {
        assert!(asks_keep_alive("http://127.0.0.1:4566/"));
        assert!(asks_keep_alive("HTTP://localhost/queue"));
        assert!(!asks_keep_alive("https://sqs.eu-west-1.amazonaws.com/"));
        assert!(!asks_keep_alive(""));
    }

    /// Reads one request head (the bodies here are empty or small enough
    /// to arrive with it) and answers it with an empty JSON document.
    async fn answer_one(stream: &tokio::net::TcpStream) -> io::Result<String> {
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            stream.readable().await?;
            match stream.try_read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => head.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        let mut answer: &[u8] =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: 2\r\n\r\n{}";
        while !answer.is_empty() {
            stream.writable().await?;
            match stream.try_write(answer) {
                Ok(n) => answer = &answer[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(String::from_utf8_lossy(&head).to_ascii_lowercase())
    }

    #[tokio::test]
    async fn requests_to_a_plain_http_endpoint_ask_to_keep_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "test", "test", None, None, "test",
            )))
            .endpoint_url(format!("http://{}", listener.local_addr().unwrap()))
            .build();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await?;
            answer_one(&stream).await
        });
        sqs(&config).list_queues().send().await.unwrap();
        let head = server.await.unwrap().unwrap();
        assert!(head.contains("\r\nconnection: keep-alive\r\n"), "{head}");
    }
}
