use clap::Parser;
use stowage_lifecycle::{App, Settings};

/// jemalloc, for less CPU per request than glibc's malloc (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = stowage_shared::telemetry::init("lifecycle");
    let settings = Settings::parse();
    let once = settings.once;
    let app = App::build(settings).await?;
    if once {
        let sweeper = app.sweeper();
        sweeper.follow_policy().await?;
        let report = sweeper.run(time::OffsetDateTime::now_utc(), None).await?;
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        tracing::info!("lifecycle consuming");
        app.run_until_stopped(stowage_shared::shutdown::on_signal())
            .await;
    }
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    Ok(())
}
