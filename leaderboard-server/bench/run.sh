#!/usr/bin/env bash
# Load on the leaderboard: a benchmark, not a test (`make bench-leaderboard`). A real server on
# a SQLite file in a temporary folder, a seeded cohort (500 synthetic students x 14 labs, 30%
# verified), then wrk on loopback, one case after the other:
#   board page     GET the lab's board page (self-reported: 500 rows, the strip plot's SVG)
#   board JSON     GET the same board from the API
#   uploads        POST a new upload per request (validated, ratio recomputed, stored)
#   board + writes the next lab's board page while a second wrk uploads (each upload invalidates
#                  the page cache, so the board is recomputed from the database again and again)
# wrk and the server share this machine's cores. The rate limit is raised for the run (it is a
# per-token limit: the load here is one token). Results: reports/leaderboard-bench/results.md.
# Usage: leaderboard-server/bench/run.sh [observatory binary]   (DURATION=15s STUDENTS=500 LABS=14)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-target/release/observatory}"
DURATION="${DURATION:-15s}"
STUDENTS="${STUDENTS:-500}"
LABS="${LABS:-14}"
CONNECTIONS="${CONNECTIONS:-32}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk"; exit 1; }
out="reports/leaderboard-bench"
mkdir -p "$out"
work="$(mktemp -d)"
LEADERBOARD_PID=""
trap '[ -n "$LEADERBOARD_PID" ] && kill "$LEADERBOARD_PID" 2>/dev/null; rm -rf "$work"' EXIT
# shellcheck source=leaderboard-server/serve.sh
. leaderboard-server/serve.sh
start_leaderboard "$bin" "$work" --rate-per-minute 100000000 --burst 1000000
base="$LEADERBOARD_URL"
echo "--- seeding cohort bench: $STUDENTS students x $LABS labs"
start=$(date +%s.%N)
OBSERVATORY_TOKEN="$(cat "$work/data/admin-token")" "$bin" leaderboard seed --cohort bench --server "$base" \
  --students "$STUDENTS" --labs "$LABS" --tokens-out "$work/tokens.csv" \
  --upload-template "$work/upload.json" > "$work/seed.txt"
head -2 "$work/seed.txt"
seeded=$(echo "$(date +%s.%N) - $start" | bc)
lab="$(sed -n 's/.*"lab":\([0-9]*\).*/\1/p' "$work/upload.json")"
student_token="$(awk -F, '$1 == "student" {print $3; exit}' "$work/tokens.csv")"
board="$base/c/bench/labs/$lab?tier=self_reported"
rows="$(curl -fsS "$base/api/cohorts/bench/labs/$lab/board?tier=self_reported" | grep -o '"student"' | wc -l)"
echo "--- the board of lab $lab has $rows rows; $(curl -fsS "$board" | wc -c) bytes of HTML"

results="$out/results.md"
{
  echo "# Leaderboard load ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
  echo
  echo "Cohort: $STUDENTS synthetic students x $LABS labs (seeded in ${seeded%.*} s through the API); board of lab $lab: $rows rows."
  echo "wrk $DURATION per case, $CONNECTIONS connections, on loopback; server and wrk share the machine."
  echo
  echo "| case | requests/s | p50 | p90 | p99 | errors |"
  echo "|---|---|---|---|---|---|"
} > "$results"

# One wrk run; its summary goes to $work/NAME.txt and a row to the table.
measure() {
  local name="$1"; shift
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" > "$work/$name.txt"
  cp "$work/$name.txt" "$out/$name.txt"
  local rps p50 p90 p99 errors
  rps="$(awk '/^Requests\/sec/ {print $2}' "$work/$name.txt")"
  p50="$(awk '$1 == "50%" {print $2}' "$work/$name.txt")"
  p90="$(awk '$1 == "90%" {print $2}' "$work/$name.txt")"
  p99="$(awk '$1 == "99%" {print $2}' "$work/$name.txt")"
  errors="$(awk '/Non-2xx/ {print $NF} /Socket errors/ {print}' "$work/$name.txt" | paste -sd' ')"
  echo "| $name | ${rps%.*} | $p50 | $p90 | $p99 | ${errors:-0} |" >> "$results"
  echo "$name: ${rps%.*} req/s, p50 $p50, p90 $p90, p99 $p99, errors ${errors:-0}"
}

echo "--- wrk: board page"
measure "board-page" "$board"
echo "--- wrk: board JSON"
measure "board-json" -H "Accept: application/json" "$base/api/cohorts/bench/labs/$lab/board?tier=self_reported"
echo "--- wrk: uploads"
LB_PREFIX=uploads LB_TEMPLATE="$work/upload.json" LB_PATH="/api/cohorts/bench/submissions" LB_TOKEN="$student_token" \
  measure "uploads" -s leaderboard-server/bench/upload.lua "$base/api/cohorts/bench/submissions"
# Lab $lab's board now holds the thousands of uploads above (the bench lifts the daily limit of
# 20): this case reads the next lab's board, 500 rows like a real one, while uploads go to $lab.
other=$((lab + 1))
echo "(board + writes: the board of lab $other, while the uploads go to lab $lab and invalidate the cache)" >> "$results"
echo "--- wrk: board page (lab $other) while uploads go on"
LB_PREFIX=background LB_TEMPLATE="$work/upload.json" LB_PATH="/api/cohorts/bench/submissions" LB_TOKEN="$student_token" \
  wrk -t1 -c4 -d"$DURATION" -s leaderboard-server/bench/upload.lua "$base/api/cohorts/bench/submissions" \
  > "$work/background-uploads.txt" &
writer=$!
measure "board-page-with-uploads" "$base/c/bench/labs/$other?tier=self_reported"
wait "$writer"
echo "(the uploads beside it: $(awk '/^Requests\/sec/ {print $2}' "$work/background-uploads.txt") req/s)" >> "$results"
cp "$work/background-uploads.txt" "$out/"
if grep -q panicked "$work/serve.log"; then echo "the server panicked:"; grep -A3 panicked "$work/serve.log"; exit 1; fi
echo "--- $results"
cat "$results"
