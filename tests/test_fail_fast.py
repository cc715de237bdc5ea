"""Errors that retrying cannot heal fail at once (no retries), naming the column, the day or the
param; connection and lock errors keep their retries; the run's first task refuses unknown
conf keys; wait_for_data waits for the day's rows."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pyarrow as pa
import pytest
from airflow.sdk.exceptions import AirflowFailException

from conftest import DAYS, tiny_config
from ecat_tasks import airflow_edge
from ecat_tasks.airflow_edge import on_failure, run_step
from ecat_tasks.errors import ConfigError, PermanentError
from ecat_tasks.extract import EmptyTargetError, SchemaError, _conform, extract, is_transient, rows_landed
from ecat_tasks.features import CONTRACT_SCHEMA
from ecat_tasks.spec import SpecError, demo_spec
from ecat_tasks.storage import Layout
from ecat_tasks.validate import ValidationFailed


@pytest.fixture()
def wh(tmp_path: Path, warehouse: Path) -> Path:
    copy = tmp_path / "w.duckdb"
    shutil.copy(warehouse, copy)
    return copy


def test_wrong_column_type_is_refused_by_the_spec_check_before_anything_is_written(tmp_path: Path, wh: Path) -> None:
    with duckdb.connect(str(wh)) as con:
        con.execute("ALTER TABLE samples ALTER user_id TYPE VARCHAR")
        with pytest.raises(SpecError, match=r"column 'user_id' .*has type VARCHAR, expected integer") as err:
            extract(con, DAYS[0], tiny_config(lookback_days=1), Layout(tmp_path / "h"))
    assert isinstance(err.value, PermanentError)
    assert not (tmp_path / "h" / "staging").exists() or not any((tmp_path / "h" / "staging").iterdir())


def test_uncastable_values_name_column_day_rows_and_examples() -> None:
    """Past the spec check (a type the spec accepts), values that do not cast still name column, day, rows, examples."""
    batch = pa.Table.from_pylist([{**{f.name: None for f in CONTRACT_SCHEMA}, "user_id": v}
                                  for v in ("7", "u-1", "u-2", "8")]).to_batches()[0]
    batch = batch.cast(pa.schema([pa.field(f.name, pa.string() if f.name == "user_id" else f.type) for f in CONTRACT_SCHEMA]))
    with pytest.raises(SchemaError) as err:
        _conform(batch, DAYS[0], demo_spec())
    msg = str(err.value)
    assert "'user_id'" in msg and f"ds={DAYS[0]}" in msg and "2 of 4 rows" in msg and "'u-1'" in msg, msg


def test_missing_column_is_a_clear_message(tmp_path: Path, wh: Path) -> None:
    with duckdb.connect(str(wh)) as con:
        con.execute("ALTER TABLE samples DROP COLUMN item_price")
        with pytest.raises(SpecError, match=r"missing column 'item_price'"):
            extract(con, DAYS[0], tiny_config(lookback_days=1), Layout(tmp_path / "h"))


def test_missing_table_is_permanent_and_lock_errors_are_not(tmp_path: Path, wh: Path) -> None:
    with duckdb.connect(str(wh)) as con:
        con.execute("ALTER TABLE samples RENAME TO samples_old")
        with pytest.raises(SpecError, match="table 'samples' does not exist") as err:
            extract(con, DAYS[0], tiny_config(lookback_days=1), Layout(tmp_path / "h"))
    assert isinstance(err.value, PermanentError)
    holder = duckdb.connect(str(wh))  # a loader holds the file's write lock
    try:
        code = f"import duckdb; duckdb.connect({str(wh)!r})"
        import subprocess
        import sys

        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert "lock" in out.stderr.lower()
        assert is_transient(duckdb.IOException(out.stderr))  # the retries are for this one
    finally:
        holder.close()
    assert is_transient(ConnectionRefusedError()) and not is_transient(KeyError("x"))


def test_step_errors_fail_without_retry_and_on_call_sees_the_cause(caplog: pytest.LogCaptureFixture) -> None:
    from ecat_tasks.models.health import ModelHealthError
    from ecat_tasks.models.training import CheckpointError

    # deterministic training fails the same way again: a health or checkpoint failure is not retried either
    for exc in (EmptyTargetError("no rows"), ValidationFailed("bad"), SchemaError("col"), ConfigError("key"),
                ModelHealthError("nan"), CheckpointError("corrupt")):
        assert isinstance(exc, PermanentError)
    with pytest.raises(AirflowFailException, match="ConfigError: unknown config field 'batch_sise'; did you mean 'batch_size'") as err:
        run_step("check_conf", "2026-03-01", {"batch_sise": 512})
    with caplog.at_level(logging.ERROR, logger="ecat_tasks.airflow_edge"):
        on_failure({"exception": err.value, "ds": "2026-03-01",
                    "task_instance": SimpleNamespace(dag_id="ecat_daily", task_id="check_conf", try_number=1)})
    line = caplog.records[-1].getMessage()
    assert "error=ConfigError: unknown config field 'batch_sise'" in line and "corrected --conf" in line, line


def test_check_conf_accepts_valid_params() -> None:
    m = run_step("check_conf", "2026-03-01", {"batch_size": 512, "label": "conversion"})
    assert m["changed"] == {"batch_size": 512, "label": "conversion"}


def test_unknown_key_names_closest_or_lists_valid() -> None:
    from ecat_tasks.config import EcatConfig

    with pytest.raises(ConfigError, match="did you mean 'lookback_days'"):
        EcatConfig.from_mapping({"lookback_dayz": 3}, env={})
    with pytest.raises(ConfigError, match="valid fields: .*'batch_size'"):
        EcatConfig.from_mapping({"zzz": 3}, env={})


def test_wait_for_data_is_done_only_when_the_day_has_rows(wh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with duckdb.connect(str(wh), read_only=True) as con:
        assert rows_landed(con, DAYS[0], demo_spec()) == 40_000
        assert rows_landed(con, "2026-03-09", demo_spec()) == 0
    monkeypatch.setattr(airflow_edge, "warehouse_connection", lambda: duckdb.connect(str(wh), read_only=True))
    assert airflow_edge.data_landed(DAYS[0]).is_done is True
    assert airflow_edge.data_landed("2026-03-09").is_done is False

    def unreachable():
        raise duckdb.IOException("IO Error: Could not set lock on file")
    monkeypatch.setattr(airflow_edge, "warehouse_connection", unreachable)
    assert airflow_edge.data_landed(DAYS[0]).is_done is False  # not yet: poke again until the timeout
