#!/usr/bin/env bash
# Soak and highest-sustained-rate runs of the release lyss-server (benches/soak.rs; results in
# docs/reliability.md). Every run is bounded in time and rate; everything stays on loopback.
#
#   scripts/soak.sh                                  # 10 min at 40 req/s, embedded (SQLite)
#   scripts/soak.sh --duration 1800 --rate 100       # longer, faster
#   scripts/soak.sh --backend cluster                # Postgres + Redis (a fresh schema)
#   scripts/soak.sh --find-max [--backend cluster]   # step the rate up, 20 s per step
#   scripts/soak.sh --find-max --mix gateway         # the same without memory turns
#
# Cluster runs use --postgres (default postgres://postgres@127.0.0.1:5432/test) and --redis
# (default redis://127.0.0.1:6379). Memory turns use the local embedding model
# (scripts/fetch-models.sh, run here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lyss/target}"
scripts/fetch-models.sh >/dev/null
cargo build --release --locked -p lyss-server
cargo build --release --locked -p lyss-benches --bin soak
exec "$CARGO_TARGET_DIR/release/soak" --server "$CARGO_TARGET_DIR/release/lyss-server" "$@"
