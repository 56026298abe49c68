//! End-to-end tests live in `tests/`; they start the built `lyss-server` and `lyss` binaries.
