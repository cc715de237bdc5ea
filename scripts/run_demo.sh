#!/usr/bin/env bash
# The main job: seed the embedded warehouse when absent, then run ecat_daily through
# Airflow (`airflow dags test`) for consecutive days in date order.
set -euo pipefail
source "$(dirname "$0")/env.sh"
START_DS="${ECAT_DEMO_START:-2026-11-01}"
DAYS="${ECAT_DEMO_DAYS:-3}"
ROWS="${ECAT_DEMO_ROWS:-300000}"
PY="$ROOT/.venv/bin/python"
AIRFLOW="$ROOT/.venv/bin/airflow"

"$AIRFLOW" db migrate > "$AIRFLOW_HOME/db_migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/db_migrate.log"; exit 1; }
"$PY" -m ecat_tasks.synthetic --warehouse "$ECAT_WAREHOUSE" --start-ds "$START_DS" --days "$DAYS" --rows "$ROWS" --if-absent
for i in $(seq 0 $((DAYS - 1))); do
  DS="$("$PY" -c "import datetime as d,sys; print(d.date.fromisoformat(sys.argv[1]) + d.timedelta(days=int(sys.argv[2])))" "$START_DS" "$i")"
  echo "=== ecat_daily ds=$DS ($((i + 1))/$DAYS); log: $AIRFLOW_HOME/dags_test_$DS.log"
  # `airflow dags test` never ends when a depends_on_past task waits on a failed previous day
  # ("No tasks to run" forever): bound each day (README, "Backfills and reruns").
  rc=0
  timeout "${ECAT_DEMO_DAY_TIMEOUT_S:-1800}" "$AIRFLOW" dags test ecat_daily "$DS" > "$AIRFLOW_HOME/dags_test_$DS.log" 2>&1 || rc=$?
  if [ "$rc" -eq 124 ]; then
    tail -20 "$AIRFLOW_HOME/dags_test_$DS.log"
    echo "ecat_daily ds=$DS ran past ${ECAT_DEMO_DAY_TIMEOUT_S:-1800}s: a training task may be waiting on a failed previous day (depends_on_past); fix that day first"; exit 1
  elif [ "$rc" -ne 0 ]; then
    tail -50 "$AIRFLOW_HOME/dags_test_$DS.log"; echo "ecat_daily failed for ds=$DS"; exit 1
  fi
  # each task's summary line: "<ts> [info ] <message> [ecat_tasks.<module>] loc=..." -> "  <message>"
  grep -E "\[ecat_tasks\.[a-z_.]+\]" "$AIRFLOW_HOME/dags_test_$DS.log" | grep "ds=$DS" | grep -v "step [a-z_]* ds=.* finished in" \
    | sed -E 's/^[^ ]+ \[[a-z ]+\] (.*) \[ecat_tasks\.[a-z_.]+\] loc=.*$/  \1/' | cut -c1-400 || true
  if grep -qE "state=failed|Task failed|Marking run .* failed" "$AIRFLOW_HOME/dags_test_$DS.log"; then
    echo "ecat_daily failed for ds=$DS (see the log)"; exit 1
  fi
done
"$PY" -m ecat_tasks.summary --home "$ECAT_HOME"
