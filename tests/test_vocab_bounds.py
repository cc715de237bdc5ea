"""Bounded vocabularies: embedding tables stay within their configured size however many ids
stream in; unseen ids score through the shared rows; the mapping is deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from conftest import tiny_config
from ecat_tasks.config import REPO_ROOT
from ecat_tasks.models.data import ColumnStats, Encoders, Vocabulary
from ecat_tasks.models.networks import FeatureEmbedding
from ecat_tasks.spec import SPEC_ENV, ModelFeatures, SparseFeature
from ecat_tasks.storage import Layout

from test_models import _frame

DISTINCT_IDS = 10_000_000
DAYS = 7
CHUNK_ROWS = 500_000  # rows per streamed slice, as LakeStream hands them to ColumnStats


def _stream_day(features: ModelFeatures, columns: dict[str, np.ndarray]) -> ColumnStats:
    """One day's ids through ColumnStats, slice by slice (what fit_day's first pass does)."""
    stats = ColumnStats(features)
    table = pa.table(columns)
    for start in range(0, table.num_rows, CHUNK_ROWS):
        stats.add(table.slice(start, CHUNK_ROWS).to_pandas())
    return stats


def test_ten_million_ids_through_a_week_of_warm_starts_stay_within_each_table_size() -> None:
    """Each day brings ~1.4M never-seen ids (most seen once) plus 30,000 seen three times; the
    encoders go through a checkpoint round trip between days, as a warm start does."""
    features = ModelFeatures((
        SparseFeature("user_id", vocab_size=50_000, hash_buckets=512, min_count=2),
        SparseFeature("item_id", vocab_size=20_000, hash_buckets=0, min_count=1),
    ), ())
    rng = np.random.default_rng(0)
    enc = Encoders.from_stats(ColumnStats(features))  # day 0: empty, bounded by the spec
    per_day = DISTINCT_IDS // DAYS + 1
    streamed, first_returning = 0, None
    for day in range(DAYS):
        fresh = day * per_day + np.arange(per_day, dtype=np.int64) + 10**12  # never seen before
        returning = rng.choice(fresh[:200_000], 30_000, replace=False)  # seen three times today
        first_returning = returning if first_returning is None else first_returning
        ids = np.concatenate([fresh, returning, returning])
        columns = {"user_id": rng.permutation(ids), "item_id": rng.permutation(ids)}
        streamed += len(fresh)
        enc.grow(_stream_day(features, columns))
        enc = Encoders.from_state(enc.state(), features).rebound(features)  # the next day's warm start
        sizes = enc.vocab_sizes()
        tables = FeatureEmbedding(sizes, 2, 0).tables
        for f in features.sparse:
            assert sizes[f.name] <= f.max_rows, (day, f.name, sizes[f.name])
            assert tables[f.name].num_embeddings <= f.max_rows
        rows = enc.vocabs["user_id"].lookup(columns["user_id"])
        assert rows.min() >= 0 and rows.max() < sizes["user_id"]
    assert streamed >= DISTINCT_IDS
    user, item = enc.vocabs["user_id"], enc.vocabs["item_id"]
    assert len(user) == features.sparse[0].max_rows and len(item) == features.sparse[1].max_rows  # full, not beyond
    # an id seen once a day never got a row of its own; one seen three times did (while there was room)
    once = np.setdiff1d(np.arange(10**12, 10**12 + 200_000), first_returning)
    assert not user.known(once).any() and user.known(first_returning).all()
    # ids never seen at all map to the shared rows, never an error: a hash bucket, or row 0 without buckets
    unseen = np.arange(5, dtype=np.int64) - 10**15
    assert ((user.lookup(unseen) >= 1) & (user.lookup(unseen) <= 512)).all()
    assert (item.lookup(unseen) == 0).all()


def test_min_count_and_capacity_decide_admission() -> None:
    vocab = Vocabulary(capacity=3, hash_buckets=4, min_count=2)
    assert vocab.grow(np.array([7, 7, 8, 9, 9, 9, 10, 10, 11, 11])) == 3  # 8 is seen once; 4 qualify, room for 3
    known = dict(zip([7, 8, 9, 10, 11], vocab.known(np.array([7, 8, 9, 10, 11])).tolist()))
    assert known[9] and not known[8] and known[7] + known[10] + known[11] == 2  # the most frequent first
    assert len(vocab) == 1 + 4 + 3
    before = vocab.lookup(np.array([7, 9, 10, 11]))
    assert vocab.grow(np.array([12, 12, 12])) == 0  # full: the table does not grow
    assert (vocab.lookup(np.array([7, 9, 10, 11])) == before).all()
    assert 1 <= vocab.lookup(np.array([12]))[0] <= 4


def test_same_ids_give_the_same_rows_whatever_the_order_and_slicing() -> None:
    """Two runs over the same ids (rows shuffled, sliced differently) build the same vocabulary,
    so a re-run of a day maps every id, seen or not, to the same row."""
    features = ModelFeatures((SparseFeature("user_id", vocab_size=300, hash_buckets=16, min_count=3),), ())
    rng = np.random.default_rng(1)
    ids = rng.zipf(1.3, 20_000).astype(np.int64)  # a long tail: far more qualifying ids than room
    built = []
    for seed, chunk in ((0, 20_000), (1, 777)):
        stats = ColumnStats(features)
        shuffled = np.random.default_rng(seed).permutation(ids)
        for start in range(0, len(shuffled), chunk):
            stats.add(pd.DataFrame({"user_id": shuffled[start:start + chunk]}))
        built.append(Encoders.from_stats(stats).vocabs["user_id"])
    a, b = built
    assert len(a.ids) == 300 and np.array_equal(a.ids, b.ids)
    probe = np.concatenate([ids[:1000], -np.arange(1, 1000)])  # seen and never seen
    assert np.array_equal(a.lookup(probe), b.lookup(probe))
    # the buckets are fixed across processes and versions: a checkpoint's shared rows keep their meaning
    v = Vocabulary(np.array([5, 6]), capacity=10, hash_buckets=16)
    assert v.lookup(np.array([5, 6, 0, 1, -7, 2**62, 123456789])).tolist() == [17, 18, 16, 2, 1, 12, 10]


def test_warm_start_refuses_bounds_that_would_move_or_overflow_its_rows() -> None:
    vocab = Vocabulary(np.arange(10), capacity=10, hash_buckets=4)
    with pytest.raises(ValueError, match="hash buckets"):
        vocab.rebound(SparseFeature("user_id", vocab_size=10, hash_buckets=8))
    with pytest.raises(ValueError, match="cannot shrink"):
        vocab.rebound(SparseFeature("user_id", vocab_size=5, hash_buckets=4))
    bigger = vocab.rebound(SparseFeature("user_id", vocab_size=20, hash_buckets=4, min_count=3))
    assert np.array_equal(bigger.lookup(np.arange(12)), vocab.lookup(np.arange(12)))  # same rows, more room
    assert bigger.capacity == 20 and bigger.min_count == 3


def _bounded_spec(tmp_path: Path) -> Path:
    data = yaml.safe_load((REPO_ROOT / "specs" / "demo.yaml").read_text())
    data["user"].update(vocab_size=40, hash_buckets=8, min_count=2)
    data["item"].update(vocab_size=30)
    path = tmp_path / "bounded.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_warm_started_models_stay_bounded_and_score_unseen_ids_on_trained_rows(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from ecat_tasks.models.continual import Phase, Recipe, fit_day, load_model

    monkeypatch.setenv(SPEC_ENV, str(_bounded_spec(tmp_path)))
    cfg = tiny_config()
    layout = Layout(tmp_path / "home")
    arch = {"kind": "ranking", "embed_dim": cfg.embed_dim, "hidden": [8]}
    days = (("2026-03-01", 0), ("2026-03-02", 10_000), ("2026-03-03", 20_000))
    for day, offset in days:
        manifest = fit_day("m", day, cfg, layout, Recipe(arch, 0.01, [Phase(_frame(600, id_offset=offset), 1)]))
        model = load_model(layout.model("m", day))
        tables = model.model.embedding.tables
        assert tables["user_id"].num_embeddings <= 1 + 8 + 40 and tables["item_id"].num_embeddings <= 1 + 30
    assert tables["user_id"].num_embeddings == 1 + 8 + 40  # full after three days of 20 new ids each
    again = fit_day("m", days[-1][0], cfg, layout, Recipe(arch, 0.01, [Phase(_frame(600, id_offset=days[-1][1]), 1)]))
    assert again["checksum"] == manifest["checksum"]  # same ids, same seed: the same rows, bit for bit
    fresh = _frame(300, id_offset=10**9)  # ids no day has seen
    probs = model.score(fresh, "click")
    assert np.isfinite(probs).all() and probs.std() > 0
    users = model.encoders.vocabs["user_id"].lookup(fresh["user_id"].to_numpy())
    items = model.encoders.vocabs["item_id"].lookup(fresh["item_id"].to_numpy())
    assert ((users >= 1) & (users <= 8)).all() and (items == 0).all()
    # the shared rows were trained (the third day's new ids did not fit), never a silent zero
    day2 = load_model(layout.model("m", days[1][0])).model.embedding.tables
    for name, rows in (("user_id", np.unique(users)), ("item_id", np.array([0]))):
        now, before = tables[name].weight[rows], day2[name].weight[rows]
        assert now.abs().sum() > 0 and not np.allclose(now.detach().numpy(), before.detach().numpy()), name


def test_a_cold_student_takes_a_bounded_teachers_ids_rows_and_buckets(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The student's vocabulary admits the teacher's ids (min_count aside) within its bounds,
    and starts every row from the teacher's: own rows by id, the OOV row and the hash buckets."""
    import torch

    from ecat_tasks.models.continual import Phase, Recipe, fit_day, load_model

    monkeypatch.setenv(SPEC_ENV, str(_bounded_spec(tmp_path)))
    cfg = tiny_config()
    layout = Layout(tmp_path / "home")
    fit_day("teacher", "2026-03-01", cfg, layout,
            Recipe({"kind": "ranking", "embed_dim": cfg.embed_dim, "hidden": [8]}, 0.01,
                   [Phase(pd.concat([_frame(600), _frame(600, id_offset=50)], ignore_index=True), 1)]))
    teacher = load_model(layout.model("teacher", "2026-03-01"))
    user = teacher.encoders.vocabs["user_id"]
    assert len(user.ids) == 40 and user.hash_buckets == 8  # 40 distinct users qualified: the table is full
    few = _frame(600, id_offset=1000).iloc[:20]  # the student's own rows: ids the teacher never saw
    fit_day("student", "2026-03-01", cfg, layout,
            Recipe({"kind": "ranking", "embed_dim": cfg.embed_dim, "hidden": [4]}, 0.0, [Phase(few, 1)],
                   embedding_init=teacher))
    student = load_model(layout.model("student", "2026-03-01"))
    s_user = student.encoders.vocabs["user_id"]
    assert np.array_equal(np.sort(s_user.ids), np.sort(user.ids))  # full with the teacher's: no room for its own
    s_w, t_w = student.model.embedding.tables["user_id"].weight, teacher.model.embedding.tables["user_id"].weight
    assert s_w.shape[0] == 1 + 8 + 40
    assert torch.equal(s_w[torch.from_numpy(s_user.lookup(user.ids))], t_w[torch.from_numpy(user.lookup(user.ids))])
    assert torch.equal(s_w[:9], t_w[:9])  # OOV row and buckets: what the teacher learned from rare ids
