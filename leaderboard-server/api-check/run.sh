#!/usr/bin/env bash
# The leaderboard's API against its own OpenAPI document: a real server (SQLite in a temporary
# folder), a seeded cohort (two students, every lab open, an upload of each), then schemathesis (PyPI) with every check:
# no 5xx, no answer that violates the schema, no schema-valid request refused.
# Usage: leaderboard-server/api-check/run.sh [target/release/observatory] [max examples]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-target/release/observatory}"
examples="${2:-40}"
command -v schemathesis >/dev/null || { echo "schemathesis is missing: python3 -m pip install schemathesis"; exit 1; }
work="$(mktemp -d)"
LEADERBOARD_PID=""
trap '[ -n "$LEADERBOARD_PID" ] && kill "$LEADERBOARD_PID" 2>/dev/null; rm -rf "$work"' EXIT
# shellcheck source=leaderboard-server/serve.sh
. "$here/../serve.sh"
start_leaderboard "$bin" "$work" --rate-per-minute 1000000 --burst 100000
export OBSERVATORY_LEADERBOARD="$LEADERBOARD_URL" OBSERVATORY_COHORT=api-check
admin="$(cat "$work/data/admin-token")"
# A cohort with two students and a passed upload of every lab (some verified), so that the
# routes of a submission are reached with a real id, not only 404s.
OBSERVATORY_TOKEN="$admin" "$bin" leaderboard seed --cohort api-check --students 2 --labs 20 \
  --verified 0.5 --tokens-out "$work/tokens.csv" > /dev/null
instructor="$(awk -F, '$1 == "instructor" {print $3}' "$work/tokens.csv")"
student="$(awk -F, '$2 == "s0001" {print $3}' "$work/tokens.csv")"
export OBSERVATORY_STUDENT=s0001
OBSERVATORY_SUBMISSION="$(curl -fsS "$OBSERVATORY_LEADERBOARD/api/cohorts/api-check/students/s0001" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["submissions"][0]["id"])')"
export OBSERVATORY_SUBMISSION
cd "$here"
# As each holder: the student uploads, the admin creates cohorts, the instructor reaches the
# cohort's routes (and each gets 401/403 where the others' routes are). The instructor's run
# revokes and rotates a student's tokens: another student (s0002) than the one whose token the
# student's run uses, and last.
for who in student admin instructor; do
  export OBSERVATORY_TOKEN="${!who}"
  if [ "$who" = instructor ]; then export OBSERVATORY_STUDENT=s0002; fi
  echo "--- schemathesis $(schemathesis --version | awk '{print $NF}') as the $who, against $OBSERVATORY_LEADERBOARD/api/openapi.json ($examples examples per operation)"
  schemathesis run "$OBSERVATORY_LEADERBOARD/api/openapi.json" --checks all \
    --max-examples "$examples" --no-color --seed 1
done
if grep -q "panicked" "$work/serve.log"; then
  echo "the server panicked:"; grep -A3 panicked "$work/serve.log"; exit 1
fi
