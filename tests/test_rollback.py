"""Rollback through the step functions, on a real MLflow SQLite registry.

Day 1's student is promoted (the first champion). Day 2's student is made bad on purpose
(cold start, no teacher, a learning rate too small to learn anything) and promoted by a
lenient gate, replacing day 1's version. Day 3's run starts by scoring day 2's models on
day 3's rows: the champion trails the version it replaced, so the alias moves back, with one
``ECAT ROLLBACK`` line, the decision in day 2's report and tags on the rolled-back version.
"""

from __future__ import annotations

import json
import logging
import shutil

import duckdb
import pytest

from conftest import DAYS, ROWS_PER_DAY, tiny_config
from ecat_tasks.evaluate import evaluate
from ecat_tasks.extract import extract
from ecat_tasks.promote import ALIAS, promote
from ecat_tasks.score_previous_day import score_previous_day
from ecat_tasks.storage import Layout, shift_ds
from ecat_tasks.synthetic import seed_warehouse
from ecat_tasks.tracking import client
from ecat_tasks.validate import validate
from test_evaluate_promote import train_day

DAY3 = shift_ds(DAYS[-1], 1)


@pytest.fixture()
def three_days(layout: Layout, tmp_path) -> Layout:
    """The shared two-day lake plus a third day from the same synthetic world."""
    wh = tmp_path / "wh3.duckdb"
    seed_warehouse(wh, DAYS[0], 3, ROWS_PER_DAY)
    cfg = tiny_config()
    with duckdb.connect(str(wh), read_only=True) as con:
        extract(con, DAY3, cfg, layout)
    validate(DAY3, cfg, layout)
    return layout


def test_a_champion_that_trails_the_next_day_is_rolled_back(three_days: Layout, caplog) -> None:
    layout = three_days
    d1, d2 = DAYS
    # top_k selection: on these tiny days its day-1 student is the one the crippled day-2 student trails by > 0.005
    cfg = tiny_config(promote_min_lift=-1.0, promote_tolerance=1.0, graph_selection="top_k")
    mc = client(cfg, layout.root)

    train_day(d1, cfg, layout)
    evaluate(d1, cfg, layout)
    first = promote(d1, cfg, layout)
    assert first["promoted"] and first["previous_champion"] is None

    assert score_previous_day(d2, cfg, layout)["champion_check"] == "kept"
    gone = layout.model("student", d1)  # day 2's student starts cold, from nothing
    gone.unlink() if gone.is_symlink() else shutil.rmtree(gone)
    bad = cfg.replace(student_lr=1e-6, kd_enabled=False, student_init_from_teacher=False)
    train_day(d2, bad, layout)
    evaluate(d2, bad, layout)
    second = promote(d2, bad, layout)
    assert second["promoted"] and second["previous_champion"] == first["version"]
    assert mc.get_model_version(cfg.registered_model, second["version"]).tags["replaced_version"] == first["version"]

    caplog.set_level(logging.INFO, logger="ecat_tasks")
    strict = cfg.replace(promote_tolerance=0.005)
    m = score_previous_day(DAY3, strict, layout)
    assert m["champion_check"] == "rolled_back"
    assert str(mc.get_model_version_by_alias(cfg.registered_model, ALIAS).version) == first["version"]
    check = json.loads((layout.report(d2) / "metrics.json").read_text())["next_day"]["champion_check"]
    assert check["champion_auc"] < check["replaced_auc"] - 0.005
    assert check["version"] == second["version"] and check["replaced_version"] == first["version"]
    lines = [r.getMessage() for r in caplog.records if "ECAT ROLLBACK" in r.getMessage()]
    assert len(lines) == 1 and f"version {second['version']} (promoted {d2}) -> version {first['version']}" in lines[0]
    tags = mc.get_model_version(cfg.registered_model, second["version"]).tags
    assert tags["rolled_back_on"] == DAY3
    assert "ROLLED BACK" in (layout.report(d2) / "report.html").read_text()

    # a rerun of day 3's scoring reports the same rollback and leaves the alias alone
    caplog.clear()
    assert score_previous_day(DAY3, strict, layout)["champion_check"] == "rolled_back"
    assert str(mc.get_model_version_by_alias(cfg.registered_model, ALIAS).version) == first["version"]
    assert not [r for r in caplog.records if "ECAT ROLLBACK" in r.getMessage()]
