//! Examples live in `embedded.rs` (a chat through the pipeline, in-process), `memory.rs`
//! (long-term memory alone) and `custom_provider.rs` (your own model behind a token budget); run
//! them with `cargo run -p lyss-examples --example embedded` (or `memory`, `custom_provider`).
