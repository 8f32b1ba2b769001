#!/usr/bin/env bash
# Makes this checkout ready to run and test Drover; idempotent and quick when done before.
# - npm packages from the lockfile (install scripts are governed by package.json's allowScripts)
# - the Temporal CLI (embedded dev server): TEMPORAL_CLI_PATH, `temporal` on PATH, the per-user
#   cache, or a build of the pinned version through the Go module proxy (first time: ~3 minutes)
# - OpenSSH's sshd for the SSH tests, from Debian's packages when missing and we are root
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # `npm install --no-save` rather than `npm ci`: the lockfile pins every version, but this
  # machine's registry lacks other platforms' optional packages (e.g. @swc/core-darwin-*),
  # which `npm ci` insists on while `npm install` skips them.
  echo "setup: installing npm packages from the lockfile…"
  npm install --no-save --no-audit --no-fund --loglevel=error
fi

if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing openssh-server…"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null) \
      || echo "setup: could not install openssh-server; SSH tests will fail" >&2
  else
    echo "setup: sshd not found; install openssh-server for the SSH tests" >&2
  fi
fi

# Builds the pinned Temporal CLI into ~/.cache/drover when no other is found; prints its path.
npx --no-install tsx src/cli.ts temporal-cli >/dev/null
