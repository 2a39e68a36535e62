//! Lifecycle's configuration, read from `STOWAGE_*` environment variables.

use clap::Parser;

/// Everything lifecycle needs to run.
#[derive(Debug, Clone, Parser)]
#[command(name = "stowage-lifecycle", about = "Stowage's tiering worker")]
pub struct Settings {
    /// Lifecycle's queue.
    #[arg(long, env = "STOWAGE_LIFECYCLE_QUEUE_URL")]
    pub queue_url: String,

    /// Concurrent workers reading the queue.
    #[arg(long, env = "STOWAGE_CONSUMER_WORKERS", default_value_t = 1)]
    pub workers: usize,

    /// Long-poll wait, in seconds.
    #[arg(long, env = "STOWAGE_CONSUMER_WAIT_SECONDS", default_value_t = 20)]
    pub wait_seconds: u64,
}
