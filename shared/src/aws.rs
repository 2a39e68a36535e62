//! AWS SDK configuration. Every client reads the SDK's standard environment
//! (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL` and its per-service
//! variants), so the same binaries run against AWS or an emulator.

use aws_config::{
    BehaviorVersion, SdkConfig, stalled_stream_protection::StalledStreamProtectionConfig,
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

/// An S3 client. `path_style` addresses buckets as `endpoint/bucket` instead of
/// `bucket.endpoint`, which endpoints without wildcard DNS need.
pub fn s3(config: &SdkConfig, path_style: bool) -> aws_sdk_s3::Client {
    let s3_config = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(path_style)
        .build();
    aws_sdk_s3::Client::from_conf(s3_config)
}

/// An SQS client.
pub fn sqs(config: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(config)
}

/// An EventBridge client.
pub fn eventbridge(config: &SdkConfig) -> aws_sdk_eventbridge::Client {
    aws_sdk_eventbridge::Client::new(config)
}

/// A DynamoDB client.
pub fn dynamodb(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}
