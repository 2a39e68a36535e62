use clap::Parser;
use stowage_intake::{App, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stowage_shared::telemetry::init("intake");
    let settings = Settings::parse();
    let app = App::build(settings).await?;
    tracing::info!(address = %app.local_addr(), "intake listening");
    app.run_until_stopped(stowage_shared::shutdown::on_signal())
        .await
}
