#!/usr/bin/env bash
# Gateway benchmark: lyss-server beside the Portkey gateway and LiteLLM, all against the same
# fast fake upstream, with the peers' harness (../shared/bench/peers/run.sh, see its README).
#
#   scripts/bench-gateway.sh                              # lyss (plain) + direct, portkey, litellm-auth
#   scripts/bench-gateway.sh --variants plain,governed,cluster --targets direct --conc "1 64"
#
# lyss variants (each its own process, port and store):
#   plain     key check + model allow-list + a durable SQLite ledger row per request
#   governed  plain + a workspace USD budget, a key token budget and RPM/TPM limits on the key:
#             every request is rate-limited, reserved, settled (embedded default: SQLite)
#   cluster   governed on Postgres + Redis, budget counters in Redis (LYSS_BENCH_POSTGRES_URL,
#             default postgres://postgres@127.0.0.1:5432/postgres, database lyss_bench is
#             recreated; LYSS_BENCH_REDIS_URL, default redis://127.0.0.1:6379)
#   cluster-db  the same with the budget counters in Postgres (`budget_counters.store =
#             "database"`, database lyss_bench_db)
#   memory    governed + long-term memory on every request (`[memory] enabled = true`, the local
#             embedder): the question embedded and memories recalled on the path, turns ingested
#             in the background (models: scripts/fetch-models.sh)
#   plain-nometrics  plain with `metrics = false` (no Prometheus recorder): the cost of metrics
#   cached    plain + the exact cache in process: every request after the first is a hit
#   cached-redis  the same with the cache in Redis (LYSS_BENCH_REDIS_URL)
# Budgets and limits are large enough never to refuse: the run measures their cost only.
# Other arguments go to run.sh. Results: /tmp/peers-bench/results/latest/table.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${LYSS_SHARED:-$ROOT/../shared}"
HARNESS="$SHARED/bench/peers/run.sh"
# The same target directory as .ci/run, so a release build reuses what is there.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lyss/target}"
[ -f "$HARNESS" ] || { echo "peer harness not found at $HARNESS (set LYSS_SHARED)" >&2; exit 1; }
PG_ADMIN_URL="${LYSS_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
REDIS_URL="${LYSS_BENCH_REDIS_URL:-redis://127.0.0.1:6379}"

VARIANTS="plain"
TARGETS="direct,portkey,litellm-auth"
PASS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --variants) VARIANTS="$2"; shift 2;;
    --targets) TARGETS="$2"; shift 2;;
    *) PASS+=("$1"); shift;;
  esac
done

cargo build --release --locked -p lyss-server -p lyss-cli --manifest-path "$ROOT/Cargo.toml"
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET_DIR/release"
WORK="$(mktemp -d /tmp/lyss-bench.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

ARGS=()
port=8080
IFS=',' read -ra list <<<"$VARIANTS"
for v in "${list[@]}"; do
  dir="$WORK/$v"; mkdir -p "$dir"
  db=""; redis=""
  cache=""
  if [ "$v" = cluster ] || [ "$v" = cluster-db ]; then
    name=lyss_bench; [ "$v" = cluster-db ] && name=lyss_bench_db
    psql "$PG_ADMIN_URL" -q -c "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name" >/dev/null
    db="database_url = \"${PG_ADMIN_URL%/*}/$name\""
    redis="redis_url = \"$REDIS_URL\""
    # Keys of this run only (a fresh database must not meet an earlier run's counters).
    counters="redis_prefix = \"lyss:bench:$v:$(date +%s):\""
    [ "$v" = cluster-db ] && counters=$'store = "database"\n'"$counters"
    cache=$'[budget_counters]\n'"$counters"
  fi
  top=""
  if [ "$v" = plain-nometrics ]; then
    top="metrics = false"
  elif [ "$v" = memory ]; then
    "$ROOT/scripts/fetch-models.sh" >/dev/null
    cache=$'[memory]\nenabled = true\n\n[embedder]\nkind = "local"'
  elif [ "$v" = cached ]; then
    cache=$'[cache]\nmode = "exact"'
  elif [ "$v" = cached-redis ]; then
    redis="redis_url = \"$REDIS_URL\""
    cache=$'[cache]\nmode = "exact"\nbackend = "redis"'
  fi
  cat >"$dir/lyss.toml" <<TOML
bind = "127.0.0.1:$port"
$top
$db
$redis

[[providers]]
name = "fake"
kind = "openai"
base_url = "http://127.0.0.1:9000/v1"

[[models]]
name = "gpt-4o-mini"
provider = "fake"

$cache
TOML
  lyss() { env -u OPENAI_API_KEY -u OLLAMA_BASE_URL "$BIN/lyss" --config "$dir/lyss.toml" --data-dir "$dir/data" "$@"; }
  lyss workspace create bench --models gpt-4o-mini >/dev/null
  lyss user create bench --workspace bench >/dev/null
  key="$(lyss key create --user bench 2>/dev/null)"
  if [ "$v" = governed ] || [ "$v" = cluster ] || [ "$v" = cluster-db ] || [ "$v" = memory ]; then
    id="$(echo "$key" | cut -d- -f3)"
    lyss budget set --workspace bench --usd 1000000 --period monthly >/dev/null
    lyss budget set --key "$id" --tokens 1000000000000 >/dev/null
    lyss limit set --key "$id" --rpm 1000000000 --tpm 4000000000
  fi
  ARGS+=(--target "lyss-$v=http://127.0.0.1:$port,bearer=$key")
  ARGS+=(--start "lyss-$v=exec env -u OPENAI_API_KEY -u OLLAMA_BASE_URL RUST_LOG=warn $BIN/lyss-server --config $dir/lyss.toml --data-dir $dir/data")
  port=$((port + 1))
done

bash "$HARNESS" --targets "$TARGETS" "${ARGS[@]}" "${PASS[@]}"

for v in "${list[@]}"; do
  [ "$v" = cluster ] || [ "$v" = cluster-db ] && continue
  python3 - "$WORK/$v/data/lyss.db" "$v" <<'PY'
import sqlite3, sys
n, bad = sqlite3.connect(sys.argv[1]).execute(
    "select count(*), sum(status != 200) from usage_ledger").fetchone()
print(f"lyss-{sys.argv[2]} ledger: {n} rows recorded during the run ({bad or 0} non-200)")
PY
done
for v in cluster cluster-db; do
  [[ ",$VARIANTS," == *",$v,"* ]] || continue
  name=lyss_bench; [ "$v" = cluster-db ] && name=lyss_bench_db
  echo "lyss-$v ledger: $(psql "${PG_ADMIN_URL%/*}/$name" -Atc "select count(*) || ' rows (' || count(*) filter (where status <> 200) || ' non-200)' from usage_ledger")"
done
