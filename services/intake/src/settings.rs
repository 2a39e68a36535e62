//! Intake's configuration, read from `STOWAGE_*` environment variables (or the
//! matching command-line flags). Defaults run against the local stack.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use secrecy::SecretString;
use stowage_shared::pricing::PriceTable;

/// The largest object S3 accepts in one POST upload: 5 GiB.
pub const MAX_POST_BYTES: u64 = 5 << 30;

/// Everything intake needs to run.
#[derive(Debug, Clone, Parser)]
#[command(name = "stowage-intake", about = "Stowage's HTTP API")]
pub struct Settings {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "STOWAGE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The bucket holding every user's files.
    #[arg(long, env = "STOWAGE_BUCKET")]
    pub bucket: String,

    /// Base URL browsers POST uploads to. Default: the bucket's
    /// virtual-hosted S3 URL in the SDK's region.
    #[arg(long, env = "STOWAGE_S3_PUBLIC_URL")]
    pub s3_public_url: Option<String>,

    /// Address buckets by path (`endpoint/bucket`) rather than by host name.
    #[arg(long, env = "STOWAGE_S3_PATH_STYLE", default_value_t = false, action = clap::ArgAction::Set)]
    pub s3_path_style: bool,

    /// Intake's own DynamoDB table (accounts and grants).
    #[arg(long, env = "STOWAGE_INTAKE_TABLE")]
    pub table: String,

    /// The event bus Stowage events are published to.
    #[arg(long, env = "STOWAGE_EVENT_BUS", default_value = "stowage")]
    pub event_bus: String,

    /// Intake's queue, fed with `UsageChanged.v1` by its rule.
    #[arg(long, env = "STOWAGE_INTAKE_QUEUE_URL")]
    pub queue_url: String,

    /// Shared secret for HS256 bearer tokens (local use). Exactly one of
    /// this and `--jwks-url` must be set.
    #[arg(long, env = "STOWAGE_JWT_SECRET", value_parser = parse_secret)]
    pub jwt_secret: Option<SecretString>,

    /// JWKS document of the identity provider whose RS256/ES256 tokens are
    /// accepted, e.g. `<cognito issuer>/.well-known/jwks.json`. Must be
    /// https (plain http only on loopback).
    #[arg(long, env = "STOWAGE_JWKS_URL")]
    pub jwks_url: Option<String>,

    /// Required `iss` of every token.
    #[arg(long, env = "STOWAGE_JWT_ISSUER", default_value = "stowage-local")]
    pub jwt_issuer: String,

    /// Required `aud` of every token.
    #[arg(long, env = "STOWAGE_JWT_AUDIENCE", default_value = "stowage")]
    pub jwt_audience: String,

    /// Also accept a token without `aud` whose `client_id` is the audience:
    /// Cognito access tokens name their app client that way.
    #[arg(long, env = "STOWAGE_JWT_CLIENT_ID_AUDIENCE", default_value_t = false, action = clap::ArgAction::Set)]
    pub jwt_client_id_audience: bool,

    /// Required `token_use` claim, when set (Cognito: `access` or `id`).
    #[arg(long, env = "STOWAGE_JWT_TOKEN_USE")]
    pub jwt_token_use: Option<String>,

    /// Verified tokens kept so that a token sent again skips the signature
    /// check (each until it expires, at most five minutes); 0 checks every
    /// token in full.
    #[arg(long, env = "STOWAGE_VERIFIED_TOKENS", default_value_t = crate::auth::DEFAULT_VERIFIED_TOKENS)]
    pub verified_tokens: usize,

    /// Claim that marks administrators: a string equal to
    /// `--admin-value`, or an array containing it. Empty: nobody is.
    #[arg(long, env = "STOWAGE_ADMIN_CLAIM", default_value = crate::auth::DEFAULT_ADMIN_CLAIM)]
    pub admin_claim: String,

    /// Value of `--admin-claim` that makes a caller an administrator.
    #[arg(long, env = "STOWAGE_ADMIN_VALUE", default_value = crate::auth::DEFAULT_ADMIN_VALUE)]
    pub admin_value: String,

    /// Quota of a user without one of their own.
    #[arg(long, env = "STOWAGE_DEFAULT_QUOTA_BYTES", default_value_t = 1 << 30)]
    pub default_quota_bytes: u64,

    /// Largest single upload (S3 accepts at most 5 GiB in one POST).
    #[arg(long, env = "STOWAGE_MAX_UPLOAD_BYTES", default_value_t = MAX_POST_BYTES,
          value_parser = clap::value_parser!(u64).range(1..=MAX_POST_BYTES))]
    pub max_upload_bytes: u64,

    /// Lifetime of an upload grant, in seconds.
    #[arg(long, env = "STOWAGE_GRANT_TTL_SECONDS", default_value_t = 900)]
    pub grant_ttl_seconds: u64,

    /// How long a reservation outlives its grant, in seconds, so that an
    /// upload made just before expiry is counted before its bytes are freed.
    #[arg(long, env = "STOWAGE_SETTLE_WINDOW_SECONDS", default_value_t = 3600)]
    pub settle_window_seconds: u64,

    /// Most grants a user may have outstanding at once.
    #[arg(long, env = "STOWAGE_MAX_OUTSTANDING_GRANTS", default_value_t = 100)]
    pub max_outstanding_grants: usize,

    /// Seconds intake waits on a client (for a request's headers, for the
    /// next piece of its body, for the next request on a kept-alive
    /// connection) before it gives up: the connection is closed, or the
    /// request refused. Above a load balancer's idle timeout (60 s on an
    /// ALB), so that the balancer, not intake, closes the idle connections
    /// it keeps.
    #[arg(long, env = "STOWAGE_HTTP_IDLE_SECONDS", default_value_t = 75,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_idle_seconds: u64,

    /// Origins of browser frontends served from elsewhere than the API, as
    /// `scheme://host[:port]`, comma-separated; their pages may call the
    /// API. Empty: same-origin callers only.
    #[arg(long, env = "STOWAGE_CORS_ORIGINS", value_delimiter = ',',
          value_parser = crate::cors::parse_origin)]
    pub cors_origins: Vec<crate::cors::Origin>,

    /// Content types an upload may declare.
    #[arg(
        long,
        env = "STOWAGE_ALLOWED_CONTENT_TYPES",
        value_delimiter = ',',
        default_value = "image/jpeg,image/png,image/gif,image/webp,image/heic,application/pdf,text/plain,text/csv,application/json,application/zip,application/octet-stream,audio/mpeg,video/mp4,video/quicktime"
    )]
    pub allowed_content_types: Vec<String>,

    /// The longest restore a user may ask for, in days (at most 365, S3's
    /// longest that intake offers); the lifecycle service reads the same
    /// variable and grants no longer.
    #[arg(long, env = "STOWAGE_RESTORE_MAX_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=365))]
    pub restore_max_days: u32,

    /// Lifetime of a download URL, in seconds.
    #[arg(long, env = "STOWAGE_DOWNLOAD_TTL_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub download_ttl_seconds: u64,

    /// Storage prices for cost estimates, USD per GB-month, as
    /// `CLASS=price` pairs overriding the published us-east-1 prices.
    #[arg(long, env = "STOWAGE_STORAGE_PRICES", default_value = "")]
    pub storage_prices: PriceTable,

    /// Upload grants a user may request per minute, on average, from one
    /// intake instance.
    #[arg(long, env = "STOWAGE_GRANT_RATE_PER_MINUTE", default_value_t = 600,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub grant_rate_per_minute: u32,

    /// Grant requests a user may make in a burst above that rate.
    #[arg(long, env = "STOWAGE_GRANT_BURST", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub grant_burst: u32,

    /// Workers reading intake's queue.
    #[arg(long, env = "STOWAGE_CONSUMER_WORKERS", default_value_t = 2,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub consumer_workers: usize,

    /// Long-poll wait of the queue consumer, in seconds: 1 to 20 (SQS's
    /// longest; without a wait an idle worker would ask again at once, in a
    /// loop).
    #[arg(long, env = "STOWAGE_CONSUMER_WAIT_SECONDS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=20))]
    pub consumer_wait_seconds: u64,

    /// How often the depth of the queue's dead-letter queue is read, in
    /// seconds.
    #[arg(
        long,
        env = "STOWAGE_CONSUMER_DLQ_POLL_SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub consumer_dlq_poll_seconds: u64,
}

fn parse_secret(value: &str) -> Result<SecretString, String> {
    if value.len() < 16 {
        return Err("must be at least 16 characters".into());
    }
    Ok(SecretString::from(value.to_string()))
}

impl Settings {
    pub fn grant_ttl(&self) -> Duration {
        Duration::from_secs(self.grant_ttl_seconds)
    }

    pub fn download_ttl(&self) -> Duration {
        Duration::from_secs(self.download_ttl_seconds)
    }

    pub fn settle_window(&self) -> Duration {
        Duration::from_secs(self.settle_window_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_beyond_what_s3_accepts_in_one_post_cannot_be_configured() {
        let parse = |max: &str| {
            Settings::try_parse_from([
                "stowage-intake",
                "--bucket=b",
                "--table=t",
                "--queue-url=q",
                &format!("--max-upload-bytes={max}"),
            ])
        };
        assert_eq!(
            parse("5368709120").unwrap().max_upload_bytes,
            MAX_POST_BYTES
        );
        assert!(parse("5368709121").is_err());
        assert!(parse("0").is_err());
    }
}
