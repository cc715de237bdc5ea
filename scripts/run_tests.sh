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
# The whole suite runs on two pytest-xdist workers, one test file per worker at a time (a file's
# module fixtures, such as an Airflow stack, stay on one worker): the scheduler-driven tests wait
# on subprocesses much of the time, and the other worker uses that time. ECAT_TEST_WORKERS=0
# runs it in one process. Named files or tests run in one process. Files start in collection
# order (--no-loadscope-reorder): xdist's default starts the files with the most tests first,
# which left the longest one, the single-test backfill through the scheduler (about 4 min),
# to start last, alone on one worker at the end of the run.
if [ "$#" -eq 0 ]; then
    set -- -n "${ECAT_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder --durations=15
fi
exec "$ROOT/.venv/bin/python" -m pytest -q "$@"
