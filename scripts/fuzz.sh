#!/usr/bin/env bash
# Runs the fuzz targets (cargo fuzz, libFuzzer; needs a nightly toolchain):
#
#   scripts/fuzz.sh                 # every target, 60 s each
#   scripts/fuzz.sh 3600            # every target, an hour each
#   scripts/fuzz.sh 600 config      # one target
#
# Seeds are in fuzz/corpus/<target> (kept small in git); what libFuzzer adds stays local.
# A crash leaves its input in fuzz/artifacts/<target>/: reproduce it with
# `cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECS="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(chat_request messages_request stream_translators config)
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lyss/fuzz-target}"
for t in "${TARGETS[@]}"; do
  work="$(mktemp -d)"
  cp fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
  echo "== $t: ${SECS}s"
  cargo +nightly fuzz run "$t" "$work" -- -max_total_time="$SECS" -print_final_stats=1 2>&1 \
    | grep -E "^(#[0-9]+.*(DONE|pulse)|stat::number_of_executed_units|stat::new_units_added|SUMMARY|==[0-9]+==ERROR)" | tail -4
  rm -rf "$work"
done
