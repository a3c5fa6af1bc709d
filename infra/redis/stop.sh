#!/usr/bin/env bash
# Stop the redis-server that infra/redis/start.sh started from <dataDir>: SIGTERM (it flushes
# the append-only file and exits), then SIGKILL after REDIS_STOP_TIMEOUT seconds (default 10).
# Keeps the data.
#
#   infra/redis/stop.sh <dataDir>
set -euo pipefail
[[ $# -eq 1 ]] || { echo "usage: $0 <dataDir>" >&2; exit 2; }
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib/service.sh"
stop_service "$1" redis.pid 'redis-server' redis-server "${REDIS_STOP_TIMEOUT:-10}" redis
