#!/usr/bin/env bash
# Start a single-node Apache Kafka broker in KRaft combined mode (broker + controller in one
# JVM), without Docker, from the jars that fetch.sh puts in $KAFKA_CACHE/libs.
#
#   infra/kafka/start.sh <port> <dataDir> [controllerPort]
#
#   port            PLAINTEXT listener on 127.0.0.1 (clients use 127.0.0.1:<port>)
#   dataDir         created if missing; gets server.properties, log4j2.properties, logs/
#                   (the Kafka data), kafka.log (broker output) and kafka.pid
#   controllerPort  CONTROLLER listener on 127.0.0.1; default <port>+1
#
# Env: KAFKA_CACHE (jar cache, default infra/kafka/.cache), KAFKA_HEAP_OPTS (default
# "-Xms256m -Xmx512m"), KAFKA_JVM_OPTS (extra JVM flags), KAFKA_START_TIMEOUT (s, default 60),
# KAFKA_LOG_LEVEL (root log level, default INFO), KAFKA_WATCH_PID (if set: a watchdog stops the
# broker once that process is gone, so a test runner that dies cannot leave a broker behind).
#
# Reusing a dataDir keeps its data (storage is formatted only once). Exits 0 once the broker
# answers a metadata request; otherwise kills it, prints the tail of kafka.log and exits non-zero.
# Stop it with infra/kafka/stop.sh <dataDir>.
set -euo pipefail

usage() { echo "usage: $0 <port> <dataDir> [controllerPort]" >&2; exit 2; }
[[ $# -ge 2 && $# -le 3 ]] || usage
port="$1"
[[ "$port" =~ ^[0-9]+$ ]] || usage
ctlport="${3:-$((port + 1))}"
[[ "$ctlport" =~ ^[0-9]+$ ]] || usage

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${KAFKA_CACHE:-$here/.cache}"
libs="$cache/libs"
timeout="${KAFKA_START_TIMEOUT:-60}"

mkdir -p "$2"
data="$(cd "$2" && pwd)"
props="$data/server.properties"
log4j="$data/log4j2.properties"
out="$data/kafka.log"
pidfile="$data/kafka.pid"

# Jars: fetch.sh is idempotent and prints the pinned version.
"$here/fetch.sh"
version="$(cat "$libs/.complete")"
cp="$libs/*"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "start.sh: a broker already runs from $data (pid $(cat "$pidfile")); stop it with stop.sh" >&2
  exit 1
fi
for p in "$port" "$ctlport"; do
  if port_open "$p"; then
    echo "start.sh: port $p on 127.0.0.1 is already in use" >&2
    exit 1
  fi
done

cat >"$props" <<PROPS
# Written by infra/kafka/start.sh: single-node KRaft, broker and controller in one process.
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctlport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.bootstrap.servers=127.0.0.1:$ctlport
log.dirs=$data/logs

# One node: every internal topic has one replica, and needs only one in sync.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Few partitions for the internal topics: their creation is on the path of the first
# consumer group join and the first transaction (defaults are 50 each).
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1

# Tests: no rebalance delay, topics made on first use with one partition.
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
num.partitions=1
delete.topic.enable=true

# Small and light for a 2-core machine.
log.segment.bytes=16777216
log.retention.hours=24
log.retention.check.interval.ms=60000
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=16777216
PROPS

cat >"$log4j" <<LOG4J
# Written by infra/kafka/start.sh: everything to stdout (redirected to kafka.log).
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ${KAFKA_LOG_LEVEL:-INFO}
rootLogger.appenderRef.out.ref = STDOUT
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
LOG4J

heap="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
# G1 with short pauses as in Kafka's own kafka-run-class.sh; the rest keeps the JVM quiet
# and lean (no hsperfdata file, IPv4 loopback only).
# shellcheck disable=SC2206
jvm=($heap
  -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
  -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -XX:-UsePerfData
  -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true
  -Dlog4j2.configurationFile="$log4j"
  ${KAFKA_JVM_OPTS:-})

# Format the storage once per dataDir (meta.properties marks it); the cluster id is a
# Kafka Uuid: 16 random bytes, URL-safe base64 without padding, not starting with '-'.
if [[ ! -f "$data/logs/meta.properties" ]]; then
  cluster_id=""
  while [[ -z "$cluster_id" || "$cluster_id" == -* ]]; do
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
  done
  if ! java "${jvm[@]}" -cp "$cp" kafka.tools.StorageTool format --standalone \
        -t "$cluster_id" -c "$props" >"$data/format.log" 2>&1; then
    echo "start.sh: formatting the storage failed:" >&2
    cat "$data/format.log" >&2
    exit 1
  fi
fi

started=$(date +%s%N)
# setsid: the broker gets its own session, so it outlives this script and the terminal
# or test runner's process group; $! is the java pid (setsid execs, it does not fork here).
detach=(setsid)
command -v setsid >/dev/null 2>&1 || detach=()
"${detach[@]}" java "${jvm[@]}" -cp "$cp" kafka.Kafka "$props" >"$out" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pidfile"
echo "kafka $version starting: pid $pid, 127.0.0.1:$port (controller $ctlport), data $data"

fail() {
  echo "start.sh: $1" >&2
  echo "---- last 40 lines of $out ----" >&2
  tail -n 40 "$out" >&2 || true
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$pidfile"
  exit 1
}

# Ready = the port accepts connections and the broker answers a metadata request. The
# metadata request goes through kafkajs (node_modules) when node has it; otherwise the
# broker's own "Kafka Server started" line stands in.
probe_js='
const [repo, broker] = process.argv.slice(1);
const { createRequire } = await import("node:module");
const { Kafka, logLevel } = createRequire(repo + "/package.json")("kafkajs");
const admin = new Kafka({ clientId: "start-probe", brokers: [broker], logLevel: logLevel.NOTHING,
  connectionTimeout: 2000, requestTimeout: 3000, retry: { retries: 0 } }).admin();
try { await admin.connect(); await admin.listTopics(); process.exit(0); }
catch { process.exit(1); }
'
use_node=0
if command -v node >/dev/null 2>&1 && [[ -d "$repo/node_modules/kafkajs" ]]; then use_node=1; fi

deadline=$((SECONDS + timeout))
while :; do
  kill -0 "$pid" 2>/dev/null || fail "the broker exited during startup"
  if port_open "$port"; then
    if [[ $use_node == 1 ]]; then
      node --input-type=module -e "$probe_js" "$repo" "127.0.0.1:$port" && break
    elif grep -q "Kafka Server started" "$out"; then
      break
    fi
  fi
  (( SECONDS < deadline )) || fail "the broker did not answer on 127.0.0.1:$port within ${timeout}s"
  sleep 0.2
done

if [[ -n "${KAFKA_WATCH_PID:-}" ]]; then
  . "$here/../lib/service.sh"
  start_watchdog "$KAFKA_WATCH_PID" "$pid" "$data" "$here/stop.sh"
fi

ms=$(( ($(date +%s%N) - started) / 1000000 ))
echo "kafka $version ready on 127.0.0.1:$port in ${ms} ms (pid $pid)"
