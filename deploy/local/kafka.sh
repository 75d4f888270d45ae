#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft) for development, the demo and the test suite.
#
#   deploy/local/kafka.sh start|stop|status|reset|fetch|bootstrap
#
#   reset stops the broker and deletes its data (topics, offsets), keeping the jars.
#
# The broker jars come from Maven Central (see pom.xml) into a cache outside the
# repository, so nothing is installed by hand. Every command is idempotent.
#
# Environment (all optional):
#   OMNISTITCH_KAFKA_PORT      client port on 127.0.0.1        (default 9092)
#   OMNISTITCH_KAFKA_CONTROLLER_PORT  KRaft controller port     (default client port + 1)
#   OMNISTITCH_KAFKA_HOME      runtime dir: data, log, pid      (default ~/.cache/omnistitch/kafka-<port>)
#   OMNISTITCH_CACHE_DIR       jar cache root                   (default ~/.cache/omnistitch)
#   OMNISTITCH_KAFKA_HEAP      JVM heap                         (default 768m)
#   OMNISTITCH_KAFKA_WAIT      seconds to wait for readiness     (default 90)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/pom.xml")
PORT=${OMNISTITCH_KAFKA_PORT:-9092}
CPORT=${OMNISTITCH_KAFKA_CONTROLLER_PORT:-$((PORT + 1))}
CACHE=${OMNISTITCH_CACHE_DIR:-$HOME/.cache/omnistitch}
LIB="$CACHE/kafka-$KAFKA_VERSION/lib"
RUN=${OMNISTITCH_KAFKA_HOME:-$CACHE/kafka-$PORT}
PIDFILE="$RUN/broker.pid"
LOGFILE="$RUN/broker.log"
HEAP=${OMNISTITCH_KAFKA_HEAP:-768m}
WAIT=${OMNISTITCH_KAFKA_WAIT:-90}
BOOTSTRAP="127.0.0.1:$PORT"

say() { echo "kafka: $*" >&2; }

fetch() {
  if [ -f "$LIB/.complete" ]; then return 0; fi
  command -v java >/dev/null || { say "java not found (JDK 17+ is required)"; exit 1; }
  command -v mvn >/dev/null || { say "mvn not found (Maven is required to fetch the broker jars)"; exit 1; }
  say "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $LIB"
  rm -rf "$LIB.tmp"; mkdir -p "$LIB.tmp"
  mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$LIB.tmp" >&2
  rm -rf "$LIB"; mv "$LIB.tmp" "$LIB"; touch "$LIB/.complete"
}

JAVA_OPTS=(-Xms128m -Xmx"$HEAP" -XX:+UseG1GC -Djava.awt.headless=true
           -Djava.io.tmpdir="$RUN/tmp" -Dlog4j2.configurationFile="$HERE/log4j2.properties")
java_run() {
  mkdir -p "$RUN/tmp"
  java "${JAVA_OPTS[@]}" -cp "$LIB/*" "$@"
}

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid; pid=$(cat "$PIDFILE")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A real admin request (DescribeCluster via the tools' broker-api-versions).
answers_admin() {
  java_run org.apache.kafka.tools.BrokerApiVersionsCommand \
      --bootstrap-server "$BOOTSTRAP" >/dev/null 2>&1
}

# The broker holds a few files open per partition directory: a data directory that test
# and bench runs filled with topics can pass the open-file limit, and the broker then dies
# with "Too many open files" (seen at 19,794 directories against a limit of 20,000).
warn_open_files() {
  local limit dirs
  limit=$(ulimit -n)
  [ "$limit" = unlimited ] && return 0
  dirs=$(find "$RUN/data" -mindepth 1 -maxdepth 1 -type d -name '*-[0-9]*' 2>/dev/null | wc -l)
  if [ "$dirs" -gt $((limit / 4)) ]; then
    say "warning: $dirs partition directories in $RUN/data against an open-file limit of" \
        "$limit: the broker may fail with 'Too many open files'; '$0 reset' empties it"
  fi
}

start() {
  fetch
  if pid=$(running_pid); then
    say "already running (pid $pid) on $BOOTSTRAP"; echo "$BOOTSTRAP"; return 0
  fi
  if port_open "$PORT"; then
    say "port $PORT is taken by another process; set OMNISTITCH_KAFKA_PORT"; exit 1
  fi
  if port_open "$CPORT"; then
    say "controller port $CPORT is taken by another process; set OMNISTITCH_KAFKA_CONTROLLER_PORT"
    exit 1
  fi
  mkdir -p "$RUN/data"
  sed -e "s#@PORT@#$PORT#g" -e "s#@CPORT@#$CPORT#g" -e "s#@LOGDIR@#$RUN/data#g" \
      "$HERE/server.properties.template" > "$RUN/server.properties"
  if [ ! -f "$RUN/data/meta.properties" ]; then
    local cid; cid=$(java_run kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
    say "formatting storage in $RUN/data (cluster id $cid)"
    java_run kafka.tools.StorageTool format -t "$cid" -c "$RUN/server.properties" >>"$LOGFILE" 2>&1
  fi
  warn_open_files
  say "starting broker $KAFKA_VERSION on $BOOTSTRAP (log: $LOGFILE)"
  mkdir -p "$RUN/tmp"
  nohup java "${JAVA_OPTS[@]}" -cp "$LIB/*" kafka.Kafka "$RUN/server.properties" \
      >>"$LOGFILE" 2>&1 </dev/null &
  echo $! > "$PIDFILE"
  local deadline=$((SECONDS + WAIT))
  until port_open "$PORT" && answers_admin; do
    if ! running_pid >/dev/null; then
      say "broker exited during start-up; last log lines:"; tail -n 30 "$LOGFILE" >&2; exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      say "broker did not answer an admin request within ${WAIT}s; see $LOGFILE"; exit 1
    fi
    sleep 1
  done
  say "ready on $BOOTSTRAP"
  echo "$BOOTSTRAP"
}

stop() {
  local pid
  if ! pid=$(running_pid); then say "not running"; rm -f "$PIDFILE"; return 0; fi
  say "stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  say "stopped"
}

reset() {
  stop
  say "deleting broker data in $RUN/data"
  rm -rf "$RUN/data" "$RUN/tmp" "$LOGFILE"
}

status() {
  local pid
  warn_open_files
  if pid=$(running_pid) && port_open "$PORT"; then
    say "running (pid $pid) on $BOOTSTRAP, Kafka $KAFKA_VERSION"; echo "$BOOTSTRAP"; return 0
  fi
  say "not running (bootstrap would be $BOOTSTRAP)"; return 3
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  reset) reset ;;
  fetch) fetch; echo "$LIB" ;;
  bootstrap) echo "$BOOTSTRAP" ;;
  lib) echo "$LIB" ;;
  *) echo "usage: $0 start|stop|status|reset|fetch|bootstrap|lib" >&2; exit 2 ;;
esac
