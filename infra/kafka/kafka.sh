#!/usr/bin/env bash
# Assemble, format, start and stop a single-node Apache Kafka broker in KRaft mode.
#
#   infra/kafka/kafka.sh fetch     resolve the broker's jars from Maven Central into the cache (once)
#   infra/kafka/kafka.sh start     fetch if needed, format storage if new, start, wait until ready
#   infra/kafka/kafka.sh stop      stop cleanly (SIGTERM, then wait)
#   infra/kafka/kafka.sh status    exit 0 when the broker answers
#   infra/kafka/kafka.sh classpath print the classpath (for the perf tools used by `make bench`)
#
# Settings (environment):
#   KAFKA_CACHE_DIR  where the jars live, outside git      (default ~/.cache/sfa-crm/kafka)
#   KAFKA_STATE_DIR  log dirs, config, pid and log file    (default <repo>/.state/kafka)
#   KAFKA_PORT       client listener on 127.0.0.1          (default 9092)
#   KAFKA_CONTROLLER_PORT                                  (default KAFKA_PORT+1)
#   KAFKA_HEAP       JVM heap                              (default 512m)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")"
cache="${KAFKA_CACHE_DIR:-$HOME/.cache/sfa-crm/kafka}/$version"
state="${KAFKA_STATE_DIR:-$repo/.state/kafka}"
port="${KAFKA_PORT:-9092}"
cport="${KAFKA_CONTROLLER_PORT:-$((port + 1))}"
heap="${KAFKA_HEAP:-512m}"
pidfile="$state/kafka.pid"

log() { echo "[kafka] $*" >&2; }

need_java_and_maven() {
  if command -v java >/dev/null && command -v mvn >/dev/null; then return 0; fi
  log "installing a JDK and Maven from Debian's packages"
  [ "$(id -u)" -eq 0 ] || { log "need root to apt-get install default-jdk-headless maven"; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jdk-headless maven >/dev/null
}

fetch() {
  need_java_and_maven
  if [ -f "$cache/.complete" ]; then return 0; fi
  log "resolving Apache Kafka $version and its runtime dependencies into $cache"
  rm -rf "$cache.tmp" && mkdir -p "$cache.tmp"
  (cd "$here" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$cache.tmp/lib")
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
  touch "$cache/.complete"
}

java_cmd() {
  # shellcheck disable=SC2086
  java -Xms128m -Xmx"$heap" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$state/log4j2.properties" -Dkafka.logs.dir="$state/logs" \
    -cp "$cache/lib/*" "$@"
}

write_config() {
  mkdir -p "$state/data" "$state/logs"
  cat > "$state/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$state/data
num.partitions=3
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=168
log.segment.bytes=268435456
PROPS
  cat > "$state/log4j2.properties" <<PROPS
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $state/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
PROPS
}

format_once() {
  if [ -f "$state/data/meta.properties" ]; then return 0; fi
  log "formatting KRaft storage in $state/data"
  java_cmd kafka.tools.StorageTool format --standalone -t "$(java_cmd kafka.tools.StorageTool random-uuid)" \
    -c "$state/server.properties" >/dev/null
}

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

answers() {
  # The broker is ready once it accepts a TCP connection and serves metadata; a metadata
  # request through the admin client is the honest check, a bare port check is not enough.
  java_cmd org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" --list >/dev/null 2>&1
}

start() {
  fetch
  if running; then log "already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; return 0; fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && answers; then
    log "a broker of another state folder already serves 127.0.0.1:$port; using it"; return 0
  fi
  if [ "${KAFKA_FRESH:-0}" = 1 ] && [ -d "$state/data" ]; then
    # The test broker's topics are each run's own (prefixed); those of earlier runs only slow a
    # restart (loading thousands of partitions took over the minute start allows).
    log "starting afresh: removing the data of earlier runs"; rm -rf "$state/data"
  fi
  write_config
  format_once
  log "starting on 127.0.0.1:$port (state $state)"
  nohup java -Xms128m -Xmx"$heap" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$state/log4j2.properties" -Dkafka.logs.dir="$state/logs" \
    -cp "$cache/lib/*" kafka.Kafka "$state/server.properties" > "$state/logs/stdout.log" 2>&1 &
  echo $! > "$pidfile"
  for _ in $(seq 1 120); do
    if ! running; then log "broker exited; see $state/logs/server.log"; tail -20 "$state/logs/stdout.log" >&2; return 1; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && answers; then
      log "ready on 127.0.0.1:$port"; return 0
    fi
    sleep 0.5
  done
  log "not ready after 60 s; see $state/logs/server.log"; return 1
}

stop() {
  if ! running; then rm -f "$pidfile"; return 0; fi
  local pid; pid="$(cat "$pidfile")"
  log "stopping pid $pid"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }; sleep 0.5; done
  log "still alive after 30 s, killing"; kill -KILL "$pid" 2>/dev/null || true; rm -f "$pidfile"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) running && answers ;;
  classpath) fetch; echo "$cache/lib/*" ;;
  *) echo "usage: $0 fetch|start|stop|status|classpath" >&2; exit 2 ;;
esac
