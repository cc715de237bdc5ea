"""The DAG as Airflow sees it: parse cost, wiring, retries, params, and two real days end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ecat_tasks.storage import Layout, read_manifest
from ecat_tasks.synthetic import seed_warehouse

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).parent / "airflow")
HEAVY = ("torch", "dgl", "great_expectations", "mlflow", "sklearn")
TRAINING = {"graph_select", "domain_reweight", "teacher_refresh", "student_distill", "train_comparison"}
TASKS = {"check_conf", "wait_for_data", "extract", "validate", "score_previous_day", "graph_select", "domain_reweight", "teacher_refresh", "student_distill",
         "plan_comparisons", "train_comparison", "guard", "evaluate", "promote"}


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("ecat_daily")


def test_parsing_imports_no_heavy_library() -> None:
    """Forked workers must not inherit a torch runtime, and parsing must stay fast."""
    code = (
        "import sys, runpy; runpy.run_path(sys.argv[1]); "
        f"print('heavy=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "dags" / "ecat_daily.py")],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "heavy=", f"heavy modules imported at parse time: {out.stdout}"


def test_wiring(dag) -> None:
    assert set(dag.task_ids) == TASKS
    up = {t.task_id: set(t.upstream_task_ids) for t in dag.tasks}
    assert up["check_conf"] == set()  # unknown conf keys fail here, in seconds, before anything else
    assert up["wait_for_data"] == {"check_conf"}
    assert up["extract"] == {"wait_for_data"}
    assert up["validate"] == {"extract"}
    assert up["score_previous_day"] == {"validate"}
    assert up["graph_select"] == {"score_previous_day"}
    assert up["domain_reweight"] == {"graph_select", "teacher_refresh"}  # reads today's frozen teacher
    assert up["teacher_refresh"] == {"score_previous_day"}
    assert up["student_distill"] == {"domain_reweight", "teacher_refresh"}
    assert up["plan_comparisons"] == {"score_previous_day"}
    assert up["train_comparison"] == {"domain_reweight", "teacher_refresh", "plan_comparisons"}
    assert up["guard"] == {"student_distill", "train_comparison"}  # every fallback trained before it decides
    assert up["evaluate"] == {"guard"}
    assert up["promote"] == {"evaluate"}
    assert dag.max_active_runs == 1


def test_next_day_scoring_runs_on_validated_data_before_anything_trains(dag) -> None:
    """Yesterday's models are scored on today's rows before today's training can start,
    and only once today's partition has passed validation."""
    scoring = dag.get_task("score_previous_day")
    assert "validate" in scoring.get_flat_relative_ids(upstream=True)
    for name in TRAINING | {"guard", "evaluate", "promote"}:
        assert "score_previous_day" in dag.get_task(name).get_flat_relative_ids(upstream=True), name


def test_operational_settings(dag) -> None:
    tasks = {t.task_id: t for t in dag.tasks}
    for t in dag.tasks:
        assert t.execution_timeout is not None, t.task_id
        assert t.on_failure_callback, t.task_id
    assert tasks["extract"].retries == 3 and tasks["extract"].retry_exponential_backoff
    assert tasks["validate"].retries == 0  # bad data does not get better by retrying
    assert tasks["check_conf"].retries == 0
    sensor = tasks["wait_for_data"]
    assert sensor.mode == "reschedule" and sensor.retries == 0 and sensor.timeout == 6 * 3600  # frees its slot
    for name in ("teacher_refresh", "student_distill", "train_comparison"):
        assert tasks[name].depends_on_past, name  # each day warm-starts from the day before
    # one task per comparison model, mapped over the day's plan, each retried alone
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    assert isinstance(tasks["train_comparison"], MappedOperator)
    assert tasks["train_comparison"].retries >= 1
    assert tasks["guard"].trigger_rule == "none_failed"  # runs when no comparison model is due
    assert tasks["train_comparison"].queue == tasks["teacher_refresh"].queue  # the train queue
    outlets = {a.name for t in dag.tasks for a in t.outlets}
    assert {"ecat.lake.target", "ecat.models.student", "ecat.reports.metrics"} <= outlets


def test_every_config_field_is_a_param(dag) -> None:
    from ecat_tasks.config import EcatConfig

    params = dag.params
    assert set(params.keys()) == set(EcatConfig.__dataclass_fields__)
    assert params["batch_size"] == EcatConfig().batch_size


def _airflow(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([AIRFLOW, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def serialized() -> None:
    out = _airflow("dags", "reserialize")
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize(
    "conf, field",
    [({"batch_size": 3}, "batch_size"), ({"label": "purchase"}, "label"), ({"device": "tpu"}, "device"),
     ({"baselines": ["xgboost"]}, "baselines"), ({"registered_model": "../../tmp/evil"}, "registered_model")],
)
def test_trigger_with_bad_conf_is_refused_naming_the_field(serialized: None, conf: dict, field: str) -> None:
    out = _airflow("dags", "trigger", "ecat_daily", "--conf", json.dumps(conf))
    assert out.returncode != 0
    assert f"Invalid input for param {field}" in out.stderr + out.stdout


TINY_CONF = dict(min_target_rows=50, min_source_rows=100, lookback_days=2, teacher_epochs=1, student_epochs=1,
                 reweight_epochs=1, batch_size=1024, teacher_hidden=[32, 16], student_hidden=[16, 8], walks_per_seed=2,
                 promote_min_lift=-1.0, promote_tolerance=1.0,
                 max_source_rows=10_000)  # below a day's ~24k source rows: soft selection samples its budget


@pytest.fixture(scope="module")
def two_days(tmp_path_factory: pytest.TempPathFactory) -> tuple[Layout, list[str]]:
    """`airflow dags test` for two consecutive days on a tiny warehouse, every task and model."""
    home = tmp_path_factory.mktemp("dag_home")
    days = ["2026-04-01", "2026-04-02"]
    seed_warehouse(home / "warehouse.duckdb", days[0], len(days), 25_000)
    _dags_test(home, days, TINY_CONF)
    return Layout(home), days


@pytest.fixture(scope="module")
def other_spec_day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Layout, str]:
    """One day of the DAG on another team's table, through its spec file alone
    (tests/specs/other_names.yaml: other names, no conversion label, no device feature).
    Kept cheap: 10,000 rows, one comparison model, no ablation."""
    from ecat_tasks.spec import load_spec
    from test_spec import GENERATED, OTHER

    home = tmp_path_factory.mktemp("other_spec_home")
    ds = "2026-04-01"
    seed_warehouse(home / "warehouse.duckdb", ds, 1, 10_000, spec=load_spec(OTHER), generated=GENERATED)
    conf = {**TINY_CONF, "feature_spec": str(OTHER.relative_to(ROOT)), "lookback_days": 1,
            "baselines": ["target_only"], "ablations": []}
    _dags_test(home, [ds], conf)
    return Layout(home), ds


def _dags_test(home: Path, days: list[str], conf: dict) -> None:
    """`airflow dags test` of ``days`` in order, in an Airflow home and metadata DB of their own."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("AIRFLOW_CONN_ECAT_WAREHOUSE", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")}
    # Its own Airflow metadata DB: asset URIs follow ECAT_HOME, and one DB holds one ECAT_HOME.
    env.update(ECAT_HOME=str(home), ECAT_WAREHOUSE=str(home / "warehouse.duckdb"), AIRFLOW_HOME=str(home / "airflow"))
    env = json.loads(subprocess.run(
        ["bash", "-c", f'source "{ROOT}/scripts/env.sh" && {sys.executable} -c "import os, json; print(json.dumps(dict(os.environ)))"'],
        env=env, capture_output=True, text=True, check=True).stdout)
    _migrated_db(Path(env["AIRFLOW_HOME"]), env)
    for ds in days:
        out = _airflow("dags", "test", "ecat_daily", ds, "--conf", json.dumps(conf), env=env)
        log = out.stdout + out.stderr
        (home / f"dags_test_{ds}.log").write_text(log)  # the whole log, for when the tail is not enough
        assert out.returncode == 0, f"full log: {home / f'dags_test_{ds}.log'}\n" + log[-4000:]
        assert "failed" not in _run_state(env, ds), log[-4000:]


_MIGRATED: list[Path] = []  # a migrated metadata DB, copied into each further Airflow home (migrate costs ~20 s)


def _migrated_db(airflow_home: Path, env: dict[str, str]) -> None:
    """A freshly migrated metadata DB in ``airflow_home``: migrated once per session, copied after."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    if _MIGRATED:
        shutil.copy(_MIGRATED[0], airflow_home / "airflow.db")
        return
    migrated = _airflow("db", "migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    template = airflow_home.parent.parent / "migrated-airflow.db"  # pytest's base temp dir
    shutil.copy(airflow_home / "airflow.db", template)
    _MIGRATED.append(template)


def _run_state(env: dict[str, str], ds: str) -> str:
    out = _airflow("dags", "list-runs", "ecat_daily", "-o", "json", env=env)
    listing = next(line for line in reversed(out.stdout.splitlines()) if line.startswith("[{"))
    runs = [r for r in json.loads(listing) if r["logical_date"].startswith(ds)]
    return runs[-1]["state"] if runs else "missing"


def test_two_days_end_to_end(two_days: tuple[Layout, list[str]]) -> None:
    layout, (d1, d2) = two_days
    for ds in (d1, d2):
        report = json.loads((layout.report(ds) / "metrics.json").read_text())
        assert {"ecat", "teacher", "target_only", "mixed", "mixed_scenario", "finetune", "teacher_finetune", "star",
                "ecat_no_graph", "ecat_no_weights", "ecat_no_kd", "ecat_fixed_kd", "ecat_teacher_init"} <= set(report["models"])
        for metrics in report["models"].values():
            assert 0.0 <= metrics["holdout"]["auc"] <= 1.0
        assert (layout.report(ds) / "report.html").exists()
    for model in ("teacher", "student"):
        first, second = read_manifest(layout.model(model, d1)), read_manifest(layout.model(model, d2))
        assert first["cold_start"] and not second["cold_start"]
        assert second["warm_start_ds"] == d1
    # day 2's run scored day 1's models on day 2's rows (next-day); day 2 waits for day 3
    first, second = (json.loads((layout.report(ds) / "metrics.json").read_text()) for ds in (d1, d2))
    assert first["next_day"]["ds"] == d2 and set(first["next_day"]["lift"]) == set(first["models"]) - {"ecat"}
    for metrics in first["models"].values():
        assert 0.0 <= metrics["next_day"]["auc"] <= 1.0
    assert set(second["models"]["ecat"]) == {"validation", "holdout"} and "next_day" not in second
    assert first["promotion"]["promoted"] and first["next_day"]["champion_check"]["decision"] == "kept"


def test_another_teams_table_runs_end_to_end_through_its_spec(other_spec_day: tuple[Layout, str]) -> None:
    from ecat_tasks.models.continual import load_model
    from ecat_tasks.spec import load_spec
    from test_spec import OTHER

    layout, ds = other_spec_day
    spec = load_spec(OTHER)
    report = json.loads((layout.report(ds) / "metrics.json").read_text())
    assert {"ecat", "teacher", "target_only"} <= set(report["models"])
    for metrics in report["models"].values():
        assert 0.0 <= metrics["holdout"]["auc"] <= 1.0
    assert read_manifest(layout.lake("target", ds))["columns"] == spec.lake_names  # no conversion, no device
    for name in ("teacher", "student"):
        loaded = load_model(layout.model(name, ds))
        assert list(loaded.model.embedding.tables) == spec.sparse_names
        assert loaded.encoders.spec.dense_names == ["price", "activity", "popularity"]
