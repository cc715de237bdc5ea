#!/usr/bin/env bash
# The CeleryExecutor topology of docker/docker-compose.yaml, natively and on loopback only:
#   PostgreSQL (Airflow metadata DB, Celery result backend, MLflow store, test warehouse)
#   Redis (Celery broker), MLflow tracking server, Airflow api-server, scheduler,
#   dag-processor, a Celery worker for the `default` queue and three for the `train` queue.
# Then: pytest tests/integration/test_postgres_warehouse.py (extract SQL on PostgreSQL, with
# ECAT_TEST_PG_DSN set) and test_celery_topology.py, one ecat_daily run (training tasks on the
# `train` workers, three comparison models as mapped tasks), checks of the run state, of which
# worker ran each task, that two comparison models ran at the same time on two train
# workers, and of the MLflow server's store, and teardown.
#
# Everything lives under one temp dir (ECAT_HOME, AIRFLOW_HOME, PostgreSQL data, Redis dir,
# logs) and is removed on exit, whatever happened. Credentials are random per run.
# PostgreSQL and Redis come from Debian's packages, installed when missing.
#
# Knobs (environment): ECAT_CELERY_PG_PORT (25432), ECAT_CELERY_REDIS_PORT (26379),
# ECAT_CELERY_API_PORT (28080), ECAT_CELERY_MLFLOW_PORT (25000), ECAT_CELERY_DS
# (2026-11-01), ECAT_CELERY_ROWS (40000), ECAT_CELERY_RUN_TIMEOUT (900 s),
# ECAT_CELERY_KEEP_TMP=1 keeps the temp dir (logs) after the run.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
T0=$(date +%s)
# Below the kernel's ephemeral range (32768-60999 here): a listening port in that range can be
# taken, between the free-port check and the bind, by one of the stack's own outgoing connections.
PG_PORT="${ECAT_CELERY_PG_PORT:-25432}"
REDIS_PORT="${ECAT_CELERY_REDIS_PORT:-26379}"
API_PORT="${ECAT_CELERY_API_PORT:-28080}"
MLFLOW_PORT="${ECAT_CELERY_MLFLOW_PORT:-25000}"
DS="${ECAT_CELERY_DS:-2026-11-01}"
ROWS="${ECAT_CELERY_ROWS:-40000}"
RUN_TIMEOUT="${ECAT_CELERY_RUN_TIMEOUT:-900}"
KEEP_TMP="${ECAT_CELERY_KEEP_TMP:-0}"
DAG_ID=ecat_daily
RUN_ID="celery_integration__${DS}"
TRAIN_TASKS="domain_reweight teacher_refresh student_distill train_comparison"
WORKER_DEFAULT_HOST="ecat-worker-default"
WORKER_TRAIN_HOST="ecat-worker-train"
WORKER_TRAIN2_HOST="ecat-worker-train-2"
WORKER_TRAIN3_HOST="ecat-worker-train-3"
PY="$ROOT/.venv/bin/python"
AIRFLOW="$ROOT/.venv/bin/airflow"
STATE_FILE="${TMPDIR:-/tmp}/ecat-celery-integration.last"

say() { printf '[celery-it %(%H:%M:%S)T] %s\n' -1 "$*"; }
FAILURE=""  # why the run failed, repeated as the last line after the diagnostics (CI shows only a tail)
die() { FAILURE="$*"; say "FAILED: $*" >&2; exit 1; }
check_failed() { CHECK_FAILURES+=("$*"); say "  $*"; }

# Nothing inherited may point this throwaway stack at another deployment's DB or data.
for v in $(compgen -e); do case "$v" in AIRFLOW*|ECAT_*) unset "$v" ;; esac; done

[ -x "$PY" ] && [ -x "$AIRFLOW" ] || die "no project venv at $ROOT/.venv: run 'make venv' first"
"$PY" -c "import airflow.providers.celery, airflow.providers.postgres, redis, psycopg2" 2>/dev/null \
  || die "the venv lacks the Celery/PostgreSQL providers: run 'make venv' (requirements.txt pins them)"

# --- system packages -------------------------------------------------------------------
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null && SUDO=(sudo) || SUDO=(false)
fi
pg_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null && dirname "$(readlink -f "$(command -v initdb)")"
}
missing=()
[ -n "$(pg_bindir || true)" ] && command -v psql >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} from Debian's packages"
  "${SUDO[@]}" apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi
PG_BIN="$(pg_bindir)"
[ -n "$PG_BIN" ] || die "PostgreSQL server binaries (initdb, pg_ctl) not found"
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' user (PostgreSQL refuses to run as root)"
  AS_PG=(runuser -u postgres --)
else
  AS_PG=()
fi

# --- a previous run killed before its clean-up (SIGKILL): stop what it left -------------
stop_tree() {  # stop_tree PID: the process, then its process group and every descendant
  local pid=$1 all p
  kill -0 "$pid" 2>/dev/null || return 0
  all="$pid $(descendants "$pid")"
  kill -TERM "$pid" 2>/dev/null || true  # the leader first: Celery's warm shutdown stops its pool
  wait_gone 40 $all && return 0
  kill -TERM -- "-$pid" 2>/dev/null || true
  for p in $all; do kill -TERM "$p" 2>/dev/null || true; done
  wait_gone 10 $all && return 0
  kill -KILL -- "-$pid" 2>/dev/null || true
  for p in $all; do kill -KILL "$p" 2>/dev/null || true; done
}
wait_gone() {  # wait_gone HALF_SECONDS PID...: true once none of the pids is alive
  local n=$1 p i alive
  shift
  for ((i = 0; i < n; i++)); do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && { alive=1; break; }; done
    [ $alive -eq 0 ] && return 0
    sleep 0.5
  done
  return 1
}
descendants() {  # every descendant pid of $1 (task processes run in process groups of their own)
  ps -e -o pid=,ppid= | awk -v root="$1" '
    { parent[$1] = $2 }
    END { for (p in parent) { q = p; while (q in parent && q != root && q > 1) q = parent[q]; if (q == root && p != root) print p } }'
}
stop_stack() {  # stop_stack DIR: everything a run rooted at DIR started
  local dir=$1 f
  for f in "$dir"/pids/*.pid; do
    [ -f "$f" ] && stop_tree "$(cat "$f")"
  done
  if [ -f "$dir/redis/redis.pid" ]; then stop_tree "$(cat "$dir/redis/redis.pid")"; fi
  if [ -f "$dir/pg/data/postmaster.pid" ]; then
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$dir/pg/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
}
# One run at a time: a second concurrent run would clash on the ports and the state file.
# Services never inherit the lock's descriptor (9>&- below), so a run killed with SIGKILL
# frees it and the next run stops what that one left.
exec 9> "$STATE_FILE.lock"
flock -n 9 || die "another scripts/celery_integration.sh is running (lock $STATE_FILE.lock)"
if [ -f "$STATE_FILE" ]; then
  OLD="$(cat "$STATE_FILE")"
  if [ -n "$OLD" ] && [ -d "$OLD" ] && [ "$OLD" != "/" ]; then
    say "stopping what an interrupted earlier run left in $OLD"
    stop_stack "$OLD"
    rm -rf "$OLD"
  fi
  rm -f "$STATE_FILE"
fi

port_free() { "$PY" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no clash
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}
for spec in "PG:$PG_PORT" "REDIS:$REDIS_PORT" "API:$API_PORT" "MLFLOW:$MLFLOW_PORT"; do
  port_free "${spec#*:}" || die "port ${spec#*:} on 127.0.0.1 is in use: set ECAT_CELERY_${spec%%:*}_PORT to a free port"
done

# --- temp dir, clean-up, diagnostics ----------------------------------------------------
TMP="$(mktemp -d -t ecat-celery-XXXXXX)"
chmod 711 "$TMP"  # the postgres user must reach its data dir below
echo "$TMP" > "$STATE_FILE"
LOGS="$TMP/logs" PIDS="$TMP/pids"
mkdir -p "$LOGS" "$PIDS" "$TMP/redis" "$TMP/pylib"
SERVICES=()

psql_q() {  # psql_q DB SQL: tab-separated rows
  PGPASSWORD="$PG_PASS" PGCONNECT_TIMEOUT=5 psql -h 127.0.0.1 -p "$PG_PORT" -U ecat -d "$1" -X -q -t -A \
    -F $'\t' -v ON_ERROR_STOP=1 -c "$2"
}

diagnostics() {
  local f name
  say "===== diagnostics (temp dir $TMP)"
  for f in "$LOGS"/*.log "$TMP/pg/postgres.log" "$TMP/redis/redis.log"; do
    [ -f "$f" ] || continue
    echo "----- last 40 lines of $f"
    tail -n 40 "$f"
  done
  if [ -n "${PG_PASS:-}" ]; then
    echo "----- dag runs"
    psql_q airflow "SELECT run_id, state, start_date, end_date FROM dag_run WHERE dag_id = '$DAG_ID'" 2>&1 || true
    echo "----- task instances (task, state, try, queue, hostname)"
    psql_q airflow "SELECT task_id, state, try_number, queue, hostname FROM task_instance
                    WHERE dag_id = '$DAG_ID' ORDER BY start_date NULLS LAST" 2>&1 || true
  fi
  if [ -d "${AIRFLOW_HOME:-/nonexistent}/logs" ]; then
    for f in $(find "$AIRFLOW_HOME/logs" -name '*.log' -path "*$DAG_ID*" -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -3 | cut -d' ' -f2-); do
      echo "----- last 30 lines of task log $f"
      tail -n 30 "$f"
    done
  fi
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  [ $rc -ne 0 ] && diagnostics >&2
  say "stopping services"
  for ((i=${#SERVICES[@]}-1; i>=0; i--)); do
    stop_tree "$(cat "$PIDS/${SERVICES[$i]}.pid")"
  done
  stop_stack "$TMP"
  if [ "$KEEP_TMP" = "1" ]; then
    say "kept $TMP (ECAT_CELERY_KEEP_TMP=1)"
  else
    rm -rf "$TMP"
  fi
  rm -f "$STATE_FILE"
  say "wall time $(( $(date +%s) - T0 ))s; exit $rc"
  [ $rc -ne 0 ] && say "FAILED: ${FAILURE:-exit status $rc (no check named a reason)}" >&2
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_until() {  # wait_until SECONDS WHAT COMMAND...: poll every 2 s, fail with WHAT on timeout
  local timeout=$1 what=$2 deadline
  shift 2
  deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    check_alive
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out after ${timeout}s waiting for $what"
    sleep 2
  done
}
check_alive() {
  local name
  for name in "${SERVICES[@]}"; do
    kill -0 "$(cat "$PIDS/$name.pid")" 2>/dev/null || die "service '$name' exited (log: $LOGS/$name.log)"
  done
}
start_service() {  # start_service NAME COMMAND...: own session and process group, log in $LOGS
  local name=$1
  shift
  setsid "$@" > "$LOGS/$name.log" 2>&1 < /dev/null 9>&- &
  echo $! > "$PIDS/$name.pid"
  SERVICES+=("$name")
}
secret() { "$PY" -c "import secrets; print(secrets.token_hex(${1:-24}))"; }

PG_PASS="$(secret)"
REDIS_PASS="$(secret)"

# --- PostgreSQL -------------------------------------------------------------------------
say "PostgreSQL ($PG_BIN) on 127.0.0.1:$PG_PORT"
mkdir -p "$TMP/pg"
printf '%s\n' "$PG_PASS" > "$TMP/pg/pwfile"
[ ${#AS_PG[@]} -gt 0 ] && chown -R postgres: "$TMP/pg"
chmod 700 "$TMP/pg"
"${AS_PG[@]}" "$PG_BIN/initdb" -D "$TMP/pg/data" -U ecat --pwfile="$TMP/pg/pwfile" --auth=scram-sha-256 \
  -E UTF8 --no-locale > "$LOGS/initdb.log" 2>&1 || { cat "$LOGS/initdb.log"; die "initdb failed"; }
rm -f "$TMP/pg/pwfile"
# Throwaway cluster: TCP on loopback only, the socket in its own dir, no fsync.
"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$TMP/pg/data" -l "$TMP/pg/postgres.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$TMP/pg -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start > "$LOGS/pg_ctl.log" 2>&1 9>&- || { cat "$LOGS/pg_ctl.log"; die "PostgreSQL did not start"; }
for db in airflow mlflow warehouse_test; do
  psql_q postgres "CREATE DATABASE $db" || die "CREATE DATABASE $db failed"
done
PG_URL="ecat:$PG_PASS@127.0.0.1:$PG_PORT"

# --- Redis ------------------------------------------------------------------------------
say "Redis on 127.0.0.1:$REDIS_PORT"
printf 'requirepass %s\n' "$REDIS_PASS" > "$TMP/redis/redis.conf"  # not on a command line
chmod 600 "$TMP/redis/redis.conf"
redis-server "$TMP/redis/redis.conf" --port "$REDIS_PORT" --bind 127.0.0.1 --protected-mode yes \
  --daemonize yes --pidfile "$TMP/redis/redis.pid" --logfile "$TMP/redis/redis.log" --dir "$TMP/redis" \
  --save '' --appendonly no 9>&- || die "redis-server did not start"
export REDISCLI_AUTH="$REDIS_PASS"
wait_until 30 "Redis to answer PING" bash -c "redis-cli -h 127.0.0.1 -p $REDIS_PORT ping | grep -q PONG"
unset REDISCLI_AUTH

# --- the PostgreSQL warehouse test (needs only PostgreSQL) ------------------------------
export ECAT_TEST_PG_DSN="postgresql://$PG_URL/warehouse_test"
say "pytest: extract SQL on PostgreSQL vs DuckDB; docker/ topology and queue routing (static)"
(cd "$ROOT" && ECAT_HOME="$TMP/pytest_home" AIRFLOW_HOME="$TMP/pytest_airflow" "$PY" -m pytest -q \
  -p no:cacheprovider -rs tests/integration/test_postgres_warehouse.py tests/integration/test_celery_topology.py) \
  > "$LOGS/pytest.log" 2>&1 || { tail -n 60 "$LOGS/pytest.log"; die "pytest failed"; }
tail -n 1 "$LOGS/pytest.log"
grep -q "skipped" "$LOGS/pytest.log" && { tail -n 5 "$LOGS/pytest.log"; die "a test was skipped"; }

# --- Airflow environment ------------------------------------------------------------------
export ECAT_HOME="$TMP/ecat_home" AIRFLOW_HOME="$TMP/airflow"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://$PG_URL/airflow"
source "$ROOT/scripts/env.sh"
export AIRFLOW__CORE__EXECUTOR=CeleryExecutor
export AIRFLOW__CELERY__BROKER_URL="redis://:$REDIS_PASS@127.0.0.1:$REDIS_PORT/0"
export AIRFLOW__CELERY__RESULT_BACKEND="db+postgresql+psycopg2://$PG_URL/airflow"
export AIRFLOW__CELERY__WORKER_CONCURRENCY=2
# Workers import torch, DGL, GX and MLflow once, before they fork their pool (ecat_tasks.warm_workers).
export AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=ecat_tasks.warm_workers.CELERY_CONFIG
# Longer than any task's execution_timeout (2 h), so the broker never redelivers a running task.
export AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT=21600
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$API_PORT/execution/"
export AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT="$API_PORT" AIRFLOW__API__WORKERS=1
AIRFLOW__API_AUTH__JWT_SECRET="$(secret 32)"  # one per run, shared by every component
AIRFLOW__API__SECRET_KEY="$(secret 32)"
AIRFLOW__CORE__FERNET_KEY="$("$PY" -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
export AIRFLOW__API_AUTH__JWT_SECRET AIRFLOW__API__SECRET_KEY AIRFLOW__CORE__FERNET_KEY
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True  # loopback-only throwaway UI
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=True
export AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=False  # only the run this script triggers
export AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES=1 AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL=120
export ECAT_TRAIN_QUEUE=train
export ECAT_MLFLOW_TRACKING_URI="http://127.0.0.1:$MLFLOW_PORT"
unset ECAT_TEST_PG_DSN

# Both workers share this machine's host name: each reports its own one (TaskInstance.hostname)
# through [core] hostname_callable, so the checks below can tell which worker ran a task.
cat > "$TMP/pylib/ecat_worker_hostname.py" <<'EOF'
import os


def hostname() -> str:
    return os.environ["ECAT_WORKER_HOSTNAME"]
EOF

# --- MLflow tracking server (its own database in the same PostgreSQL) ---------------------
say "MLflow tracking server on 127.0.0.1:$MLFLOW_PORT"
start_service mlflow env MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://$PG_URL/mlflow" \
  "$ROOT/.venv/bin/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
  --default-artifact-root "$ECAT_HOME/mlflow-artifacts"

say "airflow db migrate"
"$AIRFLOW" db migrate > "$LOGS/db_migrate.log" 2>&1 || { tail -n 60 "$LOGS/db_migrate.log"; die "airflow db migrate failed"; }

say "seeding the warehouse: $ROWS rows for $DS"
"$PY" -m ecat_tasks.synthetic --warehouse "$ECAT_WAREHOUSE" --start-ds "$DS" --days 1 --rows "$ROWS" \
  > "$LOGS/seed.log" 2>&1 || { cat "$LOGS/seed.log"; die "seeding the warehouse failed"; }

# --- Airflow services ---------------------------------------------------------------------
say "starting api-server (127.0.0.1:$API_PORT), scheduler, dag-processor, workers (queues default, train)"
start_service api-server "$AIRFLOW" api-server --host 127.0.0.1 --port "$API_PORT" --workers 1
start_service scheduler "$AIRFLOW" scheduler --skip-serve-logs
start_service dag-processor "$AIRFLOW" dag-processor
worker() {  # worker NAME QUEUE HOSTNAME CONCURRENCY
  start_service "$1" env ECAT_WORKER_HOSTNAME="$3" PYTHONPATH="$TMP/pylib:$PYTHONPATH" \
    AIRFLOW__CORE__HOSTNAME_CALLABLE=ecat_worker_hostname.hostname \
    "$AIRFLOW" celery worker --queues "$2" --celery-hostname "$2@$3" --skip-serve-logs \
    --without-gossip --without-mingle --concurrency "$4"
}
worker worker-default default "$WORKER_DEFAULT_HOST" 2
# Three train workers of one slot each (the compose train worker scaled to three): the student
# and the comparison models are ready at once, so while the student holds one worker, two
# comparison models start together on the other two; with two workers, whether two comparison
# models overlap is timing (the student can outlast all three). Two comparison models can only
# run at once on two workers.
worker worker-train train "$WORKER_TRAIN_HOST" 1
worker worker-train2 train "$WORKER_TRAIN2_HOST" 1
worker worker-train3 train "$WORKER_TRAIN3_HOST" 1

wait_until 180 "the api-server (/api/v2/version)" curl -fsS "http://127.0.0.1:$API_PORT/api/v2/version"
wait_until 180 "the MLflow server (/health)" curl -fsS "http://127.0.0.1:$MLFLOW_PORT/health"
wait_until 180 "the default worker to be ready" grep -q "default@$WORKER_DEFAULT_HOST ready" "$LOGS/worker-default.log"
wait_until 180 "the train worker to be ready" grep -q "train@$WORKER_TRAIN_HOST ready" "$LOGS/worker-train.log"
wait_until 180 "the second train worker to be ready" grep -q "train@$WORKER_TRAIN2_HOST ready" "$LOGS/worker-train2.log"
wait_until 180 "the third train worker to be ready" grep -q "train@$WORKER_TRAIN3_HOST ready" "$LOGS/worker-train3.log"
dag_parsed() {
  [ "$(psql_q airflow "SELECT count(*) FROM dag d JOIN serialized_dag s ON s.dag_id = d.dag_id
                       WHERE d.dag_id = '$DAG_ID' AND NOT d.is_stale")" = "1" ]
}
wait_until 240 "$DAG_ID to be parsed and serialized" dag_parsed

# --- one run ------------------------------------------------------------------------------
say "unpausing $DAG_ID and triggering run $RUN_ID (logical date ${DS}T00:00:00+00:00)"
"$AIRFLOW" dags unpause "$DAG_ID" > "$LOGS/cli.log" 2>&1 || { cat "$LOGS/cli.log"; die "dags unpause failed"; }
"$AIRFLOW" dags trigger "$DAG_ID" --run-id "$RUN_ID" --logical-date "${DS}T00:00:00+00:00" \
  --conf '{"baselines": ["target_only", "mixed", "finetune"], "ablations": []}' >> "$LOGS/cli.log" 2>&1 \
  || { cat "$LOGS/cli.log"; die "dags trigger failed"; }
run_state() { psql_q airflow "SELECT state FROM dag_run WHERE dag_id = '$DAG_ID' AND run_id = '$RUN_ID'"; }
deadline=$(( $(date +%s) + RUN_TIMEOUT ))
last=""
while :; do
  check_alive
  state="$(run_state)"
  progress="$(psql_q airflow "SELECT string_agg(task_id || '=' || coalesce(state, 'none'), ' ' ORDER BY task_id)
                              FROM task_instance WHERE dag_id = '$DAG_ID' AND run_id = '$RUN_ID'")"
  [ "$progress" != "$last" ] && say "run $state: $progress"
  last="$progress"
  case "$state" in
    success) break ;;
    failed) die "run $RUN_ID failed" ;;
  esac
  [ "$(date +%s)" -lt "$deadline" ] || die "run $RUN_ID not finished after ${RUN_TIMEOUT}s (state: $state)"
  sleep 10
done

# --- checks -------------------------------------------------------------------------------
say "checking where each task ran"
printf '%-18s %-8s %-8s %-20s %s\n' TASK STATE QUEUE HOSTNAME 'START - END (UTC)'
CHECK_FAILURES=()
n_tasks=0
while IFS=$'\t' read -r task state queue host span; do
  n_tasks=$((n_tasks + 1))
  printf '%-18s %-8s %-8s %-20s %s\n' "$task" "$state" "$queue" "$host" "$span"
  if [[ " $TRAIN_TASKS " == *" $task "* ]]; then want_queue=train want_hosts=" $WORKER_TRAIN_HOST $WORKER_TRAIN2_HOST $WORKER_TRAIN3_HOST "
    worker_logs=("$LOGS/worker-train.log" "$LOGS/worker-train2.log" "$LOGS/worker-train3.log")
  else want_queue=default want_hosts=" $WORKER_DEFAULT_HOST "; worker_logs=("$LOGS/worker-default.log"); fi
  [ "$state" = success ] || check_failed "$task: state $state, expected success"
  [ "$queue" = "$want_queue" ] || check_failed "$task: queue $queue, expected $want_queue"
  [[ "$want_hosts" == *" $host "* ]] || check_failed "$task: ran on $host, expected one of$want_hosts"
  # grep reads the files itself: `cat | grep -q` fails under pipefail once the logs outgrow the
  # pipe's buffer (grep exits at the first match, cat dies of SIGPIPE).
  grep -q "Executing workload in Celery.*task_id='$task'" "${worker_logs[@]}" \
    || check_failed "$task: not in the logs of its workers"
done < <(psql_q airflow "SELECT task_id, state, queue, hostname,
                                to_char(start_date, 'HH24:MI:SS.MS') || ' - ' || to_char(end_date, 'HH24:MI:SS.MS')
                         FROM task_instance
                         WHERE dag_id = '$DAG_ID' AND run_id = '$RUN_ID' ORDER BY start_date")
# check_conf, wait_for_data, extract, validate, score_previous_day, graph_select, domain_reweight, teacher_refresh,
# student_distill, plan_comparisons, one train_comparison per comparison model (3), guard, evaluate, promote
[ "$n_tasks" -eq 16 ] || check_failed "expected 16 task instances, found $n_tasks"
say "comparison models (one mapped task each): map index, model, host, start, end"
psql_q airflow "SELECT map_index, rendered_map_index, hostname, start_date, end_date FROM task_instance
                WHERE dag_id = '$DAG_ID' AND run_id = '$RUN_ID' AND task_id = 'train_comparison' ORDER BY map_index"
overlaps="$(psql_q airflow "SELECT count(*) FROM task_instance a JOIN task_instance b
    ON a.dag_id = b.dag_id AND a.run_id = b.run_id AND a.task_id = b.task_id AND a.map_index < b.map_index
   WHERE a.dag_id = '$DAG_ID' AND a.run_id = '$RUN_ID' AND a.task_id = 'train_comparison'
     AND a.hostname <> b.hostname AND a.start_date < b.end_date AND b.start_date < a.end_date")"
say "pairs of comparison models that ran at the same time on two workers: $overlaps"
[ "$overlaps" -ge 1 ] || check_failed "no two comparison models overlapped on two workers"
# ecat_tasks.warm_workers: every worker imported the whole training stack once, nothing failed
n_preload="$("$PY" -c 'from ecat_tasks.warm_workers import preload_modules; print(len(preload_modules()))' 2>/dev/null | tail -n 1)"
for worker_log in "$LOGS"/worker-*.log; do
  grep -Eq "warm worker pid=[0-9]+: preloaded $n_preload module\(s\) in [0-9.]+s\s*(\[|$)" "$worker_log" \
    || check_failed "$(basename "$worker_log" .log) did not preload the whole training stack (want $n_preload modules, none failed)"
done
mlflow_runs="$(psql_q mlflow "SELECT count(*) FROM runs WHERE lifecycle_stage = 'active'")"
say "MLflow server store: $mlflow_runs active run(s)"
[ "$mlflow_runs" -gt 0 ] || check_failed "no MLflow run reached the tracking server"
say "MLflow server store: $(psql_q mlflow "SELECT count(*) FROM model_versions") registered model version(s)"
[ ${#CHECK_FAILURES[@]} -eq 0 ] || die "${#CHECK_FAILURES[@]} check(s) failed: $(IFS=';'; echo "${CHECK_FAILURES[*]}")"
say "PASSED: run $RUN_ID success; training tasks on $WORKER_TRAIN_HOST, $WORKER_TRAIN2_HOST and $WORKER_TRAIN3_HOST (queue train, comparison models in parallel), the others on $WORKER_DEFAULT_HOST (queue default)"
