#!/usr/bin/env bash
# Gateway benchmark: lyss-server beside the Portkey gateway and LiteLLM, all against the same
# fast fake upstream, with the peers' harness (../shared/bench/peers/run.sh, see its README).
# lyss runs with key authentication and the SQLite ledger on: every request is looked up,
# authorized and recorded durably.
#
#   scripts/bench-gateway.sh                      # lyss + direct + portkey + litellm-auth, c = 1 16 64
#   scripts/bench-gateway.sh --targets direct     # lyss + direct only; other args go to run.sh
#
# Results: /tmp/peers-bench/results/latest/table.md (copy the rows into docs/benchmarks.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${LYSS_SHARED:-$ROOT/../shared}"
HARNESS="$SHARED/bench/peers/run.sh"
[ -x "$HARNESS" ] || [ -f "$HARNESS" ] || { echo "peer harness not found at $HARNESS (set LYSS_SHARED)" >&2; exit 1; }
PORT="${LYSS_BENCH_PORT:-8080}"

cargo build --release --locked -p lyss-server -p lyss-cli --manifest-path "$ROOT/Cargo.toml"
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET_DIR/release"

WORK="$(mktemp -d /tmp/lyss-bench.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
cat >"$WORK/lyss.toml" <<TOML
bind = "127.0.0.1:$PORT"

[[providers]]
name = "fake"
kind = "openai"
base_url = "http://127.0.0.1:9000/v1"

[[models]]
name = "gpt-4o-mini"
provider = "fake"
TOML
lyss() { env -u OPENAI_API_KEY -u OLLAMA_BASE_URL "$BIN/lyss" --config "$WORK/lyss.toml" --data-dir "$WORK/data" "$@"; }
lyss workspace create bench --models gpt-4o-mini >/dev/null
lyss user create bench --workspace bench >/dev/null
KEY="$(lyss key create --user bench 2>/dev/null)"

TARGETS="direct,portkey,litellm-auth"
if [ "${1:-}" = "--targets" ]; then TARGETS="$2"; shift 2; fi
bash "$HARNESS" --targets "$TARGETS" \
  --target "lyss=http://127.0.0.1:$PORT,bearer=$KEY" \
  --start "lyss=exec env -u OPENAI_API_KEY -u OLLAMA_BASE_URL RUST_LOG=warn $BIN/lyss-server --config $WORK/lyss.toml --data-dir $WORK/data" \
  "$@"
python3 - "$WORK/data/lyss.db" <<'PY'
import sqlite3, sys
n, bad = sqlite3.connect(sys.argv[1]).execute(
    "select count(*), sum(status != 200) from usage_ledger").fetchone()
print(f"lyss ledger: {n} rows recorded during the run ({bad or 0} non-200)")
PY
