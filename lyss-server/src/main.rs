use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lyss_server::run(lyss_server::Args::parse()).await
}
