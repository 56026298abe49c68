//! Examples live in `embedded.rs` (governance) and `memory.rs` (long-term memory); run them with
//! `cargo run -p lyss-examples --example embedded` (or `--example memory`).
