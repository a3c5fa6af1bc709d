#!/usr/bin/env bash
# Stop the broker that infra/kafka/start.sh started from <dataDir>: SIGTERM (a controlled
# shutdown), then SIGKILL after KAFKA_STOP_TIMEOUT seconds (default 20). Keeps the data.
#
#   infra/kafka/stop.sh <dataDir>
set -euo pipefail
[[ $# -eq 1 ]] || { echo "usage: $0 <dataDir>" >&2; exit 2; }
pidfile="$1/kafka.pid"
timeout="${KAFKA_STOP_TIMEOUT:-20}"

if [[ ! -f "$pidfile" ]]; then
  echo "stop.sh: no $pidfile: nothing to stop"
  exit 0
fi
pid="$(cat "$pidfile")"

# The watchdog start.sh may have left (KAFKA_WATCH_PID) has nothing more to watch.
if [[ -f "$1/watchdog.pid" ]]; then
  wd="$(cat "$1/watchdog.pid")"
  if [[ "$wd" != "$PPID" ]] && ps -p "$wd" -o args= 2>/dev/null | grep -q 'watchdog'; then
    kill -TERM "$wd" 2>/dev/null || true
  fi
  rm -f "$1/watchdog.pid"
fi

# Only signal the pid if it is still our broker (pids get reused; an exited one shows as
# "[java] <defunct>" until reaped, which no longer matches).
is_broker() { ps -p "$pid" -o args= 2>/dev/null | grep -q 'kafka\.Kafka'; }

if ! is_broker; then
  echo "stop.sh: pid $pid is not running a broker any more"
  rm -f "$pidfile"
  exit 0
fi

kill -TERM "$pid" 2>/dev/null || true
deadline=$((SECONDS + timeout))
while is_broker && (( SECONDS < deadline )); do sleep 0.2; done
if is_broker; then
  echo "stop.sh: broker pid $pid still up after ${timeout}s; SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
  while is_broker; do sleep 0.1; done
fi
rm -f "$pidfile"
echo "kafka stopped (pid $pid)"
