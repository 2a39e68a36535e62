use clap::Parser;
use stowage_intake::{App, Settings};

/// jemalloc, for less CPU per request than glibc's malloc (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = stowage_shared::telemetry::init("intake");
    let settings = Settings::parse();
    let app = App::build(settings).await?;
    tracing::info!(address = %app.local_addr(), "intake listening");
    let served = app
        .run_until_stopped(stowage_shared::shutdown::on_signal())
        .await;
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    served
}
