use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    lyss_cli::run(lyss_cli::Cli::parse()).await
}
