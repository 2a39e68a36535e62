use clap::Parser;
use stowage_lifecycle::{App, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = stowage_shared::telemetry::init("lifecycle");
    let app = App::build(Settings::parse()).await?;
    tracing::info!("lifecycle consuming");
    app.run_until_stopped(stowage_shared::shutdown::on_signal())
        .await;
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    Ok(())
}
