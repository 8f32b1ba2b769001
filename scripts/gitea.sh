#!/usr/bin/env bash
# A real, throwaway Gitea on loopback: for capturing webhook fixtures (test/fixtures/gitea/) and
# for a future test tier that talks to a real forge.
#
#   scripts/gitea.sh build          builds Gitea once (cached), prints the binary's path
#   scripts/gitea.sh start [DIR]    builds if needed, starts Gitea with its data in DIR (default: a
#                                   new temporary directory), prints its URL on stdout; DIR/gitea.env
#                                   holds GITEA_URL, GITEA_ADMIN_USER, GITEA_ADMIN_PASSWORD, GITEA_PID…
#   scripts/gitea.sh stop DIR       stops that Gitea and removes DIR
#
# The build: Gitea's module through the Go module proxy, built with SQLite and without bindata
# (templates and options are read from the cached source), cached in
# ${XDG_CACHE_HOME:-~/.cache}/drover/gitea-v$VERSION/. The first build takes 10–30 minutes.
# Gitea's go.mod names its module gitea.dev and needs gitea.dev/sdk and gitea.dev/actions-proto-go,
# which the proxy refuses; the same code is published as code.gitea.io/sdk and
# code.gitea.io/actions-proto-go, so the cached copy gets `replace` directives (and
# gitlab.com/gitlab-org/api/client-go/v2 moves to a version the proxy has).
#
# Environment: GITEA_PORT (default: a free port), GITEA_ADMIN_USER / GITEA_ADMIN_PASSWORD
# (default gitea-admin / gitea-admin-password), GITEA_BIN (use this binary, build nothing).
# The configuration allows webhook deliveries to loopback ([webhook] ALLOWED_HOST_LIST = loopback).
set -euo pipefail

VERSION=1.27.3
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/drover/gitea-v$VERSION"
BIN="${GITEA_BIN:-$CACHE/gitea}"
SRC="$CACHE/src"
ADMIN_USER="${GITEA_ADMIN_USER:-gitea-admin}"
ADMIN_PASSWORD="${GITEA_ADMIN_PASSWORD:-gitea-admin-password}"
# Gitea refuses to run as root without this (here and as I_AM_BEING_UNSAFE_RUNNING_AS_ROOT in
# app.ini, which its git hooks read too); the machines this project runs on are root.
export GITEA_I_AM_BEING_UNSAFE_RUNNING_AS_ROOT=true

log() { echo "gitea.sh: $*" >&2; }
die() { log "$*"; exit 1; }

build() {
  [ -x "$BIN" ] && return 0
  [ -n "${GITEA_BIN:-}" ] && die "GITEA_BIN=$GITEA_BIN is not an executable"
  command -v go >/dev/null 2>&1 || die "Go is needed to build Gitea"
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9
  [ -x "$BIN" ] && return 0
  export GOTOOLCHAIN=local GOFLAGS='-mod=mod -buildvcs=false'
  # code.gitea.io/sdk v1.1.0 is missing from the checksum database.
  export GONOSUMDB=code.gitea.io/sdk,code.gitea.io/actions-proto-go
  log "building Gitea v$VERSION into $CACHE (10–30 minutes the first time; log: $CACHE/build.log)…"
  local started dir
  started=$(date +%s)
  dir=$(go mod download -json "code.gitea.io/gitea@v$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
  [ -d "$dir" ] || die "could not download code.gitea.io/gitea@v$VERSION"
  rm -rf "$SRC"
  cp -r "$dir" "$SRC"
  chmod -R u+w "$SRC"
  (
    cd "$SRC"
    go mod edit \
      -replace gitea.dev/sdk=code.gitea.io/sdk@v1.1.0 \
      -replace gitea.dev/actions-proto-go=code.gitea.io/actions-proto-go@v0.6.0 \
      -replace gitlab.com/gitlab-org/api/client-go/v2=gitlab.com/gitlab-org/api/client-go/v2@v2.43.0
    CGO_ENABLED=1 go build -tags 'sqlite sqlite_unlock_notify' \
      -ldflags "-s -w -X \"main.Version=$VERSION\" -X \"main.Tags=sqlite sqlite_unlock_notify\"" \
      -o "$CACHE/gitea.tmp" .
  ) >"$CACHE/build.log" 2>&1 || { tail -20 "$CACHE/build.log" >&2; die "the build failed (log: $CACHE/build.log)"; }
  mv "$CACHE/gitea.tmp" "$BIN"
  log "built in $(($(date +%s) - started)) s: $BIN"
}

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

start() {
  build
  local dir="${1:-}"
  if [ -z "$dir" ]; then dir=$(mktemp -d "${TMPDIR:-/tmp}/drover-gitea.XXXXXX"); fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -e "$dir/app.ini" ] && die "$dir already holds a Gitea (app.ini); stop it or pick another directory"
  touch "$dir/.drover-gitea"
  local port="${GITEA_PORT:-$(free_port)}"
  local url="http://127.0.0.1:$port/"
  local static="$SRC"
  [ -d "$static/templates" ] || static="$(dirname "$BIN")"
  cat >"$dir/app.ini" <<EOF
APP_NAME = Drover test Gitea
RUN_USER = $(id -un)
RUN_MODE = prod
WORK_PATH = $dir
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = $([ "$(id -u)" = 0 ] && echo true || echo false)

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = $port
DOMAIN = 127.0.0.1
ROOT_URL = $url
LOCAL_ROOT_URL = $url
STATIC_ROOT_PATH = $static
APP_DATA_PATH = $dir/data
DISABLE_SSH = true
START_SSH_SERVER = false
LFS_START_SERVER = false
OFFLINE_MODE = true

[database]
DB_TYPE = sqlite3
PATH = $dir/data/gitea.db
SQLITE_JOURNAL_MODE = WAL

[repository]
ROOT = $dir/repos
DEFAULT_BRANCH = main

[security]
INSTALL_LOCK = true
SECRET_KEY = $("$BIN" generate secret SECRET_KEY)
INTERNAL_TOKEN = $("$BIN" generate secret INTERNAL_TOKEN)
PASSWORD_HASH_ALGO = pbkdf2_hi

[oauth2]
ENABLED = false

[service]
DISABLE_REGISTRATION = true
REQUIRE_SIGNIN_VIEW = false
ENABLE_NOTIFY_MAIL = false
DEFAULT_KEEP_EMAIL_PRIVATE = false

[mailer]
ENABLED = false

[webhook]
ALLOWED_HOST_LIST = loopback
DELIVER_TIMEOUT = 10
SKIP_TLS_VERIFY = false

[session]
PROVIDER = memory

[cache]
ADAPTER = memory

[queue]
TYPE = level
DATADIR = $dir/data/queues

[indexer]
ISSUE_INDEXER_TYPE = db
REPO_INDEXER_ENABLED = false

[actions]
ENABLED = false

[packages]
ENABLED = false

[cron.update_checker]
ENABLED = false

[log]
MODE = file
LEVEL = Info
ROOT_PATH = $dir/log
EOF
  "$BIN" migrate --config "$dir/app.ini" >"$dir/setup.log" 2>&1 || { cat "$dir/setup.log" >&2; die "gitea migrate failed"; }
  "$BIN" admin user create --admin --username "$ADMIN_USER" --password "$ADMIN_PASSWORD" \
    --email "$ADMIN_USER@example.com" --must-change-password=false --config "$dir/app.ini" >>"$dir/setup.log" 2>&1 \
    || { cat "$dir/setup.log" >&2; die "creating the admin user failed"; }
  # Its own session, so that it outlives this script; Gitea writes its pid to gitea.pid.
  (cd "$dir" && exec setsid "$BIN" web --config "$dir/app.ini" --pid "$dir/gitea.pid" </dev/null >"$dir/gitea.log" 2>&1) &
  local launcher=$! i
  for i in $(seq 1 120); do
    if curl -fsS "${url}api/v1/version" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$launcher" 2>/dev/null && [ ! -s "$dir/gitea.pid" ]; then
      tail -30 "$dir/gitea.log" >&2; die "Gitea exited while starting"
    fi
    sleep 0.5
  done
  curl -fsS "${url}api/v1/version" >/dev/null 2>&1 || { tail -30 "$dir/gitea.log" >&2; die "Gitea did not answer within 60 s"; }
  local pid
  pid=$(cat "$dir/gitea.pid")
  cat >"$dir/gitea.env" <<EOF
GITEA_URL=$url
GITEA_ADMIN_USER=$ADMIN_USER
GITEA_ADMIN_PASSWORD=$ADMIN_PASSWORD
GITEA_PID=$pid
GITEA_DIR=$dir
GITEA_CONFIG=$dir/app.ini
GITEA_BIN=$BIN
EOF
  log "Gitea v$VERSION is up (pid $pid, data in $dir; stop: scripts/gitea.sh stop $dir)"
  echo "$url"
}

stop() {
  local dir="${1:?usage: scripts/gitea.sh stop DIR}"
  [ -e "$dir/.drover-gitea" ] || die "$dir is not a directory this script started a Gitea in"
  if [ -f "$dir/gitea.pid" ]; then
    local pid
    pid=$(cat "$dir/gitea.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
  fi
  rm -rf "$dir"
}

case "${1:-start}" in
  build) build; echo "$BIN" ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) die "usage: scripts/gitea.sh [build | start [DIR] | stop DIR]" ;;
esac
