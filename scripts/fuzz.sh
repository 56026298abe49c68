#!/usr/bin/env bash
# Runs the fuzz targets (cargo fuzz, libFuzzer; needs a nightly toolchain):
#
#   scripts/fuzz.sh                 # every target, 60 s each
#   scripts/fuzz.sh 3600            # every target, an hour each
#   scripts/fuzz.sh 600 config      # one target
#   LYSS_FUZZ_JOBS=2 scripts/fuzz.sh 3600 vendor_responses   # two processes on one corpus
#
# Seeds are in fuzz/corpus/<target> (kept small in git); fuzz/dict/<target>.dict holds the
# format's tokens and field names for libFuzzer's mutations. What libFuzzer finds accumulates in
# ${LYSS_CACHE_DIR:-~/.cache/lyss}/fuzz-corpus/<target>, so that runs continue where the last
# one stopped. Each run prints its executions, its coverage, and when coverage last grew (a
# plateau: nothing new for most of the run); its full log stays in .../fuzz-logs. A crash leaves its input in
# fuzz/artifacts/<target>/: reproduce it with
# `cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECS="${1:-60}"
# Processes per target. They share the corpus directory, which libFuzzer rereads every second,
# so each picks up what the others find; each keeps its own log.
JOBS="${LYSS_FUZZ_JOBS:-1}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(chat_request messages_request responses_request stream_translators vendor_responses config)
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lyss/fuzz-target}"
CORPUS="${LYSS_CACHE_DIR:-$HOME/.cache/lyss}/fuzz-corpus"
LOGS="${LYSS_CACHE_DIR:-$HOME/.cache/lyss}/fuzz-logs"
mkdir -p "$LOGS"
# One fuzzing process: runs target $1 for $SECS seconds into log $2 and prints its summary.
run() {
  local t="$1" log="$2" rc dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=("-dict=fuzz/dict/$t.dict")
  local start=$SECONDS
  set +e
  cargo +nightly fuzz run "$t" "$CORPUS/$t" fuzz/corpus/"$t" -- \
      -max_total_time="$SECS" -print_final_stats=1 "${dict[@]}" 2>&1 \
    | while IFS= read -r line; do printf '%s %s\n' "$((SECONDS - start))" "$line"; done >"$log"
  rc=${PIPESTATUS[0]}
  set -e
  {
    done_line="$(grep -E 'Done [0-9]+ runs' "$log" | tail -1 || true)"
    echo "   ${done_line#* }"
    # Edge coverage (`cov`) is the plateau to watch; features (`ft`) creep up for much longer.
    # Lines are "<elapsed s> #<run>\tNEW    cov: N ft: N …" (awk splits on tabs too).
    awk '$3 == "NEW" { for (i = 1; i <= NF; i++) { if ($i == "cov:") c = $(i + 1); if ($i == "ft:") f = $(i + 1) }
                       if (c + 0 > last + 0) { last = c; at = $1 }; lastf = f; atf = $1 }
         END { printf "   edge coverage %s, last grew at %s s; features %s, last grew at %s s\n", last, at, lastf, atf }' "$log"
    if [ "$rc" -ne 0 ]; then
      grep -E "ERROR|SUMMARY|panicked|artifact" "$log" | sed 's/^[0-9]* /   /' | head -20
    fi
    echo "   log: $log"
  } >"$log.summary"
  return "$rc"
}

status=0
for t in "${TARGETS[@]}"; do
  mkdir -p "$CORPUS/$t"
  echo "== $t: ${SECS}s × $JOBS process(es)"
  cargo +nightly fuzz build "$t" >/dev/null 2>&1 || cargo +nightly fuzz build "$t"
  stamp="$(date +%Y%m%dT%H%M%S)"
  pids=()
  for j in $(seq 1 "$JOBS"); do
    log="$LOGS/$t-$stamp.log"
    [ "$JOBS" -eq 1 ] || log="$LOGS/$t-$stamp-$j.log"
    run "$t" "$log" &
    pids+=("$!")
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  cat "$LOGS/$t-$stamp"*.summary && rm -f "$LOGS/$t-$stamp"*.summary
  echo "   corpus: $(ls "$CORPUS/$t" | wc -l) inputs"
done
exit $status
