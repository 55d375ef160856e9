# Sourced by the leaderboard's scripts (api-check/run.sh, bench/run.sh).
# start_leaderboard BIN WORKDIR [serve options...]: `observatory leaderboard serve` on a free
# loopback port (the kernel picks it), its data in WORKDIR/data and its log in WORKDIR/serve.log;
# returns once it listens, with LEADERBOARD_PID and LEADERBOARD_URL set (or prints the log and
# fails when it exits or does not listen within 30 s).
start_leaderboard() {
  local bin="$1" work="$2"
  shift 2
  "$bin" leaderboard serve --listen 127.0.0.1:0 --data-dir "$work/data" "$@" > "$work/serve.log" 2>&1 &
  LEADERBOARD_PID=$!
  LEADERBOARD_URL=""
  for _ in $(seq 1 300); do
    LEADERBOARD_URL="$(sed -n 's/^leaderboard: listening on //p' "$work/serve.log")"
    [ -n "$LEADERBOARD_URL" ] && return 0
    kill -0 "$LEADERBOARD_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$work/serve.log" >&2
  return 1
}
