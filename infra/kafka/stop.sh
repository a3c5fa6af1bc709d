#!/usr/bin/env bash
# Stop the broker that infra/kafka/start.sh started from <dataDir>: SIGTERM (a controlled
# shutdown), then SIGKILL after KAFKA_STOP_TIMEOUT seconds (default 20). Keeps the data.
#
#   infra/kafka/stop.sh <dataDir>
set -euo pipefail
[[ $# -eq 1 ]] || { echo "usage: $0 <dataDir>" >&2; exit 2; }
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib/service.sh"
stop_service "$1" kafka.pid 'kafka\.Kafka' broker "${KAFKA_STOP_TIMEOUT:-20}" kafka
