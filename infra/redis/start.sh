#!/usr/bin/env bash
# Start a throwaway redis-server on 127.0.0.1 (for the BullMQ peer benchmark and its smoke test).
#
#   infra/redis/start.sh <port> <dataDir>
#
#   port     TCP port on 127.0.0.1 (no other interface, no unix socket)
#   dataDir  created if missing; gets redis.conf, redis.log, redis.pid and the append-only files
#
# If redis-server is not on PATH it is installed from the distribution (Debian/Ubuntu:
# `apt-get update && apt-get install -y redis-server`), which needs root.
#
# Persistence as BullMQ's production notes ask for: AOF on, fsync once a second, no RDB
# snapshots; `maxmemory-policy noeviction` (BullMQ refuses to run with evictions).
#
# Env: REDIS_START_TIMEOUT (s, default 20), REDIS_WATCH_PID (if set: a watchdog stops the server
# once that process is gone, so a benchmark that dies cannot leave a server behind).
#
# Exits 0 once the server answers PING; otherwise prints the tail of redis.log and exits non-zero.
# Stop it with infra/redis/stop.sh <dataDir>.
set -euo pipefail

usage() { echo "usage: $0 <port> <dataDir>" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
port="$1"
[[ "$port" =~ ^[0-9]+$ ]] || usage

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
timeout="${REDIS_START_TIMEOUT:-20}"

if ! command -v redis-server >/dev/null 2>&1; then
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "start.sh: redis-server is not on PATH and cannot be installed here (needs root and apt-get); install it (e.g. apt-get install redis-server)" >&2
    exit 3
  fi
  echo "start.sh: redis-server not found; installing it with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2
  apt-get install -y --no-install-recommends redis-server >&2
  # The package starts a system-wide service on 6379 where an init system runs; we never use it.
fi

mkdir -p "$2"
data="$(cd "$2" && pwd)"
conf="$data/redis.conf"
out="$data/redis.log"
pidfile="$data/redis.pid"

if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "start.sh: a redis-server already runs from $data (pid $(cat "$pidfile")); stop it with stop.sh" >&2
  exit 1
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "start.sh: port $port on 127.0.0.1 is already in use" >&2
  exit 1
fi

cat >"$conf" <<CONF
# Written by infra/redis/start.sh.
bind 127.0.0.1
port $port
unixsocket ""
protected-mode yes
daemonize no
dir $data
logfile ""
loglevel notice
save ""
appendonly yes
appendfsync everysec
maxmemory-policy noeviction
CONF

started=$(date +%s%N)
# setsid: own session, so the server outlives this script and the caller's process group;
# $! is redis-server's pid (setsid execs, it does not fork here).
detach=(setsid)
command -v setsid >/dev/null 2>&1 || detach=()
"${detach[@]}" redis-server "$conf" >"$out" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pidfile"
version="$(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p')"

fail() {
  echo "start.sh: $1" >&2
  echo "---- last 40 lines of $out ----" >&2
  tail -n 40 "$out" >&2 || true
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$pidfile"
  exit 1
}

# Ready = the server answers PING (redis-cli comes with redis-server; bash's /dev/tcp otherwise).
ping() {
  if command -v redis-cli >/dev/null 2>&1; then
    [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == "PONG" ]]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'PING\r\n' >&3 && read -r -t 1 reply <&3 && [[ "$reply" == +PONG* ]]) 2>/dev/null
  fi
}
deadline=$((SECONDS + timeout))
until ping; do
  kill -0 "$pid" 2>/dev/null || fail "redis-server exited during startup"
  (( SECONDS < deadline )) || fail "redis-server did not answer on 127.0.0.1:$port within ${timeout}s"
  sleep 0.1
done

if [[ -n "${REDIS_WATCH_PID:-}" ]]; then
  . "$here/../lib/service.sh"
  start_watchdog "$REDIS_WATCH_PID" "$pid" "$data" "$here/stop.sh"
fi

ms=$(( ($(date +%s%N) - started) / 1000000 ))
echo "redis $version ready on 127.0.0.1:$port in ${ms} ms (pid $pid)"
