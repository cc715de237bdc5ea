# Environment shared by `make run`, `make test` and the integration scripts.
# Everything lives inside the checkout by default; override any variable from outside.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ECAT_HOME="${ECAT_HOME:-$ROOT/.ecat_home}"
export ECAT_WAREHOUSE="${ECAT_WAREHOUSE:-$ECAT_HOME/warehouse.duckdb}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$ROOT/dags}"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}"
export AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="${AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT:-120}"
export AIRFLOW__CORE__UNIT_TEST_MODE="${AIRFLOW__CORE__UNIT_TEST_MODE:-False}"
if [ -z "${AIRFLOW_CONN_ECAT_WAREHOUSE:-}" ]; then
  export AIRFLOW_CONN_ECAT_WAREHOUSE="{\"conn_type\": \"duckdb\", \"host\": \"$ECAT_WAREHOUSE\", \"extra\": {\"read_only\": true}}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export MLFLOW_DISABLE_TELEMETRY=true
export GX_ANALYTICS_ENABLED=false
export DGLBACKEND=pytorch
# Idle OpenMP threads sleep instead of spinning: two training tasks on one worker otherwise starve each other.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
export NO_PROXY='*'
mkdir -p "$ECAT_HOME" "$AIRFLOW_HOME"
