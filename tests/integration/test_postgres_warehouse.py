"""The extraction SQL against PostgreSQL as the warehouse: same lake as from DuckDB.

``sql/*.sql`` name parameters ``:name``; :mod:`ecat_tasks.sql` binds them in the driver's
paramstyle (``?`` for DuckDB, ``%(name)s`` for psycopg2 and psycopg 3). This test loads the
same two synthetic days into DuckDB (in memory) and into PostgreSQL, runs
:func:`ecat_tasks.extract.extract` on a DuckDB connection and on PostgreSQL connections
(psycopg2; psycopg 3; and the DAG's own path, the ``ecat_warehouse`` Airflow connection
through the postgres provider's hook, which hands out psycopg 3 under SQLAlchemy 2), and
requires identical lake partitions: same days, same row counts per domain, same rows and
values.

It needs a PostgreSQL server: ``ECAT_TEST_PG_DSN`` (a libpq DSN or URI of a database the
user may create a schema in). Without one it is skipped. ``scripts/celery_integration.sh``
starts a throwaway server on loopback and runs this file with the variable set.
Everything it creates lives in a private schema that is dropped afterwards.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ecat_tasks.config import EcatConfig
from ecat_tasks.extract import extract
from ecat_tasks.features import CONTRACT_SCHEMA
from ecat_tasks.sql import paramstyle_of
from ecat_tasks.storage import Layout
from ecat_tasks.synthetic import SAMPLES_DDL, World

DSN_ENV = "ECAT_TEST_PG_DSN"
DAYS = ("2026-03-01", "2026-03-02")
ROWS_PER_DAY = 5_000


def postgres_ddl(ddl: str = SAMPLES_DDL) -> str:
    """SAMPLES_DDL in PostgreSQL's types: DuckDB's DOUBLE is DOUBLE PRECISION there."""
    return re.sub(r"\bDOUBLE\b(?!\s+PRECISION)", "DOUBLE PRECISION", ddl)


def small_config() -> EcatConfig:
    # lookback 2: extracting the second day also extracts the first (the lookback backfill);
    # 1,000-row batches: the psycopg2 path streams several fetchmany() batches per domain.
    return EcatConfig.from_mapping({"lookback_days": 2, "extract_batch_rows": 1_000}, env={})


def test_postgres_ddl_translation() -> None:
    ddl = postgres_ddl()
    assert "DOUBLE PRECISION" in ddl and not re.search(r"\bDOUBLE\b(?!\s+PRECISION)", ddl)
    for pg_type in ("VARCHAR", "DATE", "TIMESTAMP", "BIGINT"):
        assert pg_type in ddl


@pytest.fixture(scope="module")
def pg_schema():
    """A private schema in the ECAT_TEST_PG_DSN database, dropped at the end."""
    dsn = os.environ.get(DSN_ENV)
    if not dsn:
        pytest.skip(f"{DSN_ENV} is not set: no PostgreSQL server to test against "
                    f"(scripts/celery_integration.sh starts one and sets it)")
    import psycopg2

    try:
        admin = psycopg2.connect(dsn, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {DSN_ENV} is not reachable: {str(exc).strip().splitlines()[0]}")
    admin.autocommit = True
    schema = f"ecat_test_{secrets.token_hex(4)}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    try:
        yield dsn, schema
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()


def _day_table(ds: str) -> pa.Table:
    return pa.concat_tables(list(World().day_chunks(ds, ROWS_PER_DAY)))


def _load_postgres(dsn: str, schema: str, tables: list[pa.Table]) -> None:
    import psycopg2
    from psycopg2.extras import execute_values

    con = psycopg2.connect(dsn, options=f"-c search_path={schema}")
    try:
        with con, con.cursor() as cur:
            cur.execute(postgres_ddl())
            names = tables[0].schema.names
            for table in tables:
                rows = [tuple(r[n] for n in names) for r in table.to_pylist()]
                execute_values(cur, f"INSERT INTO samples ({', '.join(names)}) VALUES %s", rows, page_size=2_000)
    finally:
        con.close()


def _lake(layout: Layout, days: list[str]) -> dict[tuple[str, str], pa.Table]:
    out = {}
    for domain in ("source", "target"):
        for ds in days:
            table = pq.read_table(layout.staging(domain, ds))  # extracted, before validate
            out[(domain, ds)] = table.select(CONTRACT_SCHEMA.names).sort_by("sample_id")
    return out


@pytest.fixture(scope="module")
def warehouses(pg_schema: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same two days in PostgreSQL and in DuckDB, and the lake extracted from DuckDB."""
    dsn, schema = pg_schema
    tables = [_day_table(ds) for ds in DAYS]
    _load_postgres(dsn, schema, tables)
    duck = duckdb.connect()
    try:
        duck.execute(SAMPLES_DDL)
        for table in tables:
            duck.register("day_view", table)
            duck.execute("INSERT INTO samples SELECT * FROM day_view")
            duck.unregister("day_view")
        layout = Layout(tmp_path_factory.mktemp("from_duckdb"))
        manifest = extract(duck, DAYS[-1], small_config(), layout)
    finally:
        duck.close()
    return {"dsn": dsn, "schema": schema, "duck_manifest": manifest, "duck_lake": _lake(layout, list(DAYS))}


def _connect(driver: str, dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A DB-API connection to the schema: psycopg2, psycopg 3, or the DAG's own path."""
    options = f"-c search_path={schema}"
    if driver == "psycopg2":
        import psycopg2

        return psycopg2.connect(dsn, options=options)
    if driver == "psycopg":
        psycopg = pytest.importorskip("psycopg")
        return psycopg.connect(dsn, options=options)
    # The DAG's path: the Airflow connection ``ecat_warehouse`` (here from its environment
    # variable) through the postgres provider's hook, whichever driver the hook picks.
    pytest.importorskip("airflow.providers.postgres")
    from psycopg2.extensions import parse_dsn

    from ecat_tasks.airflow_edge import WAREHOUSE_CONN_ID, warehouse_connection

    parts = parse_dsn(dsn)
    conn = {"conn_type": "postgres", "host": parts.get("host", "127.0.0.1"), "port": int(parts.get("port", 5432)),
            "login": parts.get("user"), "password": parts.get("password"), "schema": parts["dbname"],
            "extra": {"options": options}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{WAREHOUSE_CONN_ID.upper()}", json.dumps(conn))
    return warehouse_connection()


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg", "airflow_connection"])
def test_extract_from_postgres_equals_duckdb(driver: str, warehouses: dict, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    con = _connect(driver, warehouses["dsn"], warehouses["schema"], monkeypatch)
    try:
        assert paramstyle_of(con) == "pyformat", type(con)
        manifest = extract(con, DAYS[-1], small_config(), Layout(tmp_path))
    finally:
        con.close()

    expected_manifest = warehouses["duck_manifest"]
    assert manifest["days_extracted"] == expected_manifest["days_extracted"] == sorted(DAYS)
    for key in ("target_rows", "source_rows"):
        assert manifest[key] == expected_manifest[key] > 0, key
    got_lake = _lake(Layout(tmp_path), list(DAYS))
    total = 0
    for part, expected in warehouses["duck_lake"].items():
        got = got_lake[part]
        assert got.schema.equals(CONTRACT_SCHEMA), part
        assert got.num_rows == expected.num_rows > 0, part
        assert got.column("sample_id").to_pylist() == expected.column("sample_id").to_pylist(), part
        assert got.equals(expected), f"{part}: values differ between the PostgreSQL ({driver}) and DuckDB extracts"
        total += got.num_rows
    assert total == ROWS_PER_DAY * len(DAYS)


def test_another_spec_extracts_the_same_from_postgres_and_duckdb(pg_schema: tuple[str, str], tmp_path: Path) -> None:
    """tests/specs/other_names.yaml on PostgreSQL: quoted identifiers of its own names, string ids
    hashed on the fetchmany path exactly as on DuckDB's Arrow path."""
    import psycopg2
    from psycopg2.extras import execute_values

    from ecat_tasks.spec import load_spec
    from ecat_tasks.synthetic import spec_table
    from test_spec import GENERATED, OTHER

    spec = load_spec(OTHER)
    table = spec_table(_day_table(DAYS[0]), spec, GENERATED)
    dsn, schema = pg_schema
    cfg = EcatConfig.from_mapping({"feature_spec": spec.path, "lookback_days": 1, "extract_batch_rows": 1_000}, env={})
    con = psycopg2.connect(dsn, options=f"-c search_path={schema}")
    try:
        with con, con.cursor() as cur:
            cur.execute(postgres_ddl(spec.ddl()))
            execute_values(cur, f'INSERT INTO "{spec.table}" VALUES %s',
                           [tuple(r.values()) for r in table.to_pylist()], page_size=2_000)
        extract(con, DAYS[0], cfg, Layout(tmp_path / "pg"))
    finally:
        con.close()
    with duckdb.connect() as duck:
        duck.execute(spec.ddl())
        duck.register("day_view", table)
        duck.execute(f'INSERT INTO "{spec.table}" SELECT * FROM day_view')
        extract(duck, DAYS[0], cfg, Layout(tmp_path / "duck"))
    for domain in ("source", "target"):
        got, expected = (pq.read_table(Layout(tmp_path / w).staging(domain, DAYS[0])).sort_by("sample_id")
                         for w in ("pg", "duck"))
        assert got.schema.equals(spec.arrow_schema()) and got.num_rows > 0
        assert got.equals(expected), f"{domain}: values differ between the PostgreSQL and DuckDB extracts"
