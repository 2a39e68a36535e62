use clap::Parser;
use stowage_ledger::{App, Settings};

/// jemalloc, for less CPU per request than glibc's malloc (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = stowage_shared::telemetry::init("ledger");
    let app = App::build(Settings::parse()).await?;
    tracing::info!("ledger consuming");
    app.run_until_stopped(stowage_shared::shutdown::on_signal())
        .await;
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    Ok(())
}
