"""One-shot set-up run by the airflow-init service of docker-compose.yaml (after `airflow db migrate`).

1. Creates the MLflow tracking server's database (MLFLOW_DB) in the PostgreSQL that holds
   Airflow's metadata, when missing (works on a volume created before this script existed).
2. Writes SimpleAuthManager's passwords file from _AIRFLOW_WWW_USER_USERNAME/_PASSWORD, so
   the UI login comes from docker/.env and is never generated into a log.
3. Seeds the demo DuckDB warehouse on the ECAT_HOME volume when ECAT_SEED_WAREHOUSE is true
   and the file is absent (ECAT_START_DATE, ECAT_SEED_DAYS days, ECAT_SEED_ROWS rows a day).

Idempotent: every step checks before it acts. Reads only environment variables.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def create_mlflow_database() -> None:
    import psycopg2
    from psycopg2 import sql

    name = os.environ.get("MLFLOW_DB", "mlflow")
    args = dict(host="postgres", port=5432, user=os.environ["POSTGRES_USER"],
                password=os.environ["POSTGRES_PASSWORD"], dbname=os.environ.get("POSTGRES_DB", "airflow"),
                connect_timeout=10)
    for attempt in range(30):
        try:
            con = psycopg2.connect(**args)
            break
        except psycopg2.OperationalError:
            if attempt == 29:
                raise
            time.sleep(2)
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                print(f"MLflow database {name!r} exists")
            else:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                print(f"created MLflow database {name!r}")
    finally:
        con.close()


def write_passwords_file() -> None:
    path = Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    user = os.environ.get("_AIRFLOW_WWW_USER_USERNAME", "airflow")
    password = os.environ["_AIRFLOW_WWW_USER_PASSWORD"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({user: password}) + "\n")
    path.chmod(0o600)
    print(f"wrote the API login of {user!r} to {path}")


def seed_warehouse() -> None:
    if os.environ.get("ECAT_SEED_WAREHOUSE", "true").lower() not in ("1", "true", "yes", "on"):
        print("ECAT_SEED_WAREHOUSE is off: not seeding")
        return
    from ecat_tasks.synthetic import main

    main(["--warehouse", os.environ["ECAT_WAREHOUSE"], "--start-ds", os.environ.get("ECAT_START_DATE", "2026-11-01"),
          "--days", os.environ.get("ECAT_SEED_DAYS", "3"), "--rows", os.environ.get("ECAT_SEED_ROWS", "300000"),
          "--if-absent"])


def main() -> int:
    create_mlflow_database()
    write_passwords_file()
    seed_warehouse()
    return 0


if __name__ == "__main__":
    sys.exit(main())
