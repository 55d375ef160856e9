#!/usr/bin/env bash
# The fuzz smoke of `make test`: each target for SECONDS (10) s from its committed corpus, new
# finds going to a scratch folder. Usage: fuzz/smoke.sh SECONDS TARGET...
set -euo pipefail
cd "$(dirname "$0")"
seconds="$1"
shift
for t in "$@"; do
  scratch=$(mktemp -d)
  if ( RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$t" "$scratch" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 ) > "$scratch.log" 2>&1; then
    echo "fuzz smoke: $t: $(grep -E '^Done' "$scratch.log")"
    rm -rf "$scratch" "$scratch.log"
  else
    tail -40 "$scratch.log"
    echo "fuzz smoke: $t failed (a crashing input is kept under fuzz/artifacts/$t)"
    exit 1
  fi
done
