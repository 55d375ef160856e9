#!/usr/bin/env bash
# The fuzz smoke of `make test`: each target for SECONDS (10) s from its committed corpus, new
# finds going to a scratch folder, two targets at a time (libFuzzer runs on one core).
# Usage: fuzz/smoke.sh SECONDS TARGET...   (after `cargo fuzz build -O`)
set -euo pipefail
cd "$(dirname "$0")"
seconds="$1"
shift

# One target; its report line (or its log's tail and the failure) goes to $out/$t.txt, and a
# failure leaves $out/$t.failed.
smoke() {
  local t="$1" scratch
  scratch=$(mktemp -d)
  if ( RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$t" "$scratch" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 ) > "$scratch.log" 2>&1; then
    echo "fuzz smoke: $t: $(grep -E '^Done' "$scratch.log")" > "$out/$t.txt"
    rm -rf "$scratch" "$scratch.log"
  else
    { tail -40 "$scratch.log"; echo "fuzz smoke: $t failed (a crashing input is kept under fuzz/artifacts/$t)"; } > "$out/$t.txt"
    touch "$out/$t.failed"
  fi
}

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
pids=()
for t in "$@"; do
  if [ "${#pids[@]}" -ge 2 ]; then
    wait "${pids[0]}"
    pids=("${pids[@]:1}")
  fi
  smoke "$t" &
  pids+=("$!")
done
wait
failed=0
for t in "$@"; do
  cat "$out/$t.txt" 2>/dev/null || { echo "fuzz smoke: $t: no report"; failed=1; }
  if [ -e "$out/$t.failed" ]; then failed=1; fi
done
exit "$failed"
