use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    lyss_server::main(lyss_server::Args::parse()).await
}
