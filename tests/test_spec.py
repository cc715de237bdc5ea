"""The feature spec drives the SQL, the lake contract, validation, the models, the demo table and
the README: for the demo spec and for another team's (tests/specs/other_names.yaml)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from conftest import DAYS, altered_copy, tiny_config
from ecat_tasks.config import REPO_ROOT
from ecat_tasks.spec import SpecError, check_warehouse, demo_spec, load_spec, parse_spec, type_family
from ecat_tasks.storage import Layout

DEMO = REPO_ROOT / "specs" / "demo.yaml"
OTHER = REPO_ROOT / "tests" / "specs" / "other_names.yaml"
# The synthetic generator's column behind each feature of the other spec (roles and labels map by role).
GENERATED = {"age_band": "user_age", "gender": "user_gender", "city": "user_city", "brand": "item_brand",
             "hour_of_day": "hour", "price": "item_price", "activity": "user_activity", "popularity": "item_popularity"}
SPECS = {"demo": demo_spec, "other": lambda: load_spec(OTHER)}


def _demo_yaml() -> dict:
    import yaml

    return yaml.safe_load(DEMO.read_text())


def test_demo_spec_is_what_the_models_embed_by_default_and_the_generator_creates() -> None:
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


@pytest.fixture(scope="module")
def other_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ecat_tasks.synthetic import seed_warehouse

    path = tmp_path_factory.mktemp("other") / "w.duckdb"
    seed_warehouse(path, DAYS[0], 1, 6_000, spec=load_spec(OTHER), generated=GENERATED)
    return path


# --- everything derives from the spec (both specs) -------------------------------------
@pytest.mark.parametrize("which", sorted(SPECS))
def test_sql_selects_the_spec_columns_and_binds_values(which: str) -> None:
    from ecat_tasks.sql import bind, render_sql

    spec = SPECS[which]()
    for name in ("extract_source", "extract_target"):
        sql = render_sql(name, spec)
        select = re.search(r"SELECT (.*)\nFROM (\S+)", sql)
        assert select.group(1) == spec.select_list() and select.group(2) == f'"{spec.table}"'
        aliases = [m.group(2) or m.group(1) for m in re.finditer(r'"(\w+)"(?: AS "(\w+)")?', select.group(1))]
        assert aliases == spec.lake_names
        assert f'"{spec.date}" >= CAST(:start_ds AS DATE)' in sql and f'ORDER BY "{spec.sample_id}"' in sql
        query, params = bind(sql, {"start_ds": "2026-03-01", "end_ds": "2026-03-02", "target_scenario": "x'; DROP"}, "qmark")
        assert "2026-03-01" not in query and "DROP" not in query and params == ["2026-03-01", "2026-03-02", "x'; DROP"]
    for name in ("day_row_count", "scenario_counts"):
        assert f'FROM "{spec.table}"' in render_sql(name, spec)


@pytest.mark.parametrize("which", sorted(SPECS))
def test_arrow_contract_and_validation_suite_follow_the_spec(which: str) -> None:
    from ecat_tasks.validate import build_expectations

    spec = SPECS[which]()
    schema = spec.arrow_schema()
    assert schema.names == spec.lake_names
    assert schema.names[:4] == ["sample_id", "ds", "event_ts", "scenario"]
    exps = build_expectations("target", DAYS[0], 10, tiny_config(feature_spec=spec.path), spec)
    exist = [e.column for e in exps if type(e).__name__ == "ExpectColumnToExist"]
    assert exist == spec.lake_names
    in_set = {e.column: list(e.value_set) for e in exps if type(e).__name__ == "ExpectColumnValuesToBeInSet"}
    assert {lb.name: list(lb.values) for lb in spec.labels}.items() <= in_set.items()
    assert ("conversion" in in_set) == ("conversion" in spec.label_names)
    between = {e.column: (e.min_value, e.max_value) for e in exps if type(e).__name__ == "ExpectColumnValuesToBeBetween"}
    for f in spec.dense:
        assert between[f.name] == (f.low, f.high)
    for f in spec.all_sparse:  # string ids are hashed: no bound on them
        assert (f.name in between) == (f.type == "int" and f.low is not None)


@pytest.mark.parametrize("which", sorted(SPECS))
def test_models_embed_the_spec_sparse_features_and_read_its_dense_ones(which: str) -> None:
    from ecat_tasks.models.continual import build_network
    from ecat_tasks.models.data import Encoders

    spec = SPECS[which]()
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({**{n: rng.integers(0, 50, 400) for n in spec.sparse_names},
                          **{n: rng.random(400) * 100 for n in spec.dense_names}})
    enc = Encoders.fit(frame, spec.model_features())
    net = build_network({"kind": "ranking", "embed_dim": 4, "hidden": [8]}, enc.vocab_sizes(), len(spec.dense_names))
    assert list(net.embedding.tables) == spec.sparse_names
    sparse, dense = enc.transform(frame)
    assert sparse.shape == (400, len(spec.sparse_names)) and dense.shape == (400, len(spec.dense_names))
    for j, f in enumerate(spec.dense):  # the spec's normalisation: log1p then standardise, or standardise only
        raw = frame[f.name].to_numpy()
        x = np.log1p(raw) if f.normalisation == "log_standard" else raw
        np.testing.assert_allclose(enc.dense_mean[j], x.mean(), rtol=1e-9)


@pytest.mark.parametrize("which", sorted(SPECS))
def test_ddl_creates_the_spec_table(which: str) -> None:
    spec = SPECS[which]()
    with duckdb.connect() as con:
        con.execute(spec.ddl())
        described = con.execute(f'DESCRIBE "{spec.table}"').fetchall()
    assert [d[0] for d in described] == [c.source for c in spec.lake_columns()]
    assert [type_family(d[1]) for d in described] == [c.family for c in spec.lake_columns()]


def test_synthetic_generator_writes_the_spec_table(other_warehouse: Path) -> None:
    spec = load_spec(OTHER)
    with duckdb.connect(str(other_warehouse), read_only=True) as con:
        assert check_warehouse(spec, con, "click") == []
        uid = con.execute('SELECT typeof("uid") FROM "events" LIMIT 1').fetchone()[0]
    assert uid == "VARCHAR"


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
    copy = altered_copy(warehouse, tmp_path, "ALTER TABLE samples DROP COLUMN item_price",
                        "ALTER TABLE samples DROP COLUMN hour", "ALTER TABLE samples ALTER COLUMN item_brand TYPE VARCHAR",
                        "UPDATE samples SET conversion = 2 WHERE sample_id IN (SELECT sample_id FROM samples LIMIT 3)")
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

    copy = altered_copy(
        warehouse, tmp_path, "ALTER TABLE samples ALTER COLUMN user_city TYPE VARCHAR",
        "UPDATE samples SET click = 7 WHERE sample_id IN (SELECT sample_id FROM samples WHERE ds = DATE '2026-03-01' LIMIT 1)")
    home = tmp_path / "home"
    with duckdb.connect(str(copy), read_only=True) as con:
        with pytest.raises(SpecError, match=r"'user_city' \(sparse user_city\) has type VARCHAR.*unknown label value\(s\) \[7\]"):
            extract(con, DAYS[0], tiny_config(lookback_days=1), Layout(home))
    assert not home.exists() or not any(home.rglob("*.parquet"))


def test_spec_error_fails_extract_first_with_the_column_named_and_nothing_written(tmp_path: Path,
                                                                                  other_warehouse: Path) -> None:
    from ecat_tasks.extract import extract

    copy = altered_copy(other_warehouse, tmp_path, 'ALTER TABLE "events" RENAME COLUMN "brand" TO "brand_id"')
    layout = Layout(tmp_path / "home")
    with duckdb.connect(str(copy), read_only=True) as con:
        with pytest.raises(SpecError, match="missing column 'brand'"):
            extract(con, DAYS[0], tiny_config(feature_spec=str(OTHER), lookback_days=1), layout)
        with pytest.raises(SpecError, match="unknown label 'conversion'"):
            extract(con, DAYS[0], tiny_config(feature_spec=str(OTHER), label="conversion", lookback_days=1), layout)
    assert not (tmp_path / "home").exists()


def test_other_spec_extracts_into_the_lake_contract(tmp_path: Path, other_warehouse: Path) -> None:
    """Other names in the warehouse, fixed role names in the lake; string ids become int64 ids."""
    import pyarrow.parquet as pq

    from ecat_tasks.extract import extract

    spec = load_spec(OTHER)
    layout = Layout(tmp_path)
    with duckdb.connect(str(other_warehouse), read_only=True) as con:
        extract(con, DAYS[0], tiny_config(feature_spec=str(OTHER), lookback_days=1), layout)
    table = pq.read_table(layout.staging("source", DAYS[0]))
    assert table.schema.equals(spec.arrow_schema())
    assert "device" not in table.column_names and "conversion" not in table.column_names
    assert table.column("user_id").null_count == 0 and table.num_rows > 0


def test_feature_spec_param_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from ecat_tasks.config import EcatConfig, check_conf
    from ecat_tasks.errors import ConfigError
    from ecat_tasks.spec import spec_of

    assert spec_of(tiny_config()).path == str(DEMO)  # the default
    assert spec_of(EcatConfig.from_mapping(env={"ECAT_FEATURE_SPEC": str(OTHER)})).table == "events"
    assert spec_of(EcatConfig.from_mapping({"feature_spec": "tests/specs/other_names.yaml"}, env={})).table == "events"
    with pytest.raises(ConfigError, match="feature_spec"):
        EcatConfig.from_mapping({"feature_spec": "/etc/passwd"}, env={})
    with pytest.raises(SpecError, match="does not exist"):
        check_conf(DAYS[0], tiny_config(feature_spec="specs/nope.yaml"))
    assert check_conf(DAYS[0], tiny_config(feature_spec=str(OTHER)))["feature_spec"]["table"] == "events"


def test_a_spec_error_fails_the_first_task_naming_the_column(tmp_path: Path, other_warehouse: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """check_conf, the run's first task, checks the warehouse against the spec: nothing is written."""
    from airflow.sdk.exceptions import AirflowFailException

    from ecat_tasks import airflow_edge

    copy = altered_copy(other_warehouse, tmp_path, 'ALTER TABLE "events" DROP COLUMN "price"')
    monkeypatch.setenv("ECAT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(airflow_edge, "warehouse_connection", lambda: duckdb.connect(str(copy), read_only=True))
    with pytest.raises(AirflowFailException, match=r"SpecError: .*missing column 'price' \(dense price\)"):
        airflow_edge.run_step("check_conf", DAYS[0], {"feature_spec": str(OTHER)})
    assert not (tmp_path / "home").exists()


def test_readme_example_spec_is_complete_and_is_the_tested_one() -> None:
    """The README's "Bring your own table" spec parses, and is the one the DAG test runs end to end."""
    import yaml

    section = (REPO_ROOT / "README.md").read_text().split("## Bring your own table", 1)[1].split("\n## ", 1)[0]
    example = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert parse_spec(example, str(OTHER)) == load_spec(OTHER)
    assert "python -m ecat_tasks.spec check" in section and '"feature_spec"' in section
