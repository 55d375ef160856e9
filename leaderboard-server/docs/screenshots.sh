#!/usr/bin/env bash
# The README's screenshots of the leaderboard pages: a real server on loopback, a seeded cohort
# (40 synthetic students, 30% of uploads verified), headless Chromium at 1280 and 390 px wide.
# Writes leaderboard-server/docs/{cohort,board,student,instructor}{,-phone}.png.
# Usage: leaderboard-server/docs/screenshots.sh [observatory binary]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-target/release/observatory}"
chromium="$(command -v chromium || command -v chromium-browser || true)"
[ -n "$chromium" ] || { echo "chromium is missing: apt-get install chromium"; exit 1; }
work="$(mktemp -d)"
LEADERBOARD_PID=""
trap '[ -n "$LEADERBOARD_PID" ] && kill "$LEADERBOARD_PID" 2>/dev/null; rm -rf "$work"' EXIT
# shellcheck source=leaderboard-server/serve.sh
. leaderboard-server/serve.sh
start_leaderboard "$bin" "$work"
base="$LEADERBOARD_URL"
OBSERVATORY_TOKEN="$(cat "$work/data/admin-token")" "$bin" leaderboard seed --cohort winter-2026 \
  --server "$base" --students 40 --labs 4 --tokens-out "$work/tokens.csv" > "$work/seed.txt"
instructor="$(awk -F, '$1 == "instructor" {print $3}' "$work/tokens.csv")"
out=leaderboard-server/docs
shoot() {
  local name="$1" url="$2" size
  for size in 1280,1000 390,844; do
    local suffix=""
    [ "$size" = 390,844 ] && suffix=-phone
    "$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
      --user-data-dir="$work/profile" --window-size="$size" --screenshot="$out/$name$suffix.png" "$url" 2>/dev/null
    echo "$out/$name$suffix.png"
  done
}
shoot cohort "$base/c/winter-2026"
shoot board "$base/c/winter-2026/labs/3?tier=self_reported"
shoot student "$base/c/winter-2026/students/s0007"
# The instructor's page needs the sign-in cookie: Chromium cannot send a header, so the page is
# saved with curl and opened from the file.
curl -fsS -H "Cookie: observatory_token=$instructor" "$base/c/winter-2026/instructor" > "$work/instructor.html"
shoot instructor "file://$work/instructor.html"
