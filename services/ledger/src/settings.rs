//! The ledger's configuration, read from `STOWAGE_*` environment variables (or
//! the matching command-line flags).

use std::time::Duration;

use clap::Parser;

/// Days tombstones are kept unless configured otherwise.
pub const DEFAULT_TOMBSTONE_TTL_DAYS: u64 = 45;

/// Everything the ledger needs to run.
#[derive(Debug, Clone, Parser)]
#[command(name = "stowage-ledger", about = "Stowage's usage ledger")]
pub struct Settings {
    /// The bucket whose events the ledger counts.
    #[arg(long, env = "STOWAGE_BUCKET")]
    pub bucket: String,

    /// Address buckets by path (`endpoint/bucket`) rather than by host name.
    #[arg(long, env = "STOWAGE_S3_PATH_STYLE", default_value_t = false, action = clap::ArgAction::Set)]
    pub s3_path_style: bool,

    /// The ledger's DynamoDB table.
    #[arg(long, env = "STOWAGE_LEDGER_TABLE")]
    pub table: String,

    /// The ledger's queue.
    #[arg(long, env = "STOWAGE_LEDGER_QUEUE_URL")]
    pub queue_url: String,

    /// The bus `UsageChanged.v1` is published to.
    #[arg(long, env = "STOWAGE_EVENT_BUS", default_value = "stowage")]
    pub event_bus: String,

    /// Days a deleted object's tombstone is kept; longer than the dead-letter
    /// queues' retention (14 days) and the archive's replay window.
    #[arg(long, env = "STOWAGE_TOMBSTONE_TTL_DAYS", default_value_t = DEFAULT_TOMBSTONE_TTL_DAYS)]
    pub tombstone_ttl_days: u64,

    /// Concurrent workers reading the queue.
    #[arg(long, env = "STOWAGE_CONSUMER_WORKERS", default_value_t = 4,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub workers: usize,

    /// Long-poll wait, in seconds: 1 to 20 (SQS's longest; without a wait
    /// an idle worker would ask again at once, in a loop).
    #[arg(long, env = "STOWAGE_CONSUMER_WAIT_SECONDS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=20))]
    pub wait_seconds: u64,

    /// Seconds a received message stays hidden (1 to 43,200: at 0 SQS would
    /// hand it to another worker at once); a message whose worker died is
    /// redelivered after this.
    #[arg(
        long,
        env = "STOWAGE_CONSUMER_VISIBILITY_SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=43_200)
    )]
    pub visibility_seconds: u64,

    /// How often the depth of the queue's dead-letter queue is read, in
    /// seconds.
    #[arg(
        long,
        env = "STOWAGE_CONSUMER_DLQ_POLL_SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub dlq_poll_seconds: u64,
}

impl Settings {
    pub fn tombstone_ttl(&self) -> Duration {
        Duration::from_secs(self.tombstone_ttl_days * 24 * 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_that_would_spin_or_do_nothing_cannot_be_configured() {
        let parse = |flag: &str| {
            Settings::try_parse_from([
                "stowage-ledger",
                "--bucket=b",
                "--table=t",
                "--queue-url=q",
                flag,
            ])
        };
        assert_eq!(parse("--wait-seconds=20").unwrap().wait_seconds, 20);
        assert_eq!(parse("--workers=1").unwrap().workers, 1);
        for refused in [
            "--wait-seconds=0",
            "--wait-seconds=21",
            "--workers=0",
            "--visibility-seconds=0",
            "--visibility-seconds=43201",
        ] {
            assert!(parse(refused).is_err(), "{refused}");
        }
    }
}
