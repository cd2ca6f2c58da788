#!/usr/bin/env bash
# Start a single-node Apache Kafka 4.1.x broker (KRaft, combined broker+controller) for tests.
#
#   scripts/kafka/start-kafka.sh [STATE_DIR]        -> prints 127.0.0.1:PORT on stdout
#   scripts/kafka/start-kafka.sh --stop STATE_DIR   -> SIGTERM, then SIGKILL after a grace period
#   scripts/kafka/start-kafka.sh --fetch            -> only resolve the jars into scripts/kafka/libs
#
# The broker runs straight from the Maven Central jars (no tarball, no Docker). The jars are
# fetched once with Maven into scripts/kafka/libs (gitignored) and reused afterwards.
# Only the bootstrap address goes to stdout; progress and errors go to stderr. On success the
# broker keeps running in the background: its pid is in STATE_DIR/kafka.pid, its address in
# STATE_DIR/bootstrap and its log in STATE_DIR/kafka.out.
#
# Environment:
#   KAFKA_LIBS            folder of jars (default: scripts/kafka/libs next to this script)
#   KAFKA_VERSIONS        versions to try, in order, when fetching (default: "4.1.2 4.1.1 4.1.0")
#   KAFKA_START_TIMEOUT   seconds to wait for readiness (default: 90)
#   KAFKA_STOP_TIMEOUT    seconds between SIGTERM and SIGKILL for --stop (default: 20)
#   KAFKA_HEAP_OPTS       JVM heap flags (default: -Xms256m -Xmx512m)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KAFKA_LIBS=${KAFKA_LIBS:-$HERE/libs}
KAFKA_VERSIONS=${KAFKA_VERSIONS:-4.1.2 4.1.1 4.1.0}
TIMEOUT=${KAFKA_START_TIMEOUT:-90}
STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-20}
HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}

log() { printf '[start-kafka] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

now_ms() { date +%s%3N; }

# ---------------------------------------------------------------------------------------------
# --stop STATE_DIR
# ---------------------------------------------------------------------------------------------
stop_broker() {
    local state_dir=$1 pid
    [ -f "$state_dir/kafka.pid" ] || { log "no $state_dir/kafka.pid; nothing to stop"; return 0; }
    pid=$(cat "$state_dir/kafka.pid")
    if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$state_dir/kafka.pid"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$(( $(date +%s) + STOP_TIMEOUT ))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "broker $pid still running ${STOP_TIMEOUT}s after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$state_dir/kafka.pid"
    log "broker $pid stopped"
}

# ---------------------------------------------------------------------------------------------
# Jars
# ---------------------------------------------------------------------------------------------
have_jars() { compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null; }

fetch_jars() {
    if have_jars; then
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
    mkdir -p "$(dirname "$KAFKA_LIBS")"
    # One fetch at a time: other sessions or CI phases may start a broker concurrently.
    local lock
    lock="${TMPDIR:-/tmp}/wf-bridge-kafka-libs-$(printf '%s' "$KAFKA_LIBS" | sha256sum | cut -c1-12).lock"
    exec 9>"$lock"
    flock 9
    if have_jars; then
        flock -u 9
        return 0
    fi
    local t0 tmp version
    t0=$(now_ms)
    # Resolve into a private folder and rename it at the end, so an interrupted fetch never
    # leaves a half-filled libs/ that a later run would take as complete.
    tmp=$(mktemp -d "${KAFKA_LIBS%/}.tmp.XXXXXX")
    for version in $KAFKA_VERSIONS; do
        log "fetching Apache Kafka $version jars from Maven Central"
        if mvn -B -q -Dstyle.color=never -f "$HERE/pom.xml" \
            -Dkafka.version="$version" -Dkafka.libs="$tmp" \
            dependency:copy-dependencies >"$tmp/mvn.log" 2>&1; then
            break
        fi
        log "Kafka $version could not be resolved:"
        grep -m 3 "ERROR" "$tmp/mvn.log" >&2 || tail -n 5 "$tmp/mvn.log" >&2
        rm -f "$tmp"/*.jar
    done
    rm -f "$tmp/mvn.log"
    if ! compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null; then
        rm -rf "$tmp"
        flock -u 9
        die "no Kafka version of '$KAFKA_VERSIONS' could be fetched"
    fi
    rm -rf "$KAFKA_LIBS"
    mv "$tmp" "$KAFKA_LIBS"
    flock -u 9
    log "fetched $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars," \
        "$(du -sh "$KAFKA_LIBS" | cut -f1) in $(( $(now_ms) - t0 )) ms"
}

check_java() {
    command -v java >/dev/null || die "java not found (Kafka 4.x needs Java 17+: apt-get install openjdk-17-jre-headless)"
    local major
    major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
    major=${major%%.*}
    [ -n "$major" ] && [ "$major" -ge 17 ] || die "Kafka 4.x needs Java 17 or newer; found '${major:-unknown}'"
}

# Two distinct free loopback ports, as "PORT CPORT". Both sockets are held open until both are
# chosen so the kernel cannot hand out the same port twice.
free_ports() {
    python3 - <<'PY'
import socket
socks = []
for _ in range(2):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

cluster_id() {
    python3 - <<'PY'
import base64
import uuid
while True:
    cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not cid.startswith("-"):
        print(cid)
        break
PY
}

write_server_properties() {
    local file=$1 port=$2 cport=$3 data_dir=$4
    # Java properties files have no inline comments: every comment stays on its own line.
    cat >"$file" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data_dir
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
# the default of 50 partitions slows the first group join
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# lets tests use session_timeout_ms=2000
group.min.session.timeout.ms=1000
# set to false to mirror production
auto.create.topics.enable=true
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=2
log.cleaner.threads=1
log.cleaner.backoff.ms=1000
log.retention.check.interval.ms=5000
EOF
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# One start attempt on fresh ports with a freshly formatted data dir.
# Returns 0 when ready, 2 when the broker died during start-up (e.g. a port was taken meanwhile).
start_once() {
    local state_dir=$1 port cport cid pid deadline
    read -r port cport < <(free_ports)
    [ -n "${cport:-}" ] || die "could not pick free ports"
    rm -rf "$state_dir/data"
    mkdir -p "$state_dir/data" "$state_dir/logs"
    write_server_properties "$state_dir/server.properties" "$port" "$cport" "$state_dir/data"
    cid=$(cluster_id)

    local -a jvm
    # shellcheck disable=SC2206  # HEAP_OPTS is a list of flags
    jvm=($HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
        -XX:MaxInlineLevel=15 -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$HERE/log4j2.properties"
        "-Dkafka.logs.dir=$state_dir/logs")

    local t0
    t0=$(now_ms)
    if ! java "${jvm[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format --standalone \
        -t "$cid" -c "$state_dir/server.properties" >"$state_dir/format.out" 2>&1; then
        cat "$state_dir/format.out" >&2
        die "formatting the KRaft storage failed"
    fi
    log "formatted $state_dir/data (cluster $cid) in $(( $(now_ms) - t0 )) ms"

    t0=$(now_ms)
    # nohup execs java, so $! is the broker's own pid.
    nohup java "${jvm[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$state_dir/server.properties" \
        >"$state_dir/kafka.out" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$state_dir/kafka.pid"

    deadline=$(( $(date +%s) + TIMEOUT ))
    until grep -q "Kafka Server started" "$state_dir/kafka.out" 2>/dev/null && port_open "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "kafka exited during start-up; last lines of $state_dir/kafka.out:"
            grep -E ' (ERROR|FATAL) |Exception' "$state_dir/kafka.out" | tail -n 20 >&2 || true
            rm -f "$state_dir/kafka.pid"
            return 2
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "kafka not ready after ${TIMEOUT}s; last lines of $state_dir/kafka.out:"
            tail -n 30 "$state_dir/kafka.out" >&2
            stop_broker "$state_dir"
            die "start-up timed out"
        fi
        sleep 0.1
    done
    echo "127.0.0.1:$port" >"$state_dir/bootstrap"
    log "Kafka $(sed -n 's/.*Kafka version: \([^ ]*\).*/\1/p' "$state_dir/kafka.out" | head -n 1)" \
        "ready on 127.0.0.1:$port (pid $pid) in $(( $(now_ms) - t0 )) ms; log: $state_dir/kafka.out"
    echo "127.0.0.1:$port"
}

main() {
    case "${1:-}" in
    --stop)
        [ -n "${2:-}" ] || die "usage: $0 --stop STATE_DIR"
        stop_broker "$2"
        return 0
        ;;
    --fetch)
        fetch_jars
        return 0
        ;;
    -h | --help)
        sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
        return 0
        ;;
    esac

    local state_dir=${1:-}
    if [ -z "$state_dir" ]; then
        state_dir=$(mktemp -d -t kafka-test.XXXXXX)
    fi
    mkdir -p "$state_dir"
    state_dir=$(cd "$state_dir" && pwd)
    if [ -f "$state_dir/kafka.pid" ] && kill -0 "$(cat "$state_dir/kafka.pid")" 2>/dev/null; then
        die "a broker is already running from $state_dir (pid $(cat "$state_dir/kafka.pid"))"
    fi

    check_java
    fetch_jars

    local attempt rc
    for attempt in 1 2 3; do
        rc=0
        start_once "$state_dir" || rc=$?
        [ "$rc" -eq 0 ] && return 0
        log "start attempt $attempt failed; retrying on new ports"
    done
    die "kafka did not start; see $state_dir/kafka.out"
}

main "$@"
