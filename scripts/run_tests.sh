#!/usr/bin/env bash
# The test suite, in an isolated ECAT_HOME/AIRFLOW_HOME so it never touches the demo's data.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TMP="$(mktemp -d -t ecat-tests-XXXXXX)"
trap 'rm -rf "$TMP"' EXIT
export ECAT_HOME="$TMP/ecat_home" AIRFLOW_HOME="$TMP/airflow"
source "$ROOT/scripts/env.sh"
"$ROOT/.venv/bin/airflow" db migrate > "$TMP/db_migrate.log" 2>&1 || { cat "$TMP/db_migrate.log"; exit 1; }
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest -q "$@"
