import duckdb
import pyarrow.parquet as pq
import pytest

from conftest import DAYS, tiny_config
from ecat_tasks.extract import EmptyTargetError, extract
from ecat_tasks.sql import bind, load_sql
from ecat_tasks.storage import Layout, read_manifest


def test_bind_rewrites_placeholders_without_formatting_values():
    sql, params = bind("SELECT 1 WHERE a = :x AND b::date = :y -- :ignored", {"x": "o'hara", "y": 2}, "qmark")
    assert sql == "SELECT 1 WHERE a = ? AND b::date = ?" and params == ["o'hara", 2]
    sql, params = bind("WHERE a = :x", {"x": 1}, "pyformat")
    assert sql == "WHERE a = %(x)s" and params == {"x": 1}
    with pytest.raises(KeyError, match="x"):
        bind("WHERE a = :x", {}, "qmark")


def test_sql_files_are_parameterised():
    for name in ("extract_source", "extract_target"):
        sql = load_sql(name)
        assert ":start_ds" in sql and ":target_scenario" in sql and "{" not in sql


def test_extract_writes_both_domains_with_manifests(tmp_path, warehouse):
    layout = Layout(tmp_path)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        m = extract(con, DAYS[1], tiny_config(), layout)
    assert m["days_extracted"] == list(DAYS)  # the missing lookback day came along
    for domain in ("source", "target"):
        part = layout.staging(domain, DAYS[1])
        table = pq.read_table(part)
        manifest = read_manifest(part)
        assert manifest["rows"] == table.num_rows > 0
        assert manifest["checksum"] and manifest["columns"][0] == "sample_id"
        scen = set(table.column("scenario").to_pylist())
        assert (scen == {"mini_app"}) == (domain == "target")
    assert m["target_rows"] + m["source_rows"] == 40_000


def test_rerun_replaces_partition_identically(tmp_path, warehouse):
    layout = Layout(tmp_path)
    cfg = tiny_config(lookback_days=1)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        extract(con, DAYS[0], cfg, layout)
        first = read_manifest(layout.staging("source", DAYS[0]))["checksum"]
        extract(con, DAYS[0], cfg, layout)
    assert read_manifest(layout.staging("source", DAYS[0]))["checksum"] == first
    assert not list((tmp_path / "staging").glob(".tmp-*"))
    assert not (tmp_path / "lake").exists()  # nothing is published before validate


def test_unknown_target_scenario_fails_and_keeps_previous_partition(tmp_path, warehouse):
    layout = Layout(tmp_path)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        extract(con, DAYS[0], tiny_config(lookback_days=1), layout)
        before = read_manifest(layout.staging("target", DAYS[0]))["checksum"]
        with pytest.raises(EmptyTargetError, match="unknown target scenario 'no_such_app'.*mini_app"):
            extract(con, DAYS[0], tiny_config(lookback_days=1, target_scenario="no_such_app"), layout)
    assert read_manifest(layout.staging("target", DAYS[0]))["checksum"] == before


def test_empty_target_day_is_a_named_failure(tmp_path, warehouse):
    copy = tmp_path / "w.duckdb"
    copy.write_bytes(warehouse.read_bytes())
    with duckdb.connect(str(copy)) as con:
        con.execute("DELETE FROM samples WHERE scenario = 'mini_app' AND ds = DATE '2026-03-02'")
        with pytest.raises(EmptyTargetError, match="no rows on 2026-03-02"):
            extract(con, DAYS[1], tiny_config(), Layout(tmp_path / "home"))
    assert not Layout(tmp_path / "home").staging_day(DAYS[1]).exists()


def test_missing_warehouse_column_is_named(tmp_path, warehouse):
    copy = tmp_path / "w.duckdb"
    copy.write_bytes(warehouse.read_bytes())
    with duckdb.connect(str(copy)) as con:
        con.execute("ALTER TABLE samples DROP COLUMN item_price")
        with pytest.raises(Exception, match="item_price"):
            extract(con, DAYS[0], tiny_config(lookback_days=1), Layout(tmp_path / "home"))
    assert not Layout(tmp_path / "home").staging_day(DAYS[0]).exists()
