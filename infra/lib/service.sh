# Shared by infra/kafka and infra/redis: the watchdog a start script leaves behind, and the stop
# that follows a pid file. Source it; it defines functions only.

# start_watchdog <watchedPid> <serverPid> <dataDir> <stopScript>
# Stops the server (with <stopScript> <dataDir>) once <watchedPid> is gone, so a test run or
# benchmark that dies cannot leave a server behind. Own session, no inherited stdio (a caller
# reading the start script's output must see EOF). Writes <dataDir>/watchdog.pid.
start_watchdog() {
  local detach=(setsid)
  command -v setsid >/dev/null 2>&1 || detach=()
  "${detach[@]}" bash -c '
    watched=$1; server=$2; data=$3; stop=$4
    while kill -0 "$watched" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 2; done
    if kill -0 "$server" 2>/dev/null; then "$stop" "$data"; fi
  ' watchdog "$1" "$2" "$3" "$4" </dev/null >/dev/null 2>&1 &
  echo $! >"$3/watchdog.pid"
}

# stop_service <dataDir> <pidFile> <commandPattern> <name> <timeoutSeconds> <label>
# SIGTERM the process in <dataDir>/<pidFile> if its command line still matches <commandPattern>
# (pids get reused; an exited one shows as "<defunct>" until reaped, which no longer matches),
# then SIGKILL after <timeoutSeconds>. Stops the watchdog first. Keeps the data.
stop_service() {
  local data=$1 pidfile="$1/$2" pattern=$3 name=$4 timeout=$5 label=$6 pid wd deadline
  if [[ ! -f "$pidfile" ]]; then
    echo "stop.sh: no $pidfile: nothing to stop"
    return 0
  fi
  pid="$(cat "$pidfile")"
  # The watchdog has nothing more to watch (unless it is the one stopping us).
  if [[ -f "$data/watchdog.pid" ]]; then
    wd="$(cat "$data/watchdog.pid")"
    if [[ "$wd" != "$PPID" ]] && ps -p "$wd" -o args= 2>/dev/null | grep -q 'watchdog'; then
      kill -TERM "$wd" 2>/dev/null || true
    fi
    rm -f "$data/watchdog.pid"
  fi
  running() { ps -p "$pid" -o args= 2>/dev/null | grep -q -- "$pattern"; }
  if ! running; then
    echo "stop.sh: pid $pid is not running $name any more"
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + timeout))
  while running && (( SECONDS < deadline )); do sleep 0.1; done
  if running; then
    echo "stop.sh: $name pid $pid still up after ${timeout}s; SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    while running; do sleep 0.1; done
  fi
  rm -f "$pidfile"
  echo "$label stopped (pid $pid)"
}
