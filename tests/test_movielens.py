"""The MovieLens-100K benchmark adapter (bench/movielens.py): its own table, read through specs/movielens.yaml.

Needs the recbole wheel in bench/.cache/ or a reachable package registry; skipped (with the
reason) only when the wheel is neither cached nor downloadable.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from bench import movielens as ml
from ecat_tasks.spec import check_warehouse


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
        frame = con.execute("SELECT * FROM ratings").df()
        described = con.execute("DESCRIBE ratings").fetchall()
    return path, stats, frame, described


def _target_items(genre: str) -> set[int]:
    _, _, items = ml.load_movielens(ml.DEFAULT_CACHE_DIR)
    mask = items["class"].str.split().map(lambda gs: genre in gs)
    return set(items.loc[mask, "item_id"].astype(int))


def test_table_follows_its_spec(warehouse):
    path, _, frame, described = warehouse
    spec = ml.movielens_spec()
    with duckdb.connect() as con:
        con.execute(spec.ddl())
        expected = con.execute("DESCRIBE ratings").fetchall()
    assert [(c[0], c[1], c[2]) for c in described] == [(c[0], c[1], c[2]) for c in expected]
    assert list(frame.columns) == [c[0] for c in expected]
    assert frame.notna().all().all()
    with duckdb.connect(str(path), read_only=True) as con:
        assert check_warehouse(spec, con, "click") == []
    # MovieLens's own notions, not the demo's columns
    assert {"occupation", "zip_prefix", "release_year", "genres", "movie_id"} <= set(frame.columns)
    assert not {"user_city", "item_brand", "item_price", "device"} & set(frame.columns)


def test_rows_ids_and_labels(warehouse):
    _, stats, frame, _ = warehouse
    assert len(frame) == stats["rows"] == 100_000
    assert frame["rating_id"].is_unique
    assert (frame["rating_id"] == "ml-" + frame["user_id"].astype(str) + "-" + frame["movie_id"].astype(str)).all()
    for label in ("liked", "loved"):
        assert set(frame[label].unique()) <= {0, 1}
    assert (frame["loved"] <= frame["liked"]).all()  # rating 5 implies rating >= 4
    assert frame["hour_of_day"].between(0, 23).all()
    assert frame["movie_popularity"].between(0, 1).all() and frame["movie_popularity"].max() == 1.0
    assert (frame["movie_age"] >= 0).all() and (frame["user_ratings"] >= 1).all()
    assert set(frame["gender"]) == {"M", "F"} and frame["zip_prefix"].str.len().max() == 3
    assert frame["occupation"].nunique() == 21 and frame["release_year"].between(1920, 1998).all()
    assert 0.4 < stats["click_rate"] < 0.7  # ml-100k: ~55% of ratings are >= 4


def test_days_consecutive_and_balanced(warehouse):
    _, stats, frame, _ = warehouse
    days = np.sort(frame["day"].unique())
    assert len(days) == stats["days"] == 14
    assert days[0] == np.datetime64("2026-01-01")
    assert (np.diff(days) == np.timedelta64(1, "D")).all()
    sizes = frame.groupby("day").size()
    assert sizes.max() / sizes.min() < 1.5
    assert (frame["rated_at"].dt.normalize() == frame["day"]).all()
    # the rows are in time order and rated_at keeps it within and across days
    assert frame["rated_at"].is_monotonic_increasing and frame["rated_at"].is_unique
    # hour_of_day stays the original rating's hour (UTC), not rated_at's
    inter, _, _ = ml.load_movielens(ml.DEFAULT_CACHE_DIR)
    raw = inter.rename(columns={"item_id": "movie_id"}).assign(hour=lambda d: (d["timestamp"] % 86_400) // 3600)
    joined = frame[["user_id", "movie_id", "hour_of_day"]].merge(raw[["user_id", "movie_id", "hour"]],
                                                                 on=["user_id", "movie_id"], validate="one_to_one")
    assert len(joined) == len(frame) and (joined["hour_of_day"] == joined["hour"]).all()


def test_target_is_the_genre(warehouse):
    _, stats, frame, _ = warehouse
    target = frame[frame["genre_group"] == ml.TARGET_SCENARIO]
    noir = _target_items("Film-Noir")
    assert len(target) == stats["target_rows"] > 1_000
    assert set(target["movie_id"]) <= noir
    assert not frame.loc[frame["genre_group"] != ml.TARGET_SCENARIO, "movie_id"].isin(noir).any()
    assert sum(stats["target_rows_per_day"].values()) == len(target)
    assert min(stats["target_rows_per_day"].values()) > 0
    assert frame["genre_group"].nunique() > 5  # many source scenarios
    assert {"drama", "comedy"} <= set(frame["genre_group"])


def test_reseeding_replaces_rows_and_other_genre(warehouse):
    path, _, _, _ = warehouse
    stats = ml.seed_movielens_warehouse(path, target_genre="western", n_days=7, start_ds="2026-02-01")
    with duckdb.connect(str(path), read_only=True) as con:
        rows, days, first = con.execute("SELECT count(*), count(DISTINCT day), min(day) FROM ratings").fetchone()
        target_items = {r[0] for r in con.execute(
            "SELECT DISTINCT movie_id FROM ratings WHERE genre_group = ?", [ml.TARGET_SCENARIO]).fetchall()}
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
        built.sort_values("rating_id").reset_index(drop=True),
        frame.sort_values("rating_id").reset_index(drop=True),
        check_dtype=False,
    )


def test_pipeline_reads_it_through_its_spec_alone(warehouse, tmp_path):
    """extract -> validate -> graph_select -> teacher_refresh on MovieLens's own table, by specs/movielens.yaml."""
    from ecat_tasks.config import EcatConfig
    from ecat_tasks.extract import extract
    from ecat_tasks.graph_select import graph_select
    from ecat_tasks.models.continual import load_model
    from ecat_tasks.storage import Layout, read_manifest
    from ecat_tasks.teacher_refresh import teacher_refresh
    from ecat_tasks.validate import validate

    path, _, _, _ = warehouse
    ml.seed_movielens_warehouse(path)  # the module's other test re-seeds it with another genre
    cfg = EcatConfig.from_mapping({"feature_spec": "specs/movielens.yaml", "min_target_rows": 50, "min_source_rows": 100,
                                   "label_rate_max": 0.8, "lookback_days": 1, "teacher_epochs": 1, "teacher_batch_size": 256,
                                   "teacher_hidden": [16, 8], "walks_per_seed": 2}, env={})
    layout, ds = Layout(tmp_path), "2026-01-03"
    with duckdb.connect(str(path), read_only=True) as con:
        extract(con, ds, cfg, layout)
    validate(ds, cfg, layout)
    graph_select(ds, cfg, layout)
    teacher_refresh(ds, cfg, layout)
    spec = ml.movielens_spec()
    assert read_manifest(layout.lake("target", ds))["columns"] == spec.lake_names
    teacher = load_model(layout.model("teacher", ds))
    assert list(teacher.model.embedding.tables) == spec.sparse_names
    assert {"occupation", "zip_prefix", "release_year", "genres"} <= set(teacher.model.embedding.tables)
