#!/usr/bin/env bash
# Load on the leaderboard: a benchmark, not a test (`make bench-leaderboard`). A real server on
# a SQLite file in a temporary folder, a seeded cohort (500 synthetic students x 14 labs, 30%
# verified), then wrk on loopback, one case after the other:
#   board page     GET the lab's board page (self-reported: 500 rows, the strip plot's SVG)
#   board JSON     GET the same board from the API
#   uploads        POST a new upload per request (validated, ratio recomputed, stored)
#   board + writes the next lab's board page while a second wrk uploads (each upload invalidates
#                  the page cache, so the board is recomputed from the database again and again)
#   board under writes, N stored (run before the uploads case)
#                  the uploads' lab's board page paced to ~1,000 req/s while ~50 uploads/s go to
#                  the same lab, with 1,000 and then 20,000 uploads stored on it (the board's
#                  cost must not grow with the history)
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
# Board cost against history: lab $lab's board page, paced to about 1,000 requests/s (10 connections, 10 ms pauses), while about
# 50 uploads/s go to the same lab, first with 1,000 uploads stored on it, then with 20,000 (before
# the cases below add thousands more). The
# board reads each student's best entry only, so the two should agree within noise.
stored() {
  # Uploads stored on lab $lab: the submissions export counts them (one row each, after its note
  # and header lines).
  curl -fsS -H "Authorization: Bearer $(awk -F, '$1 == "instructor" {print $3}' "$work/tokens.csv")" \
    "$base/api/cohorts/bench/export/submissions.csv" | awk -F, -v lab="$lab" 'NR > 2 && $3 == lab' | wc -l
}
fill_to() {
  local want="$1" have filler
  have="$(stored)"
  if [ "$have" -lt "$want" ]; then
    # wrk runs for its whole duration: stopped with SIGINT once enough are stored (LB_MAX caps
    # the overshoot).
    LB_PREFIX="fill$want" LB_TEMPLATE="$work/upload.json" LB_PATH="/api/cohorts/bench/submissions" LB_TOKEN="$student_token" \
      LB_MAX=$((want - have)) wrk -t1 -c8 -d600s -s leaderboard-server/bench/upload.lua \
      "$base/api/cohorts/bench/submissions" > "$work/fill-$want.txt" &
    filler=$!
    while kill -0 "$filler" 2>/dev/null && [ "$(stored)" -lt "$want" ]; do sleep 2; done
    kill -INT "$filler" 2>/dev/null || true
    wait "$filler" || true
  fi
  echo "lab $lab: $(stored) uploads stored"
}
echo "(history: lab $lab's board page paced to ~1,000 req/s while ~50 uploads/s go to lab $lab; wrk -c10 with 10 ms pauses, the writer one connection with 15 ms pauses)" >> "$results"
for n in 1000 20000; do
  echo "--- filling lab $lab to $n stored uploads"
  fill_to "$n"
  LB_PREFIX="paced$n" LB_DELAY_MS=15 LB_TEMPLATE="$work/upload.json" LB_PATH="/api/cohorts/bench/submissions" LB_TOKEN="$student_token" \
    wrk -t1 -c1 -d"$DURATION" -s leaderboard-server/bench/upload.lua "$base/api/cohorts/bench/submissions" \
    > "$work/paced-uploads-$n.txt" &
  writer=$!
  echo "--- wrk: board page of lab $lab with $n stored, while uploads go on"
  LB_DELAY_MS=10 CONNECTIONS=10 measure "board-under-writes-$n-stored" -s leaderboard-server/bench/paced.lua "$board"
  wait "$writer"
  cp "$work/paced-uploads-$n.txt" "$out/"
  echo "(the uploads beside it: $(awk '/^Requests\/sec/ {print $2}' "$work/paced-uploads-$n.txt") req/s; $(stored) stored at the end)" >> "$results"
done
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
