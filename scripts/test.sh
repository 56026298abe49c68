#!/usr/bin/env bash
# The project's test command (README): prepares what the tests need, then runs every test of
# the workspace. Extra arguments go to `cargo test`.
#
# - A Python venv with the official `openai` SDK, for the end-to-end SDK check
#   (cached under ${LYSS_CACHE_DIR:-~/.cache/lyss}; pip reaches PyPI only the first time).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE="${LYSS_CACHE_DIR:-$HOME/.cache/lyss}"
VENV="$CACHE/venv"
OPENAI_SDK_VERSION="3.57.0"

if ! "$VENV/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_SDK_VERSION')" 2>/dev/null; then
  command -v python3 >/dev/null || { echo "scripts/test.sh: python3 is needed for the SDK test" >&2; exit 1; }
  mkdir -p "$CACHE"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "openai==$OPENAI_SDK_VERSION"
fi
export LYSS_TEST_PYTHON="$VENV/bin/python"

exec cargo test --workspace --locked "$@"
