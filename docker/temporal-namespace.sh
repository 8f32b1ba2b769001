#!/bin/sh
# Creates the namespace Drover uses, if missing. Runs in temporalio/admin-tools.
set -eu
ns=${DROVER_NAMESPACE:-default}
until temporal operator cluster health --address temporal:7233 >/dev/null 2>&1; do echo "waiting for temporal…"; sleep 2; done
temporal operator namespace describe -n "$ns" --address temporal:7233 >/dev/null 2>&1 \
  || temporal operator namespace create -n "$ns" --address temporal:7233
