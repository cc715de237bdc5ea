"""The feature spec (specs/demo.yaml): typed, checked, and the contract the pipeline extracts and validates."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from conftest import DAYS, tiny_config
from ecat_tasks.config import REPO_ROOT
from ecat_tasks.spec import SpecError, demo_spec, parse_spec, type_family
from ecat_tasks.storage import Layout

DEMO = REPO_ROOT / "specs" / "demo.yaml"


def _demo_yaml() -> dict:
    import yaml

    return yaml.safe_load(DEMO.read_text())


def test_demo_spec_is_what_the_models_embed_the_sql_selects_and_the_generator_creates() -> None:
    from ecat_tasks.models.data import Encoders
    from ecat_tasks.synthetic import SAMPLES_DDL, World

    spec = demo_spec()
    chunk = next(World().day_chunks(DAYS[0], 500)).to_pandas()
    enc = Encoders.fit(chunk)  # the models' default features
    assert list(enc.vocabs) == spec.sparse_names and enc.spec.dense_names == spec.dense_names
    with duckdb.connect() as con:
        con.execute(SAMPLES_DDL)
        generator = [(d[0], type_family(d[1])) for d in con.execute("DESCRIBE samples").fetchall()]
    assert generator == [(c.source, c.family) for c in spec.lake_columns()]
    for name in ("extract_source", "extract_target"):
        select = re.search(r"SELECT (.*?)\s+FROM", (REPO_ROOT / "sql" / f"{name}.sql").read_text(), re.S).group(1)
        assert [c.strip() for c in select.split(",")] == spec.lake_names, name


def test_readme_contract_section_is_the_demo_spec() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("<!-- contract:start -->\n", 1)[1].split("\n<!-- contract:end -->", 1)[0]
    assert section == demo_spec().contract_markdown()


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(tabel="x"), r"unknown key\(s\) \['tabel'\]"),
    (lambda d: d["user"].update(column="user id; DROP TABLE samples"), "'user id; DROP TABLE samples' is not a valid"),
    (lambda d: d.update(table="samples; DROP TABLE x"), "is not a valid column or table name"),
    (lambda d: d["labels"].update(watch={"column": "w"}), r"unknown label\(s\) \['watch'\]"),
    (lambda d: d["sparse"].append({"column": "user_age"}), "'user_age' is declared twice"),
    (lambda d: d["dense"].append({"column": "x", "normalisation": "zscore"}), "normalisation must be one of"),
    (lambda d: d["item"].update(vocab_size=0), r"item.vocab_size: expected an integer >= 1"),
    (lambda d: d["columns"].pop("event_time"), r"missing \['event_time'\]"),
])
def test_spec_errors_name_the_key(change, message) -> None:
    data = _demo_yaml()
    change(data)
    with pytest.raises(SpecError, match=message):
        parse_spec(data, "bad.yaml")


def test_identifiers_are_quoted_and_values_stay_bound() -> None:
    spec = demo_spec()
    assert spec.select_list().startswith('"sample_id", "ds", "event_ts"')
    assert spec.sql_identifiers()["table"] == '"samples"'


def test_check_names_every_problem_in_one_message(tmp_path: Path, warehouse: Path) -> None:
    copy = tmp_path / "w.duckdb"
    copy.write_bytes(warehouse.read_bytes())
    with duckdb.connect(str(copy)) as con:
        con.execute("ALTER TABLE samples DROP COLUMN item_price")
        con.execute("ALTER TABLE samples DROP COLUMN hour")
        con.execute("ALTER TABLE samples ALTER COLUMN item_brand TYPE VARCHAR")
        con.execute("UPDATE samples SET conversion = 2 WHERE sample_id IN (SELECT sample_id FROM samples LIMIT 3)")
    out = subprocess.run([sys.executable, "-m", "ecat_tasks.spec", "check", str(DEMO), "--warehouse", str(copy)],
                         capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 1
    message = out.stderr.strip()
    assert len(message.splitlines()) == 1 and "4 problem(s)" in message
    for part in ("missing column 'item_price'", "missing column 'hour'", "'item_brand' (sparse item_brand) has type VARCHAR",
                 "'conversion' (conversion) holds unknown label value(s) [2]"):
        assert part in message
    good = subprocess.run([sys.executable, "-m", "ecat_tasks.spec", "check", str(DEMO), "--warehouse", str(warehouse)],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert good.returncode == 0 and good.stdout.startswith("ok:"), good.stderr


def test_a_spec_error_fails_extract_first_naming_the_column_and_writing_nothing(tmp_path: Path, warehouse: Path) -> None:
    from ecat_tasks.extract import extract

    copy = tmp_path / "w.duckdb"
    copy.write_bytes(warehouse.read_bytes())
    with duckdb.connect(str(copy)) as con:
        con.execute("ALTER TABLE samples ALTER COLUMN user_city TYPE VARCHAR")
        con.execute("UPDATE samples SET click = 7 WHERE sample_id IN (SELECT sample_id FROM samples WHERE ds = DATE '2026-03-01' LIMIT 1)")
    home = tmp_path / "home"
    with duckdb.connect(str(copy), read_only=True) as con:
        with pytest.raises(SpecError, match=r"'user_city' \(sparse user_city\) has type VARCHAR.*unknown label value\(s\) \[7\]"):
            extract(con, DAYS[0], tiny_config(lookback_days=1), Layout(home))
    assert not home.exists() or not any(home.rglob("*.parquet"))
