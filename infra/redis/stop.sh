#!/usr/bin/env bash
# Stop the redis-server that infra/redis/start.sh started from <dataDir>: SIGTERM (it flushes
# the append-only file and exits), then SIGKILL after REDIS_STOP_TIMEOUT seconds (default 10).
# Keeps the data.
#
#   infra/redis/stop.sh <dataDir>
set -euo pipefail
[[ $# -eq 1 ]] || { echo "usage: $0 <dataDir>" >&2; exit 2; }
pidfile="$1/redis.pid"
timeout="${REDIS_STOP_TIMEOUT:-10}"

if [[ ! -f "$pidfile" ]]; then
  echo "stop.sh: no $pidfile: nothing to stop"
  exit 0
fi
pid="$(cat "$pidfile")"

# The watchdog start.sh may have left (REDIS_WATCH_PID) has nothing more to watch.
if [[ -f "$1/watchdog.pid" ]]; then
  wd="$(cat "$1/watchdog.pid")"
  if [[ "$wd" != "$PPID" ]] && ps -p "$wd" -o args= 2>/dev/null | grep -q 'watchdog'; then
    kill -TERM "$wd" 2>/dev/null || true
  fi
  rm -f "$1/watchdog.pid"
fi

# Only signal the pid if it is still our server (pids get reused).
is_server() { ps -p "$pid" -o args= 2>/dev/null | grep -q 'redis-server'; }

if ! is_server; then
  echo "stop.sh: pid $pid is not running redis-server any more"
  rm -f "$pidfile"
  exit 0
fi

kill -TERM "$pid" 2>/dev/null || true
deadline=$((SECONDS + timeout))
while is_server && (( SECONDS < deadline )); do sleep 0.1; done
if is_server; then
  echo "stop.sh: redis-server pid $pid still up after ${timeout}s; SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
  while is_server; do sleep 0.1; done
fi
rm -f "$pidfile"
echo "redis stopped (pid $pid)"
