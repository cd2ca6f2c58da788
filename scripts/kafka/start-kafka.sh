#!/usr/bin/env bash
# Start a single-node Apache Kafka 4.1.x broker (KRaft, combined broker+controller) for tests.
#
#   scripts/kafka/start-kafka.sh [STATE_DIR]        -> prints 127.0.0.1:PORT on stdout
#   scripts/kafka/start-kafka.sh --secure DIR       -> the same, plus secured listeners (below)
#   scripts/kafka/start-kafka.sh --stop STATE_DIR   -> SIGTERM, then SIGKILL after a grace period
#                                                      (the data stays in STATE_DIR/data)
#   scripts/kafka/start-kafka.sh --restart STATE_DIR -> start a stopped broker again on its data and
#                                                      ports (stops it first if it runs)
#   scripts/kafka/start-kafka.sh --pause STATE_DIR   -> SIGSTOP: the broker stays up but answers
#                                                      nothing (an unreachable broker)
#   scripts/kafka/start-kafka.sh --resume STATE_DIR  -> SIGCONT after --pause
#   scripts/kafka/start-kafka.sh --fetch            -> only resolve the jars into scripts/kafka/libs
#
# --secure DIR: DIR is the state folder, and the broker gets, besides PLAINTEXT, three more
# listeners on 127.0.0.1: SASL_SSL (SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN), SSL requiring a
# client certificate (mTLS), and SASL_PLAINTEXT (SCRAM-SHA-512, PLAIN, and OAUTHBEARER with
# Kafka's unsecured JWT validator). A CA, the broker's certificate (SAN 127.0.0.1, localhost) and
# a client certificate (key encrypted with a password) are generated with openssl into DIR/tls,
# the SCRAM user is created when the storage is formatted. DIR/sasl_ssl.env, DIR/mtls.env and
# DIR/sasl_plaintext.env hold BRIDGE_KAFKA__*=... lines for `workflows-bridge run` (secrets as
# *_FILE paths); DIR/secure.json lists the listeners, users and files for tests.
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
    kill -CONT "$pid" 2>/dev/null || true  # a paused broker cannot act on SIGTERM
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

# N distinct free loopback ports (default 2: "PORT CPORT"). All sockets are held open until all
# are chosen so the kernel cannot hand out the same port twice.
free_ports() {
    python3 - "${1:-2}" <<'PY'
import socket
import sys
socks = []
for _ in range(int(sys.argv[1])):
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

# -- --secure: certificates, listeners, users and the env files --------------------------------

SCRAM_USER=bridge
PLAIN_USER=bridge-plain

# A random password of hex digits (safe in properties, JAAS and env files).
random_secret() { python3 -c 'import secrets; print(secrets.token_hex(16))'; }

# The CA, the broker's certificate and a client certificate, in DIR/tls. Everything is PEM; the
# broker's key and chain also go into a PKCS12 keystore; the client key is encrypted.
generate_tls() {
    local tls=$1/tls
    command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
    rm -rf "$tls"
    mkdir -p "$tls"
    (
        cd "$tls"
        set -e
        random_secret >keystore.password
        random_secret >client.key.password
        openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=workflows-bridge test CA" \
            -keyout ca.key -out ca.pem
        # A second CA nobody trusts: tests sign a client certificate with it.
        openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=untrusted test CA" \
            -keyout untrusted-ca.key -out untrusted-ca.pem
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >broker.ext
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout broker.key -out broker.csr
        openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
            -extfile broker.ext -out broker.pem
        openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
            -passout "file:keystore.password" -out broker.p12
        printf 'extendedKeyUsage=clientAuth\n' >client.ext
        openssl req -newkey rsa:2048 -nodes -subj "/CN=workflows-bridge" -keyout client.plain.key \
            -out client.csr
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
            -extfile client.ext -out client.pem
        openssl pkcs8 -topk8 -in client.plain.key -v2 aes-256-cbc \
            -passout "file:client.key.password" -out client.key
        openssl x509 -req -in client.csr -CA untrusted-ca.pem -CAkey untrusted-ca.key \
            -CAcreateserial -days 30 -extfile client.ext -out untrusted-client.pem
        rm -f ./*.csr ./*.ext ./*.srl
    ) >"$1/tls.out" 2>&1 || { cat "$1/tls.out" >&2; die "generating certificates failed"; }
    random_secret >"$tls/scram.password"
    random_secret >"$tls/plain.password"
    chmod 600 "$tls"/*.key "$tls"/*.password
}

# Appended to server.properties: the three secured listeners.
write_secure_properties() {
    local file=$1 tls=$2/tls sasl_ssl=$3 mtls=$4 sasl_plain=$5 plain keystore_pw
    plain=$(cat "$tls/plain.password")
    keystore_pw=$(cat "$tls/keystore.password")
    {
        echo "listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN"
        echo "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
        echo "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
        echo "listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$PLAIN_USER=\"$plain\";"
        echo "listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN,OAUTHBEARER"
        echo "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
        echo "listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$PLAIN_USER=\"$plain\";"
        echo "listener.name.sasl_plaintext.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub=\"broker\";"
        echo "listener.name.mtls.ssl.client.auth=required"
        echo "ssl.keystore.type=PKCS12"
        echo "ssl.keystore.location=$tls/broker.p12"
        echo "ssl.keystore.password=$keystore_pw"
        echo "ssl.key.password=$keystore_pw"
        echo "ssl.truststore.type=PEM"
        echo "ssl.truststore.location=$tls/ca.pem"
    } >>"$file"
    # The listener lines name PLAINTEXT and CONTROLLER: add the secured ones to them.
    local extra="SASL_SSL://127.0.0.1:$sasl_ssl,MTLS://127.0.0.1:$mtls,SASL_PLAINTEXT://127.0.0.1:$sasl_plain"
    sed -i \
        -e "s#^listeners=\(.*\)#listeners=\1,$extra#" \
        -e "s#^advertised.listeners=\(.*\)#advertised.listeners=\1,$extra#" \
        -e "s#^listener.security.protocol.map=\(.*\)#listener.security.protocol.map=\1,SASL_SSL:SASL_SSL,MTLS:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT#" \
        "$file"
}

# DIR/*.env for `workflows-bridge run` (`set -a; . DIR/sasl_ssl.env`), and DIR/secure.json.
write_env_files() {
    local dir=$1 tls=$1/tls plaintext=$2 sasl_ssl=$3 mtls=$4 sasl_plain=$5
    printf '%s\n' \
        "BRIDGE_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:$sasl_ssl" \
        "BRIDGE_KAFKA__SECURITY_PROTOCOL=SASL_SSL" \
        "BRIDGE_KAFKA__SASL_MECHANISM=SCRAM-SHA-512" \
        "BRIDGE_KAFKA__SASL_USERNAME=$SCRAM_USER" \
        "BRIDGE_KAFKA__SASL_PASSWORD_FILE=$tls/scram.password" \
        "BRIDGE_KAFKA__SSL_CAFILE=$tls/ca.pem" >"$dir/sasl_ssl.env"
    printf '%s\n' \
        "BRIDGE_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:$mtls" \
        "BRIDGE_KAFKA__SECURITY_PROTOCOL=SSL" \
        "BRIDGE_KAFKA__SSL_CAFILE=$tls/ca.pem" \
        "BRIDGE_KAFKA__SSL_CERTFILE=$tls/client.pem" \
        "BRIDGE_KAFKA__SSL_KEYFILE=$tls/client.key" \
        "BRIDGE_KAFKA__SSL_KEY_PASSWORD_FILE=$tls/client.key.password" >"$dir/mtls.env"
    printf '%s\n' \
        "BRIDGE_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:$sasl_plain" \
        "BRIDGE_KAFKA__SECURITY_PROTOCOL=SASL_PLAINTEXT" \
        "BRIDGE_KAFKA__SASL_MECHANISM=SCRAM-SHA-512" \
        "BRIDGE_KAFKA__SASL_USERNAME=$SCRAM_USER" \
        "BRIDGE_KAFKA__SASL_PASSWORD_FILE=$tls/scram.password" >"$dir/sasl_plaintext.env"
    printf '{"plaintext": "127.0.0.1:%s", "sasl_ssl": "127.0.0.1:%s", "mtls": "127.0.0.1:%s", "sasl_plaintext": "127.0.0.1:%s", "scram_user": "%s", "plain_user": "%s", "tls": "%s"}\n' \
        "$plaintext" "$sasl_ssl" "$mtls" "$sasl_plain" "$SCRAM_USER" "$PLAIN_USER" "$tls" \
        >"$dir/secure.json"
}

started_count() { grep -c "Kafka Server started" "$1/kafka.out" 2>/dev/null || true; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# One start attempt on fresh ports with a freshly formatted data dir.
# Returns 0 when ready, 2 when the broker died during start-up (e.g. a port was taken meanwhile).
start_once() {
    local state_dir=$1 secure=$2 port cport sasl_ssl mtls sasl_plain cid
    local -a scram_args=()
    read -r port cport sasl_ssl mtls sasl_plain < <(free_ports 5)
    [ -n "${sasl_plain:-}" ] || die "could not pick free ports"
    rm -rf "$state_dir/data"
    : >"$state_dir/kafka.out"
    mkdir -p "$state_dir/data" "$state_dir/logs"
    write_server_properties "$state_dir/server.properties" "$port" "$cport" "$state_dir/data"
    if [ "$secure" = 1 ]; then
        write_secure_properties "$state_dir/server.properties" "$state_dir" "$sasl_ssl" "$mtls" \
            "$sasl_plain"
        local scram
        scram=$(cat "$state_dir/tls/scram.password")
        scram_args=(--add-scram "SCRAM-SHA-512=[name=$SCRAM_USER,password=$scram]"
            --add-scram "SCRAM-SHA-256=[name=$SCRAM_USER,password=$scram]")
    fi
    cid=$(cluster_id)

    local -a JVM
    jvm_flags "$state_dir"

    local t0
    t0=$(now_ms)
    if ! java "${JVM[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format --standalone \
        -t "$cid" -c "$state_dir/server.properties" "${scram_args[@]}" \
        >"$state_dir/format.out" 2>&1; then
        cat "$state_dir/format.out" >&2
        die "formatting the KRaft storage failed"
    fi
    log "formatted $state_dir/data (cluster $cid) in $(( $(now_ms) - t0 )) ms"
    launch "$state_dir" "$port" || return $?
    if [ "$secure" = 1 ]; then
        write_env_files "$state_dir" "$port" "$sasl_ssl" "$mtls" "$sasl_plain"
        log "secured listeners: SASL_SSL 127.0.0.1:$sasl_ssl, SSL (mTLS) 127.0.0.1:$mtls," \
            "SASL_PLAINTEXT 127.0.0.1:$sasl_plain; settings in $state_dir/*.env"
    fi
    echo "127.0.0.1:$port"
}

jvm_flags() {
    local state_dir=$1
    # shellcheck disable=SC2206  # HEAP_OPTS is a list of flags
    JVM=($HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
        -XX:MaxInlineLevel=15 -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$HERE/log4j2.properties"
        "-Dkafka.logs.dir=$state_dir/logs")
}

# Start the broker on the formatted data dir; wait until it serves on $port.
launch() {
    local state_dir=$1 port=$2 pid deadline t0
    local -a JVM
    jvm_flags "$state_dir"
    local before
    before=$(started_count "$state_dir")
    t0=$(now_ms)
    # nohup execs java, so $! is the broker's own pid.
    nohup java "${JVM[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$state_dir/server.properties" \
        >>"$state_dir/kafka.out" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$state_dir/kafka.pid"

    deadline=$(( $(date +%s) + TIMEOUT ))
    until [ "$(started_count "$state_dir")" -gt "$before" ] && port_open "$port"; do
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
}

# Start again on the same data and ports (a broker restart keeps what it stored).
restart_broker() {
    local state_dir port
    state_dir=$(cd "$1" && pwd)
    [ -f "$state_dir/server.properties" ] || die "no broker was started from $state_dir"
    if [ -f "$state_dir/kafka.pid" ] && kill -0 "$(cat "$state_dir/kafka.pid")" 2>/dev/null; then
        kill -CONT "$(cat "$state_dir/kafka.pid")" 2>/dev/null || true
        stop_broker "$state_dir"
    fi
    port=$(sed -n 's/^listeners=PLAINTEXT:\/\/127.0.0.1:\([0-9]*\),.*/\1/p' "$state_dir/server.properties")
    [ -n "$port" ] || die "cannot read the port from $state_dir/server.properties"
    check_java
    launch "$state_dir" "$port" || die "kafka did not start again; see $state_dir/kafka.out"
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
    --restart)
        [ -n "${2:-}" ] || die "usage: $0 --restart STATE_DIR"
        restart_broker "$2"
        return 0
        ;;
    --pause | --resume)
        [ -n "${2:-}" ] && [ -f "$2/kafka.pid" ] || die "usage: $0 $1 STATE_DIR (of a running broker)"
        if [ "$1" = --pause ]; then kill -STOP "$(cat "$2/kafka.pid")"; else kill -CONT "$(cat "$2/kafka.pid")"; fi
        log "broker $(cat "$2/kafka.pid") ${1#--}d"
        return 0
        ;;
    -h | --help)
        sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'
        return 0
        ;;
    esac

    local secure=0
    if [ "${1:-}" = "--secure" ]; then
        [ -n "${2:-}" ] || die "usage: $0 --secure DIR"
        secure=1
        shift
    fi
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
    [ "$secure" = 0 ] || generate_tls "$state_dir"

    local attempt rc
    for attempt in 1 2 3; do
        rc=0
        start_once "$state_dir" "$secure" || rc=$?
        [ "$rc" -eq 0 ] && return 0
        log "start attempt $attempt failed; retrying on new ports"
    done
    die "kafka did not start; see $state_dir/kafka.out"
}

main "$@"
