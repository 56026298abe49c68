//! Examples live in `embedded.rs`; run them with `cargo run -p lyss-examples --example embedded`.
