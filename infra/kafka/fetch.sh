#!/usr/bin/env bash
# Put the Apache Kafka broker jars (version pinned in infra/kafka/pom.xml, <kafka.version>)
# and their runtime dependencies into $KAFKA_CACHE/libs (default infra/kafka/.cache/libs),
# using Maven. Idempotent: does nothing when the jars of that version are already there.
#
#   infra/kafka/fetch.sh            # prints: kafka <version> jars: <dir> (cached|fetched in Ns)
#
# Needs java and mvn. Maven's own repository (~/.m2, or MAVEN_OPTS/-Dmaven.repo.local) is reused.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${KAFKA_CACHE:-$here/.cache}"
libs="$cache/libs"
pom="$here/pom.xml"

version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom" | head -n1)"
if [[ -z "$version" ]]; then
  echo "fetch.sh: no <kafka.version> in $pom" >&2
  exit 2
fi

# Complete only when the marker (written last) names this version and the broker jar is there.
cached() { [[ -f "$libs/.complete" && "$(cat "$libs/.complete")" == "$version" && -f "$libs/kafka_2.13-$version.jar" ]]; }
if cached; then
  echo "kafka $version jars: $libs (cached)"
  exit 0
fi

for tool in java mvn; do
  command -v "$tool" >/dev/null 2>&1 || { echo "fetch.sh: '$tool' not found on PATH" >&2; exit 3; }
done

mkdir -p "$cache"
# One fetch at a time (two test runs starting together); the second finds the jars cached.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache/.fetch.lock"
  flock 9
  if cached; then
    echo "kafka $version jars: $libs (cached)"
    exit 0
  fi
fi
# Download into a private directory, then swap it in, so a concurrent or interrupted run
# never leaves a half-filled libs/ that looks complete.
tmp="$(mktemp -d "$cache/libs.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"   # mktemp makes it private; the jars are for whoever runs the broker

start=$SECONDS
echo "kafka $version: fetching org.apache.kafka:kafka_2.13:$version and its runtime dependencies with Maven..."
# Maven's output goes to a log, shown only when it fails (mvn -q still prints ANSI resets).
mvnlog="$cache/mvn-fetch.log"
if ! mvn -B -q -Dstyle.color=never -f "$pom" \
    dependency:copy-dependencies \
    -DincludeScope=runtime \
    -DoutputDirectory="$tmp" >"$mvnlog" 2>&1; then
  echo "fetch.sh: mvn failed; its output:" >&2
  tail -n 60 "$mvnlog" >&2
  exit 4
fi

if [[ ! -f "$tmp/kafka_2.13-$version.jar" ]]; then
  echo "fetch.sh: Maven finished but kafka_2.13-$version.jar is missing from $tmp" >&2
  exit 5
fi
echo "$version" > "$tmp/.complete"

old="$cache/libs.old.$$"
[[ -e "$libs" ]] && mv "$libs" "$old"
mv "$tmp" "$libs"
rm -rf "$old"
trap - EXIT

echo "kafka $version jars: $libs ($(ls "$libs"/*.jar | wc -l) jars, fetched in $((SECONDS - start))s)"
