"""The MovieLens-100K benchmark adapter (bench/movielens.py) against the warehouse contract.

Needs the recbole wheel in bench/.cache/ or a reachable package registry; skipped (with the
reason) only when the wheel is neither cached nor downloadable.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from bench import movielens as ml
from ecat_tasks.synthetic import SAMPLES_DDL


@pytest.fixture(scope="module")
def wheel():
    try:
        return ml.ensure_wheel(ml.DEFAULT_CACHE_DIR)
    except ml.MovieLensUnavailable as exc:
        pytest.skip(f"MovieLens-100K unavailable: recbole wheel not cached and pip download failed ({exc})")


@pytest.fixture(scope="module")
def warehouse(wheel, tmp_path_factory):
    path = tmp_path_factory.mktemp("ml") / "warehouse.duckdb"
    stats = ml.seed_movielens_warehouse(path)
    with duckdb.connect(str(path), read_only=True) as con:
        frame = con.execute("SELECT * FROM samples").df()
        described = con.execute("DESCRIBE samples").fetchall()
    return path, stats, frame, described


def _target_items(genre: str) -> set[int]:
    _, _, items = ml.load_movielens(ml.DEFAULT_CACHE_DIR)
    mask = items["class"].str.split().map(lambda gs: genre in gs)
    return set(items.loc[mask, "item_id"].astype(int))


def test_table_matches_samples_ddl(warehouse):
    _, _, frame, described = warehouse
    with duckdb.connect() as con:
        con.execute(SAMPLES_DDL)
        expected = con.execute("DESCRIBE samples").fetchall()
    assert [(c[0], c[1], c[2]) for c in described] == [(c[0], c[1], c[2]) for c in expected]
    assert list(frame.columns) == [c[0] for c in expected]
    assert frame.notna().all().all()


def test_rows_ids_and_labels(warehouse):
    _, stats, frame, _ = warehouse
    assert len(frame) == stats["rows"] == 100_000
    assert frame["sample_id"].is_unique
    assert (frame["sample_id"] == "ml-" + frame["user_id"].astype(str) + "-" + frame["item_id"].astype(str)).all()
    for label in ("click", "conversion"):
        assert set(frame[label].unique()) <= {0, 1}
    assert (frame["conversion"] <= frame["click"]).all()  # rating 5 implies rating >= 4
    assert (frame["device"] == 0).all()
    assert frame["hour"].between(0, 23).all()
    assert frame["item_popularity"].between(0, 1).all() and frame["item_popularity"].max() == 1.0
    assert (frame["item_price"] >= 0).all() and (frame["user_activity"] >= 1).all()
    assert frame["category_id"].min() >= 100
    assert 0.4 < stats["click_rate"] < 0.7  # ml-100k: ~55% of ratings are >= 4


def test_days_consecutive_and_balanced(warehouse):
    _, stats, frame, _ = warehouse
    days = np.sort(frame["ds"].unique())
    assert len(days) == stats["days"] == 14
    assert days[0] == np.datetime64("2026-01-01")
    assert (np.diff(days) == np.timedelta64(1, "D")).all()
    sizes = frame.groupby("ds").size()
    assert sizes.max() / sizes.min() < 1.5
    assert (frame["event_ts"].dt.normalize() == frame["ds"]).all()
    assert (frame["event_ts"].dt.hour == frame["hour"]).all()


def test_target_is_the_genre(warehouse):
    _, stats, frame, _ = warehouse
    target = frame[frame["scenario"] == ml.TARGET_SCENARIO]
    noir = _target_items("Film-Noir")
    assert len(target) == stats["target_rows"] > 1_000
    assert set(target["item_id"]) <= noir
    assert not frame.loc[frame["scenario"] != ml.TARGET_SCENARIO, "item_id"].isin(noir).any()
    assert sum(stats["target_rows_per_day"].values()) == len(target)
    assert min(stats["target_rows_per_day"].values()) > 0
    assert frame["scenario"].nunique() > 5  # many source scenarios
    assert {"drama", "comedy"} <= set(frame["scenario"])


def test_reseeding_replaces_rows_and_other_genre(warehouse):
    path, _, _, _ = warehouse
    stats = ml.seed_movielens_warehouse(path, target_genre="western", n_days=7, start_ds="2026-02-01")
    with duckdb.connect(str(path), read_only=True) as con:
        rows, days, first = con.execute("SELECT count(*), count(DISTINCT ds), min(ds) FROM samples").fetchone()
        target_items = {r[0] for r in con.execute(
            "SELECT DISTINCT item_id FROM samples WHERE scenario = ?", [ml.TARGET_SCENARIO]).fetchall()}
    assert (rows, days, str(first)) == (100_000, 7, "2026-02-01")
    assert stats["target_genre"] == "Western"
    assert target_items <= _target_items("Western")


def test_unknown_genre_is_refused(wheel):
    with pytest.raises(ValueError, match="unknown target genre"):
        ml.build_movielens_samples(target_genre="Noir")


def test_frame_matches_warehouse(warehouse):
    _, _, frame, _ = warehouse
    built = ml.build_movielens_samples()
    pd.testing.assert_frame_equal(
        built.sort_values("sample_id").reset_index(drop=True),
        frame.sort_values("sample_id").reset_index(drop=True),
        check_dtype=False,
    )
