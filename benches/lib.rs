//! Benchmarks: `cargo bench -p lyss-benches`; the gateway load benchmark is `scripts/bench-gateway.sh`.
