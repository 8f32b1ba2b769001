#!/bin/sh
# Creates (or upgrades) Temporal's PostgreSQL schemas. Runs in temporalio/admin-tools; safe to re-run.
set -eu
until nc -z postgresql 5432; do echo "waiting for postgresql…"; sleep 2; done
for db in temporal temporal_visibility; do
  case $db in temporal) dir=temporal ;; *) dir=visibility ;; esac
  tool="temporal-sql-tool --plugin postgres12 --ep postgresql -p 5432 -u temporal --pw temporal --db $db"
  $tool create 2>/dev/null || echo "database $db exists"
  $tool setup-schema -v 0.0 2>/dev/null || echo "schema of $db already set up"
  $tool update-schema -d "/etc/temporal/schema/postgresql/v12/$dir/versioned"
done
