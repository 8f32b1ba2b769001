#!/usr/bin/env bash
# A production-shaped Temporal tier on this machine, for the cluster tests and benchmarks:
# Temporal server v1.29.1 built with Go, on a throwaway PostgreSQL cluster from Debian, schemas
# set up by Temporal's own SQL tool, the namespaces and Drover's search attributes registered, and
# the dynamic config of docker/temporal-dynamicconfig.yaml (production defaults, plus task-queue
# priority and fairness).
#
#   scripts/cluster.sh build           build the server and its SQL tool into ~/.cache/drover
#                                      (first time: a few minutes); install PostgreSQL if missing
#   scripts/cluster.sh start [--split|--one]
#                                      start PostgreSQL and Temporal (one process, or --split: four,
#                                      frontend, history, matching and worker); reuses the state dir,
#                                      in the mode it last ran unless told; starts what is stopped
#   scripts/cluster.sh stop [temporal|postgres]
#                                      stop Temporal and PostgreSQL, or one of them (a fault, for the
#                                      cluster tier's fault tests); the state dir stays
#   scripts/cluster.sh destroy         stop, and delete the state dir
#   scripts/cluster.sh status          what runs; exits 0 only when all of it does
#   scripts/cluster.sh env             KEY=value lines for clients (eval-able)
#
# Environment: DROVER_CLUSTER_DIR (state, default /tmp/drover-cluster), DROVER_CLUSTER_PORT
# (frontend gRPC, default 17233; the other services use PORT+1..+4, membership PORT+100..+103,
# metrics PORT+200..+203), DROVER_CLUSTER_PG_PORT (default 55432), DROVER_CLUSTER_NAMESPACE
# (created beside `default`, default drover).
#
# The PostgreSQL cluster is for tests only: it listens on 127.0.0.1 with trust authentication.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

VERSION=v1.29.1
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/drover
SERVER_DIR=$CACHE_ROOT/temporal-server-$VERSION
SERVER_BIN=$SERVER_DIR/temporal-server
SQL_TOOL=$SERVER_DIR/temporal-sql-tool
SCHEMA_DIR=$SERVER_DIR/schema/postgresql/v12

STATE=${DROVER_CLUSTER_DIR:-/tmp/drover-cluster}
PORT=${DROVER_CLUSTER_PORT:-17233}
PG_PORT=${DROVER_CLUSTER_PG_PORT:-55432}
NAMESPACE=${DROVER_CLUSTER_NAMESPACE:-drover}
DYNAMIC_CONFIG=$REPO/docker/temporal-dynamicconfig.yaml
ADDRESS=127.0.0.1:$PORT

PG_HOME=$STATE/postgres # owned by the postgres user: data/, sock/, postgres.log
PG_DATA=$PG_HOME/data
PG_SOCK=$PG_HOME/sock
RUN=$STATE/run # <process>.pid of each Temporal process

die() {
  echo "cluster: $*" >&2
  exit 1
}
say() { echo "cluster: $*" >&2; }

pg_bin() {
  local dir
  dir=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  [ -x "$dir/initdb" ] && echo "$dir"
}

# Runs a PostgreSQL command as the postgres user when we are root (PostgreSQL refuses root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

go_bin() {
  command -v go 2>/dev/null || { [ -x /usr/local/go/bin/go ] && echo /usr/local/go/bin/go; } || true
}

temporal_cli() {
  local version
  version=$(sed -n "s/^export const PINNED_TEMPORAL_CLI_VERSION = '\(.*\)';/\1/p" "$REPO/src/temporal-cli.ts")
  if [ -n "${TEMPORAL_CLI_PATH:-}" ]; then
    echo "$TEMPORAL_CLI_PATH"
  elif [ -n "$version" ] && [ -x "$CACHE_ROOT/temporal-cli-$version/temporal" ]; then
    echo "$CACHE_ROOT/temporal-cli-$version/temporal"
  else
    # The repo's own lookup (PATH, or a build of the pinned CLI with Go), as scripts/setup.sh does.
    "$REPO/node_modules/.bin/tsx" "$REPO/src/cli.ts" temporal-cli
  fi
}

# ---------------------------------------------------------------------------------------- build

build() {
  if [ ! -x "$SERVER_BIN" ] || [ ! -x "$SQL_TOOL" ] || [ ! -d "$SCHEMA_DIR/temporal/versioned" ]; then
    local go
    go=$(go_bin)
    [ -n "$go" ] || die "Go is needed to build the Temporal server (https://go.dev/dl/)"
    mkdir -p "$SERVER_DIR"
    local tmp
    tmp=$(mktemp -d "$SERVER_DIR/.build.XXXXXX")
    say "building Temporal server $VERSION and its SQL tool into $SERVER_DIR (first time only, a few minutes)…"
    local started=$SECONDS
    if ! GOBIN=$tmp GOFLAGS=-mod=mod "$go" install "go.temporal.io/server/cmd/server@$VERSION" "go.temporal.io/server/cmd/tools/sql@$VERSION"; then
      rm -rf "$tmp"
      die "go install of the Temporal server failed"
    fi
    # The module's schema files, beside the binaries, so the module cache may be cleaned.
    local module
    module=$(GOFLAGS=-mod=mod "$go" mod download -json "go.temporal.io/server@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -d "$module/schema/postgresql/v12" ] || { rm -rf "$tmp"; die "no schema/postgresql/v12 in the server module ($module)"; }
    mkdir -p "$tmp/schema/postgresql"
    cp -R "$module/schema/postgresql/v12" "$tmp/schema/postgresql/"
    chmod -R u+w "$tmp/schema"
    rm -rf "$SERVER_DIR/schema"
    mv "$tmp/schema" "$SERVER_DIR/schema"
    mv "$tmp/server" "$SERVER_BIN"
    mv "$tmp/sql" "$SQL_TOOL"
    rm -rf "$tmp"
    say "built in $((SECONDS - started)) s"
  fi

  if [ -z "$(pg_bin)" ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      die "PostgreSQL not found in /usr/lib/postgresql; install it (Debian: apt-get install postgresql)"
    fi
    say "installing PostgreSQL from Debian…"
    apt-get update -qq
    # Debian 12 ships 15; later releases another major version: take the one the distribution offers.
    local pkg=postgresql-15
    apt-cache show "$pkg" >/dev/null 2>&1 || pkg=postgresql
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
    [ -n "$(pg_bin)" ] || die "PostgreSQL was installed but no initdb is in /usr/lib/postgresql/*/bin"
  fi
  id postgres >/dev/null 2>&1 || [ "$(id -u)" != 0 ] || die "no postgres user (PostgreSQL refuses to run as root)"
}

# ------------------------------------------------------------------------------------ postgres

pg_running() {
  local bin
  bin=$(pg_bin) || return 1
  [ -f "$PG_DATA/PG_VERSION" ] && as_pg "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

psql_pg() {
  as_pg "$(pg_bin)/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres "$@"
}

start_postgres() {
  local bin
  bin=$(pg_bin) || die "PostgreSQL is not installed: run scripts/cluster.sh build"
  mkdir -p "$STATE" "$PG_HOME" "$PG_SOCK"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$PG_HOME" "$PG_SOCK"
    runuser -u postgres -- test -w "$PG_HOME" || die "the postgres user cannot write $PG_HOME: choose a DROVER_CLUSTER_DIR it can reach"
  fi
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --no-locale >"$STATE/initdb.log" 2>&1 \
      || { cat "$STATE/initdb.log" >&2; die "initdb failed"; }
    cat >>"$PG_DATA/postgresql.conf" <<EOF

# scripts/cluster.sh: a throwaway cluster on loopback for Drover's cluster tier
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 300
shared_buffers = 256MB
EOF
  fi
  if ! pg_running; then
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_HOME/postgres.log" -w -t 60 start >/dev/null \
      || { tail -n 20 "$PG_HOME/postgres.log" >&2 || true; die "PostgreSQL did not start (log: $PG_HOME/postgres.log)"; }
  fi
  if [ "$(psql_pg -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'temporal'")" != 1 ]; then
    psql_pg -c "CREATE ROLE temporal LOGIN CREATEDB PASSWORD 'temporal'"
  fi
}

sql_tool() {
  "$SQL_TOOL" --plugin postgres12 --ep 127.0.0.1 -p "$PG_PORT" -u temporal --pw temporal "$@"
}

setup_schemas() {
  local db dir log=$STATE/schema.log
  : >"$log"
  for db in temporal temporal_visibility; do
    case $db in temporal) dir=temporal ;; *) dir=visibility ;; esac
    if [ "$(psql_pg -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
      sql_tool --db "$db" create-database >>"$log" 2>&1 || { cat "$log" >&2; die "creating database $db failed"; }
    fi
    if [ "$(psql_pg -d "$db" -tAc "SELECT 1 FROM pg_tables WHERE tablename = 'schema_version'")" != 1 ]; then
      sql_tool --db "$db" setup-schema -v 0.0 >>"$log" 2>&1 || { cat "$log" >&2; die "setting up the schema of $db failed"; }
    fi
    sql_tool --db "$db" update-schema -d "$SCHEMA_DIR/$dir/versioned" >>"$log" 2>&1 \
      || { cat "$log" >&2; die "updating the schema of $db failed"; }
  done
}

# ------------------------------------------------------------------------------------ temporal

# The server config of one process, in $STATE/config-<name>/cluster.yaml. Every process knows every
# service's ports (they find each other through the membership ring); each has its own metrics port.
write_server_config() {
  local name=$1 metrics_port=$2 dir=$STATE/config-$1
  mkdir -p "$dir"
  cat >"$dir/cluster.yaml" <<EOF
# Written by scripts/cluster.sh; rewritten on every start.
log:
  stdout: true
  level: warn

persistence:
  defaultStore: postgres-default
  visibilityStore: postgres-visibility
  numHistoryShards: 4
  datastores:
    postgres-default:
      sql:
        pluginName: postgres12
        databaseName: temporal
        connectAddr: 127.0.0.1:$PG_PORT
        connectProtocol: tcp
        user: temporal
        password: temporal
        maxConns: 20
        maxIdleConns: 20
        maxConnLifetime: 1h
    postgres-visibility:
      sql:
        pluginName: postgres12
        databaseName: temporal_visibility
        connectAddr: 127.0.0.1:$PG_PORT
        connectProtocol: tcp
        user: temporal
        password: temporal
        maxConns: 10
        maxIdleConns: 10
        maxConnLifetime: 1h

global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: 127.0.0.1
  metrics:
    prometheus:
      framework: tally
      timerType: histogram
      listenAddress: 127.0.0.1:$metrics_port

services:
  frontend:
    rpc:
      grpcPort: $PORT
      membershipPort: $((PORT + 100))
      bindOnLocalHost: true
      httpPort: $((PORT + 4))
  history:
    rpc:
      grpcPort: $((PORT + 1))
      membershipPort: $((PORT + 101))
      bindOnLocalHost: true
  matching:
    rpc:
      grpcPort: $((PORT + 2))
      membershipPort: $((PORT + 102))
      bindOnLocalHost: true
  worker:
    rpc:
      grpcPort: $((PORT + 3))
      membershipPort: $((PORT + 103))
      bindOnLocalHost: true

clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: active
  currentClusterName: active
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: frontend
      rpcAddress: $ADDRESS

dcRedirectionPolicy:
  policy: noop

dynamicConfigClient:
  filepath: $DYNAMIC_CONFIG
  pollInterval: 10s
EOF
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# The mode Temporal last ran in: one (a single process) or split.
recorded_mode() { cat "$STATE/mode" 2>/dev/null || echo one; }

# Names of the Temporal processes of the state dir's mode, one a line.
processes() {
  if [ "$(recorded_mode)" = split ]; then printf '%s\n' frontend history matching worker; else echo all; fi
}

temporal_running() {
  [ -d "$RUN" ] || return 1
  local p
  for p in $(processes); do pid_alive "$RUN/$p.pid" || return 1; done
}

temporal_any_running() {
  local f
  for f in "$RUN"/*.pid; do pid_alive "$f" && return 0; done
  return 1
}

start_server_process() {
  local name=$1 index=$2
  shift 2
  write_server_config "$name" $((PORT + 200 + index))
  setsid nohup "$SERVER_BIN" --root "$STATE" --config "config-$name" --env cluster --allow-no-auth start "$@" \
    >>"$STATE/server-$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

start_temporal() {
  local mode=$1
  mkdir -p "$RUN"
  echo "$mode" >"$STATE/mode"
  if [ "$mode" = split ]; then
    # History first, alone, until it has written the cluster's metadata: on an empty database the
    # processes would all try to, and the losers exit. Frontend last.
    start_server_process history 1 --service history
    local deadline=$((SECONDS + 60))
    until [ "$(psql_pg -d temporal -tAc "SELECT 1 FROM cluster_metadata_info LIMIT 1")" = 1 ]; do
      pid_alive "$RUN/history.pid" || { tail -n 30 "$STATE/server-history.log" >&2 || true; die "Temporal (history) exited (log: $STATE/server-history.log)"; }
      [ $SECONDS -lt $deadline ] || die "Temporal (history) wrote no cluster metadata within 60 s (log: $STATE/server-history.log)"
      sleep 0.5
    done
    start_server_process matching 2 --service matching
    start_server_process worker 3 --service worker
    start_server_process frontend 0 --service frontend
  else
    start_server_process all 0 --service frontend --service history --service matching --service worker
  fi
}

wait_for_frontend() {
  local cli=$1 deadline=$((SECONDS + 120)) p
  until "$cli" operator cluster health --address "$ADDRESS" >/dev/null 2>&1; do
    for p in $(processes); do
      pid_alive "$RUN/$p.pid" || { tail -n 30 "$STATE/server-$p.log" >&2 || true; die "Temporal ($p) exited (log: $STATE/server-$p.log)"; }
    done
    [ $SECONDS -lt $deadline ] || die "Temporal's frontend did not answer on $ADDRESS within 120 s (logs: $STATE/server-*.log)"
    sleep 0.5
  done
}

# Retries a command for up to $1 seconds (namespace and search-attribute caches refresh every ~10 s).
retry() {
  local seconds=$1 what=$2 deadline out
  shift 2
  deadline=$((SECONDS + seconds))
  until out=$("$@" 2>&1); do
    [ $SECONDS -lt $deadline ] || { echo "$out" >&2; die "$what failed for $seconds s"; }
    sleep 1
  done
}

setup_namespaces() {
  local cli=$1 ns
  for ns in $(printf '%s\n' default "$NAMESPACE" | awk '!seen[$0]++'); do
    if ! "$cli" operator namespace describe -n "$ns" --address "$ADDRESS" >/dev/null 2>&1; then
      "$cli" operator namespace create -n "$ns" --retention 24h --address "$ADDRESS" >/dev/null
    fi
    cat >"$STATE/drover-$ns.yaml" <<EOF
# For \`drover setup-search-attributes\` (scripts/cluster.sh)
temporal:
  address: $ADDRESS
  namespace: $ns
EOF
    retry 60 "registering Drover's search attributes on $ns" \
      "$REPO/node_modules/.bin/tsx" "$REPO/src/cli.ts" setup-search-attributes --config "$STATE/drover-$ns.yaml"
    # Usable once the frontend's namespace registry has caught up: a query naming one answers.
    retry 60 "querying Drover's search attributes on $ns" \
      "$cli" workflow count -n "$ns" --address "$ADDRESS" --query "DroverState = 'pending'"
  done
}

start() {
  local mode
  case ${1:-} in
    --split) mode=split ;;
    --one) mode=one ;;
    "") mode=$(recorded_mode) ;;
    *) die "unknown option to start: $1 (usage: start [--split|--one])" ;;
  esac
  if [ ! -x "$SERVER_BIN" ] || [ ! -x "$SQL_TOOL" ]; then die "the Temporal server is not built: run scripts/cluster.sh build"; fi
  [ -x "$REPO/node_modules/.bin/tsx" ] || die "npm packages missing: run npm run setup"
  if pg_running && temporal_running; then
    local running
    running=$(recorded_mode)
    [ "$running" = "$mode" ] || die "already running as $running; run scripts/cluster.sh stop first"
    return 0
  fi
  if temporal_running && [ "$(recorded_mode)" = "$mode" ]; then
    # Only PostgreSQL was stopped (scripts/cluster.sh stop postgres): Temporal reconnects by itself.
    start_postgres
    say "PostgreSQL back on 127.0.0.1:$PG_PORT"
    return 0
  fi
  temporal_any_running && die "some Temporal processes of $STATE run, others do not (or in another mode): run scripts/cluster.sh stop first"
  local started=$SECONDS cli
  cli=$(temporal_cli)
  [ -x "$cli" ] || die "no Temporal CLI ($cli)"
  start_postgres
  setup_schemas
  start_temporal "$mode"
  wait_for_frontend "$cli"
  setup_namespaces "$cli"
  local p
  for p in $(processes); do
    pid_alive "$RUN/$p.pid" || { tail -n 30 "$STATE/server-$p.log" >&2 || true; die "Temporal ($p) exited (log: $STATE/server-$p.log)"; }
  done
  say "Temporal $VERSION on PostgreSQL up in $((SECONDS - started)) s: $ADDRESS ($mode process$([ "$mode" = split ] && echo "es"); namespaces default, $NAMESPACE; state in $STATE)"
}

# ------------------------------------------------------------------------------ stop, status

stop_temporal() {
  local f pid deadline
  [ -d "$RUN" ] || return 0
  for f in "$RUN"/*.pid; do
    if pid_alive "$f"; then kill -TERM "$(cat "$f")" 2>/dev/null || true; fi
  done
  for f in "$RUN"/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$f"
  done
}

stop_postgres() {
  if pg_running; then
    as_pg "$(pg_bin)/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null || die "PostgreSQL did not stop"
  fi
}

stop() {
  case ${1:-} in
    temporal) stop_temporal ;;
    postgres) stop_postgres ;;
    "") stop_temporal && stop_postgres ;;
    *) die "unknown part to stop: $1 (usage: stop [temporal|postgres])" ;;
  esac
}

destroy() {
  stop
  rm -rf "$STATE"
}

status() {
  local ok=0 p pids=""
  if pg_running; then
    echo "postgres: running on 127.0.0.1:$PG_PORT (data $PG_DATA)"
  else
    echo "postgres: stopped"
    ok=1
  fi
  if temporal_running; then
    for p in $(processes); do pids="$pids $p=$(cat "$RUN/$p.pid")"; done
    echo "temporal: running on $ADDRESS,$pids (logs $STATE/server-*.log)"
  elif temporal_any_running; then
    echo "temporal: partly running (some processes exited; see $STATE/server-*.log)"
    ok=1
  else
    echo "temporal: stopped"
    ok=1
  fi
  return $ok
}

env_lines() {
  cat <<EOF
DROVER_TEST_TEMPORAL_ADDRESS=$ADDRESS
DROVER_CLUSTER_ADDRESS=$ADDRESS
DROVER_CLUSTER_NAMESPACE=$NAMESPACE
DROVER_CLUSTER_DIR=$STATE
DROVER_CLUSTER_METRICS_URL=http://127.0.0.1:$((PORT + 200))/metrics
DROVER_CLUSTER_POSTGRES_URL=postgres://temporal:temporal@127.0.0.1:$PG_PORT/temporal
TEMPORAL_ADDRESS=$ADDRESS
EOF
}

case ${1:-} in
  build) build ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  destroy) destroy ;;
  status) status ;;
  env) env_lines ;;
  *)
    echo "usage: scripts/cluster.sh build | start [--split|--one] | stop [temporal|postgres] | destroy | status | env" >&2
    exit 2
    ;;
esac
