//! Lifecycle's configuration, read from `STOWAGE_*` environment variables (or
//! the matching command-line flags). [`SweepSettings`] is what a sweep needs;
//! `stowctl tier` reads the same variables through it.

use std::sync::Arc;

use clap::Parser;
use stowage_shared::pricing::PriceTable;

use crate::{
    domain::{
        plan::{CopyPlan, MIN_PART_SIZE},
        policy::{ArchiveClass, Policies, Policy},
    },
    sweep::SweepOptions,
};

/// S3's largest single `CopyObject`.
const MAX_SINGLE_COPY: u64 = 5 << 30;

/// What a sweep needs: the bucket, the table, the policy and the prices.
#[derive(Debug, Clone, Parser)]
#[command(name = "stowage-lifecycle", about = "Stowage's tiering worker")]
pub struct SweepSettings {
    /// The bucket whose objects are tiered.
    #[arg(long, env = "STOWAGE_BUCKET")]
    pub bucket: String,

    /// Address buckets by path (`endpoint/bucket`) rather than by host name.
    #[arg(long, env = "STOWAGE_S3_PATH_STYLE", default_value_t = false, action = clap::ArgAction::Set)]
    pub s3_path_style: bool,

    /// Lifecycle's DynamoDB table.
    #[arg(long, env = "STOWAGE_LIFECYCLE_TABLE")]
    pub table: String,

    /// The bus `ObjectTiered.v1` and `ObjectRestored.v1` are published to.
    #[arg(long, env = "STOWAGE_EVENT_BUS", default_value = "stowage")]
    pub event_bus: String,

    /// Days without a read (or since creation) before an object is due.
    #[arg(long, env = "STOWAGE_TIER_AFTER_DAYS", default_value_t = 90)]
    pub tier_after_days: u32,

    /// Where due objects go: GLACIER_IR, GLACIER or DEEP_ARCHIVE.
    #[arg(long, env = "STOWAGE_TIER_CLASS", default_value = "GLACIER_IR")]
    pub tier_class: ArchiveClass,

    /// Objects smaller than this many bytes are never tiered.
    #[arg(long, env = "STOWAGE_TIER_MIN_SIZE_BYTES", default_value_t = 128 * 1024)]
    pub tier_min_size_bytes: u64,

    /// Per-user overrides: `user:days=N,class=C,min_size=B` entries separated
    /// by `;`, each field optional.
    #[arg(long, env = "STOWAGE_TIER_USER_POLICIES", default_value = "")]
    pub tier_user_policies: String,

    /// `CLASS=usd_per_gb_month` pairs overriding the published storage prices.
    #[arg(long, env = "STOWAGE_STORAGE_PRICES", default_value = "")]
    pub storage_prices: String,

    /// `CLASS=usd_per_1000` pairs overriding the published transition
    /// request prices.
    #[arg(long, env = "STOWAGE_TRANSITION_PRICES", default_value = "")]
    pub transition_prices: String,

    /// Days before an object a sweep skipped is looked at again.
    #[arg(long, env = "STOWAGE_TIER_RECHECK_DAYS", default_value_t = 30)]
    pub tier_recheck_days: u32,

    /// Objects above this many bytes are copied in parts (at most 5 GiB,
    /// S3's limit for one copy).
    #[arg(long, env = "STOWAGE_TIER_MULTIPART_THRESHOLD_BYTES", default_value_t = MAX_SINGLE_COPY,
          value_parser = clap::value_parser!(u64).range(0..=MAX_SINGLE_COPY))]
    pub tier_multipart_threshold_bytes: u64,

    /// Bytes per part of a multipart copy (at least 5 MiB).
    #[arg(long, env = "STOWAGE_TIER_PART_SIZE_BYTES", default_value_t = 512 << 20,
          value_parser = clap::value_parser!(u64).range(MIN_PART_SIZE..=MAX_SINGLE_COPY))]
    pub tier_part_size_bytes: u64,

    /// Copies a sweep keeps in flight.
    #[arg(long, env = "STOWAGE_TIER_CONCURRENCY", default_value_t = 8)]
    pub tier_concurrency: usize,
}

impl SweepSettings {
    /// The policy and its per-user overrides.
    pub fn policies(&self) -> anyhow::Result<Policies> {
        Policies::with_overrides(
            Policy {
                cold_after_days: self.tier_after_days,
                target: self.tier_class,
                min_size: self.tier_min_size_bytes,
            },
            &self.tier_user_policies,
        )
        .map_err(|e| anyhow::anyhow!("STOWAGE_TIER_USER_POLICIES: {e}"))
    }

    /// The price table with the configured overrides.
    pub fn prices(&self) -> anyhow::Result<PriceTable> {
        let mut prices: PriceTable = self
            .storage_prices
            .parse()
            .map_err(|e| anyhow::anyhow!("STOWAGE_STORAGE_PRICES: {e}"))?;
        prices
            .override_transitions(&self.transition_prices)
            .map_err(|e| anyhow::anyhow!("STOWAGE_TRANSITION_PRICES: {e}"))?;
        Ok(prices)
    }

    /// Everything a [`crate::sweep::Sweeper`] decides with.
    pub fn options(&self) -> anyhow::Result<SweepOptions> {
        Ok(SweepOptions {
            policies: Arc::new(self.policies()?),
            prices: self.prices()?,
            copy: CopyPlan {
                multipart_threshold: self.tier_multipart_threshold_bytes,
                part_size: self.tier_part_size_bytes,
            },
            recheck_days: self.tier_recheck_days,
            concurrency: self.tier_concurrency,
        })
    }
}

/// Everything lifecycle needs to run.
#[derive(Debug, Clone, Parser)]
#[command(name = "stowage-lifecycle", about = "Stowage's tiering worker")]
pub struct Settings {
    #[command(flatten)]
    pub sweep: SweepSettings,

    /// Lifecycle's queue.
    #[arg(long, env = "STOWAGE_LIFECYCLE_QUEUE_URL")]
    pub queue_url: String,

    /// Seconds between sweeps; 0 turns the service's own sweeps off
    /// (`stowctl tier run` still sweeps).
    #[arg(
        long,
        env = "STOWAGE_TIER_SWEEP_INTERVAL_SECONDS",
        default_value_t = 3600
    )]
    pub sweep_interval_seconds: u64,

    /// Run one sweep, print its report as JSON and exit.
    #[arg(long)]
    pub once: bool,

    /// Retrieval tier of restores: Standard, Bulk or Expedited.
    #[arg(long, env = "STOWAGE_RESTORE_TIER", default_value = "Standard",
          value_parser = ["Standard", "Bulk", "Expedited"])]
    pub restore_tier: String,

    /// The longest restore granted, in days (1 to 365, as intake, which
    /// refuses longer requests, reads it); longer requests are shortened.
    #[arg(long, env = "STOWAGE_RESTORE_MAX_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=365))]
    pub restore_max_days: u32,

    /// Concurrent workers reading the queue.
    #[arg(long, env = "STOWAGE_CONSUMER_WORKERS", default_value_t = 2,
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
        default_value_t = 300,
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
