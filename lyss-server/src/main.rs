use clap::Parser as _;

/// Under load, glibc's allocator took about a sixth of the gateway's CPU (many small,
/// short-lived allocations per request, freed on other threads); mimalloc takes far less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    lyss_server::main(lyss_server::Args::parse()).await
}
