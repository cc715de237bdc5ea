"""Dense normalisation on real-data shapes: a column constant on the first day must not saturate later days."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from conftest import tiny_config
from ecat_tasks.domain_reweight import domain_reweight
from ecat_tasks.extract import extract
from ecat_tasks.graph_select import graph_select
from ecat_tasks.models.data import DENSE_CLIP, DenseHistogram, Encoders, dense_psi
from ecat_tasks.storage import Layout, read_manifest
from ecat_tasks.student_distill import student_distill
from ecat_tasks.synthetic import seed_warehouse
from ecat_tasks.teacher_refresh import teacher_refresh
from ecat_tasks.train_baselines import train_baselines
from ecat_tasks.validate import ValidationFailed, validate

DAYS = ("2026-05-01", "2026-05-02", "2026-05-03")


@pytest.fixture(scope="module")
def constant_first_day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Layout, object]:
    """Three days whose ``user_activity`` is 0 for everyone on day 1 and spread out afterwards.

    With the old normalisation (std + 1e-6 fixed on day 1) every model predicted one constant
    from day 2 on (AUC exactly 0.5; now the health check refuses such a model).
    """
    root = tmp_path_factory.mktemp("constant_first_day")
    warehouse = root / "warehouse.duckdb"
    seed_warehouse(warehouse, DAYS[0], len(DAYS), 20_000)
    with duckdb.connect(str(warehouse)) as con:
        # day 1: 0 for everyone (a count nobody has yet); later: spread out, and it tells clicks apart
        con.execute("UPDATE samples SET user_activity = CASE WHEN ds = CAST(? AS DATE) THEN 0 "
                    "ELSE (1 + 2 * click) * (1 + hash(sample_id) % 1000 / 250.0) END", [DAYS[0]])
    layout = Layout(root / "home")
    cfg = tiny_config(baselines=["target_only", "mixed", "finetune", "star"], student_epochs=3)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for ds in DAYS:
            extract(con, ds, cfg, layout)
    drift = {}
    for ds in DAYS:
        if ds == DAYS[1]:  # the spread-out day drifts far from day 1's teacher: validate stops it by default
            with pytest.raises(ValidationFailed, match=r"dense drift\(user_activity\): PSI [0-9.]+ > drift_psi_fail 3.0"):
                validate(ds, cfg, layout)
        drift[ds] = validate(ds, cfg.replace(drift_psi_fail=0.0), layout)["drift_psi"]  # on-call's override
        graph_select(ds, cfg, layout)
        teacher_refresh(ds, cfg, layout)
        domain_reweight(ds, cfg, layout)
        student_distill(ds, cfg, layout)
        train_baselines(ds, cfg, layout)
    return layout, cfg, drift


def test_validate_reports_drift_against_the_warm_start_teacher(constant_first_day):
    _, cfg, drift = constant_first_day
    assert drift[DAYS[0]] == {}  # no earlier teacher: nothing to compare with
    assert drift[DAYS[1]]["user_activity"] > cfg.drift_psi_fail
    assert drift[DAYS[1]]["item_price"] < cfg.drift_psi_warn  # the unchanged columns do not drift
    assert drift[DAYS[2]]["user_activity"] < drift[DAYS[1]]["user_activity"]  # the EMA caught up


def test_every_model_learns_after_a_constant_first_day(constant_first_day):
    layout, cfg, _ = constant_first_day
    aucs = {}
    for ds in DAYS[1:]:
        for name in ("teacher", "student", *cfg.baselines):
            aucs[name, ds] = read_manifest(layout.model(name, ds))["holdout_auc"]
    assert all(a > 0.6 for a in aucs.values()), aucs
    teacher = read_manifest(layout.model("teacher", DAYS[2]))["dense_profile"]["user_activity"]
    assert teacher["std"] > 0.1  # the statistics followed the data (EMA), not frozen at day 1's zero spread


def test_standardised_values_are_floored_and_clipped():
    day1 = pd.DataFrame({"item_price": np.linspace(1, 100, 200), "user_activity": np.zeros(200),
                         "item_popularity": np.linspace(0, 1, 200)})
    enc = Encoders({}, *_stats(day1))
    z = enc.standardise(day1.assign(user_activity=np.linspace(0, 50, 200)))
    assert np.isfinite(z).all() and np.abs(z).max() <= DENSE_CLIP
    before = enc.dense_std.copy()
    enc.refresh(day1.assign(user_activity=np.linspace(0, 50, 200)), momentum=0.3)
    assert enc.dense_std[1] > before[1] and np.isclose(enc.dense_std[0], before[0])
    enc.refresh(day1, momentum=0.0)  # momentum 0 freezes the statistics
    assert enc.dense_std[1] > before[1]


def test_psi_is_small_for_the_same_data_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"item_price": rng.lognormal(3, 0.7, 5000), "user_activity": rng.lognormal(1.5, 0.8, 5000),
                          "item_popularity": rng.beta(2, 5, 5000)})
    enc = Encoders({}, *_stats(frame))
    profile = enc.dense_profile(frame)
    same = dense_psi(frame.sample(frac=1.0, replace=True, random_state=1), profile)
    assert max(same.values()) < 0.05
    shifted = dense_psi(frame.assign(item_price=frame["item_price"] * 5), profile)
    assert shifted["item_price"] > 1.0 and shifted["user_activity"] < 0.05


def test_psi_of_a_day_read_in_chunks_is_the_psi_of_the_whole_day():
    """validate bins each chunk and adds the counts: the PSI is the one of the whole day."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"item_price": rng.lognormal(3, 0.7, 3000), "user_activity": rng.lognormal(1.5, 0.8, 3000)})
    profile = Encoders({}, *_stats(frame.assign(item_popularity=0.5))).dense_profile(frame.assign(item_popularity=0.5))
    shifted = frame.assign(item_price=frame["item_price"] * 3)
    hist = DenseHistogram(profile)
    for lo in range(0, len(shifted), 700):
        hist.add(shifted.iloc[lo:lo + 700])
    assert hist.psi() == dense_psi(shifted, profile)  # item_popularity absent: skipped in both
    assert list(hist.psi()) == ["item_price", "user_activity"]


def _stats(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    dense = np.log1p(frame[["item_price", "user_activity", "item_popularity"]].to_numpy(np.float64))
    return dense.mean(0), dense.std(0)
