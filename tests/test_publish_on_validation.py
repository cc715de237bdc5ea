"""Validation gates the lake: extract stages, only a passing validate publishes, and every
reader (graph window, teacher cold start, next-day evaluation) sees validated days only."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from conftest import tiny_config
from ecat_tasks.extract import extract
from ecat_tasks.graph_select import graph_select
from ecat_tasks.inputs import target_rows, window_days
from ecat_tasks.storage import Layout, MissingPartitionError, read_manifest
from ecat_tasks.synthetic import seed_warehouse
from ecat_tasks.validate import ValidationFailed, validate

D1, D2, D3 = "2026-05-01", "2026-05-02", "2026-05-03"
CFG = tiny_config(lookback_days=3)


@pytest.fixture(scope="module")
def good_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gate") / "warehouse.duckdb"
    seed_warehouse(path, D1, 3, 12_000)
    return path


def _null_user_ids(warehouse: Path, tmp_path: Path, ds: str) -> Path:
    """A copy of the warehouse where a load left NULL user ids on ``ds``."""
    copy = tmp_path / "bad.duckdb"
    shutil.copy(warehouse, copy)
    with duckdb.connect(str(copy)) as con:
        con.execute("UPDATE samples SET user_id = NULL WHERE ds = CAST(? AS DATE) AND hash(sample_id) % 10 = 0", [ds])
    return copy


def _run(warehouse: Path, ds: str, layout: Layout) -> dict:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        extract(con, ds, CFG, layout)
    return validate(ds, CFG, layout)


def _digest(path: Path) -> dict[str, str]:
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_failed_day_is_never_published_nor_read(good_warehouse: Path, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    bad = _null_user_ids(good_warehouse, tmp_path, D2)
    layout = Layout(tmp_path / "home")
    _run(bad, D1, layout)
    with pytest.raises(ValidationFailed, match="not_be_null\\(user_id\\)"):
        _run(bad, D2, layout)
    assert not layout.lake_has(D2) and layout.staging_day(D2).is_dir()
    with pytest.raises(MissingPartitionError, match="published by 'validate'"):
        target_rows(D2, layout)  # next-day scoring of day 1's models never reads unvalidated rows

    # day 3 extracts day 2 again as history: it is validated as a lookback day, and rejected
    with caplog.at_level("WARNING", logger="ecat_tasks.validate"):
        m = _run(bad, D3, layout)
    assert m["lookback_rejected"].keys() == {D2} and "lookback day 2026-05-02 failed validation" in caplog.text
    assert layout.lake_has(D3) and not layout.lake_has(D2)
    assert window_days(D3, CFG, layout) == [D1, D3]  # the teacher's cold-start history
    g = graph_select(D3, CFG, layout)
    assert read_manifest(Path(g["path"]))["window_days"] == {"source": [D1, D3], "target": [D1, D3]}


def test_lookback_days_are_validated_before_they_are_published(good_warehouse: Path, tmp_path: Path) -> None:
    bad = _null_user_ids(good_warehouse, tmp_path, D1)
    layout = Layout(tmp_path / "home")
    m = _run(bad, D3, layout)  # a first run: days 1 and 2 come along as history
    assert m["lookback_published"] == [D2] and list(m["lookback_rejected"]) == [D1]
    assert [d for d in (D1, D2, D3) if layout.lake_has(d)] == [D2, D3]
    assert not any(layout.staging_day(d).exists() for d in (D2, D3))  # published days leave staging
    nulls = pq.read_table(layout.lake("target", D2)).column("user_id").null_count
    assert nulls == 0


def test_failed_rerun_keeps_the_validated_partition(good_warehouse: Path, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "home")
    _run(good_warehouse, D1, layout)
    before = _digest(layout.lake_day(D1))
    bad = _null_user_ids(good_warehouse, tmp_path, D1)
    with pytest.raises(ValidationFailed):
        _run(bad, D1, layout)
    assert _digest(layout.lake_day(D1)) == before  # byte-identical: the day's models still match the lake
